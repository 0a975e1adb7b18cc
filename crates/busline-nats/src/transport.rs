//! The transport: a NATS connection, an exporter and the importers.
//!
//! [`NatsTransport::connect`] wires a [`Bus`] to a server:
//!
//! * **export** — one lossless subscription on the bus (named `nats-export`,
//!   capacity = [`NatsConfig::buffer`]) takes every local event whose topic
//!   matches an export pattern and publishes it on the subject of the same
//!   name, on a connection of its own (below). When the server is away its
//!   write buffer (on JetStream, its window of unacknowledged publishes)
//!   and then this queue fill up, and local publishers wait: backpressure,
//!   not loss.
//! * **import** — every NATS message on an import pattern is published on the
//!   local bus with its envelope metadata (id, time, source, correlation,
//!   causation, headers) intact, plus the header [`IMPORTED`].
//!
//! ## No echo
//!
//! An imported event carries the [`IMPORTED`] header and the exporter skips
//! events that carry it, so a process that both imports and exports `a.>`
//! does not send its imports back (counted as `echo_skipped`); and the
//! importer skips messages whose id says this very bus published them
//! ([`Bus::node`]): they come back from the server when a process imports
//! what it exports, and its subscribers had them already (counted as
//! `import_own`, acknowledged on JetStream). So a process can export and
//! import the same subjects and see every process's events once. Topics under
//! `$sys.` and `_INBOX.` are only exported by patterns that name them
//! explicitly (replies, below, aside).
//!
//! ## The exporter's own connection
//!
//! With exports the transport opens a second connection, named
//! `<name> (exports)`, with the same server, credentials and TLS settings;
//! the exporter writes its events there as protocol text, a batch at a
//! time, instead of handing each to the `async-nats` client (see the crate
//! docs, *Throughput*). It only publishes: JetStream acks come back on an
//! inbox the client subscribed to, and a publish lost with a broken
//! connection is found by its overdue ack and sent again (by the client,
//! de-duplicated by the server). A server's `-ERR` on it (a publish the
//! account may not make) is logged and published as `$sys.nats.error`.
//!
//! It reconnects by itself to the configured server (not to servers a
//! cluster announces, which the client may also use). While it is down the
//! exporter keeps what it could not write and takes no more events until
//! it is back and written (so local publishers wait); a flush meanwhile
//! fails with [`NatsError::FlushTimedOut`] after 30 seconds. Its state is
//! not part of [`NatsTransport::status`] (that is the client's): its losses
//! and reconnects are logged, and show in flush results.
//! [`NatsTransport::flush`] and `shutdown` confirm with a round trip on
//! this connection, and report [`NatsError::Reconnected`] when it was
//! re-established under unconfirmed events.
//!
//! Ordering across the two connections is kept where it matters, as long
//! as both reach the same server (one server address, not a name that
//! resolves to several servers of a cluster): a request's reply inbox is
//! subscribed, and confirmed by the server, before the request is written
//! (once per bus: the first request subscribes `_INBOX.<bus>.>`), and so is
//! the JetStream ack inbox before the first publish. Replies to imported
//! requests go by the client when there are no exports.
//!
//! ## Request/reply across processes
//!
//! A [`Bus::request`] on an exported topic goes out with its reply-to inbox
//! (`_INBOX.<bus>.<n>`); before the first such request leaves, the
//! transport subscribes to `_INBOX.<bus>.>` on NATS. A process that imports
//! the request notes its inbox, and when a module there answers with
//! [`Bus::reply`], the reply is exported on that inbox subject by core NATS
//! (also in JetStream mode: a reply is worth nothing once its requester has
//! given up). Back in the requesting process it goes straight to the
//! waiting requester, with its id, source, headers, causation (the request)
//! and correlation intact, plus [`IMPORTED`]; it counts as `imported`. A
//! transport with imports has a second lossless subscription for this,
//! `nats-export-replies` on `_INBOX.>`, that takes only replies to imported
//! requests (its exporter runs even without exports). As the exporter
//! subscribes to every exported topic, a request on one never fails with
//! `NoResponders` locally: without an answer anywhere it times out.
//!
//! ## Status
//!
//! [`NatsTransport::status`] is a `watch` of the connection state that always
//! works; with [`NatsConfig::status_events`] each change is also published on
//! the bus as `$sys.nats.<connected|disconnected|error|slow_consumer|lame_duck|closed>`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busline::{Bus, Envelope, EventId, Message, Pattern, RecvError, Subscription, WeakBus};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::codec::{self, Codec, Wire};
use crate::config::{Auth, Mode, NatsConfig};
use crate::direct::{self, Direct, DirectConfig};
use crate::error::{connect_error, NatsError};
use crate::jetstream;

/// Header put on every imported event; the exporter skips events carrying it.
pub const IMPORTED: &str = "busline-nats-imported";

/// Connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnState {
    /// Connected to the server.
    Connected,
    /// Lost the connection; reconnecting (outgoing events wait in the buffer).
    Disconnected,
    /// Shut down.
    Closed,
}

/// The transport's current status, as seen by [`NatsTransport::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Connection state.
    pub state: ConnState,
    /// The configured server address.
    pub server: String,
    /// Times the connection was re-established.
    pub reconnects: u64,
    /// The last error the server or client reported, if any.
    pub last_error: Option<String>,
}

/// A status change, as handed to the [`NatsConfig::status_events`] mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatusEvent {
    /// (Re)connected.
    Connected {
        /// The server address.
        server: String,
    },
    /// Connection lost.
    Disconnected {
        /// The server address.
        server: String,
    },
    /// An error reported by the server or the client.
    Error {
        /// The server address.
        server: String,
        /// The message.
        message: String,
    },
    /// The server dropped messages for a slow subscription (core NATS).
    SlowConsumer {
        /// The server address.
        server: String,
    },
    /// The server is shutting down gracefully.
    LameDuck {
        /// The server address.
        server: String,
    },
    /// The connection is closed for good.
    Closed {
        /// The server address.
        server: String,
    },
}

impl StatusEvent {
    /// The local topic the event is published on: `$sys.nats.<kind>`.
    pub fn topic(&self) -> &'static str {
        match self {
            StatusEvent::Connected { .. } => "$sys.nats.connected",
            StatusEvent::Disconnected { .. } => "$sys.nats.disconnected",
            StatusEvent::Error { .. } => "$sys.nats.error",
            StatusEvent::SlowConsumer { .. } => "$sys.nats.slow_consumer",
            StatusEvent::LameDuck { .. } => "$sys.nats.lame_duck",
            StatusEvent::Closed { .. } => "$sys.nats.closed",
        }
    }
}

/// Counters of the transport.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TransportStats {
    /// Local events handed to NATS.
    pub exported: u64,
    /// Of those, acknowledged by JetStream. On core NATS there is no ack:
    /// counted once the client took the message into its outgoing buffer,
    /// which a connection loss can still lose (at-most-once).
    /// [`NatsTransport::flush`] confirms the server processed what was sent.
    pub acked: u64,
    /// Publishes the server reported as duplicates (a retry of an event it already had).
    pub publish_duplicates: u64,
    /// Publishes re-sent after an ack timed out or failed.
    pub retried: u64,
    /// Local events not sent: too large for the server or not encodable (each logged).
    pub rejected: u64,
    /// Imported events skipped by the exporter (no echo).
    pub echo_skipped: u64,
    /// NATS messages delivered to the local bus.
    pub imported: u64,
    /// Redelivered messages dropped because this import already delivered them.
    pub import_duplicates: u64,
    /// Messages this bus had published itself, back from the server on an
    /// import (a process exporting and importing the same subjects), skipped:
    /// local subscribers had them already.
    pub import_own: u64,
    /// Messages sent to the dead-letter subject.
    pub dead_lettered: u64,
    /// Messages on their last delivery whose dead letter could not be
    /// stored after repeated attempts: lost (each logged as an error).
    pub dead_letters_lost: u64,
    /// Events the exporter was handed and gave up on at shutdown: still
    /// unacknowledged when [`NatsConfig::shutdown_timeout`] passed, or
    /// published on an exported topic while the exporter was closing its
    /// queue (each shutdown that abandons any logs a warning).
    pub abandoned: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub exported: AtomicU64,
    pub acked: AtomicU64,
    pub publish_duplicates: AtomicU64,
    pub retried: AtomicU64,
    pub rejected: AtomicU64,
    pub echo_skipped: AtomicU64,
    pub imported: AtomicU64,
    pub import_duplicates: AtomicU64,
    pub import_own: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub dead_letters_lost: AtomicU64,
    pub abandoned: AtomicU64,
    /// Core publishes handed to the client since the last confirmed flush,
    /// and the client's connection count before the first of them: a
    /// confirmation over another connection cannot vouch for them.
    pub core_unconfirmed: AtomicU64,
    pub core_connects_at: AtomicU64,
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What the exporter and importers share.
pub(crate) struct Ctx<T> {
    pub client: async_nats::Client,
    pub server: String,
    pub codec: Codec,
    pub counters: Arc<Counters>,
    pub dead_prefix: String,
    pub bus: WeakBus<T>,
    pub stop: watch::Receiver<bool>,
    pub status: watch::Receiver<Status>,
    pub inboxes: Arc<Inboxes>,
}

impl<T> Clone for Ctx<T> {
    fn clone(&self) -> Self {
        Ctx {
            client: self.client.clone(),
            server: self.server.clone(),
            codec: self.codec,
            counters: self.counters.clone(),
            dead_prefix: self.dead_prefix.clone(),
            bus: self.bus.clone(),
            stop: self.stop.clone(),
            status: self.status.clone(),
            inboxes: self.inboxes.clone(),
        }
    }
}

/// A bus connected to NATS. Dropping it stops the exporter and importers at
/// once; [`shutdown`](Self::shutdown) first sends what is queued.
pub struct NatsTransport<T> {
    client: async_nats::Client,
    server: String,
    counters: Arc<Counters>,
    status: watch::Receiver<Status>,
    status_tx: Arc<watch::Sender<Status>>,
    stop: watch::Sender<bool>,
    flush_tx: Option<mpsc::Sender<FlushWaiter>>,
    /// The exporter (shutdown waits for it first, up to its deadline).
    exporter: Option<JoinHandle<()>>,
    /// Tells the exporter to give up on what is unacknowledged (shutdown's deadline).
    give_up: Arc<tokio::sync::Notify>,
    shutdown_timeout: Duration,
    tasks: Vec<JoinHandle<()>>,
    /// Where the `$sys.nats.*` events go (for `closed` at shutdown).
    status_events: mpsc::UnboundedSender<StatusEvent>,
    /// The exporter's own connection (with exports).
    direct: Option<SharedDirect>,
    _t: PhantomData<fn(T)>,
}

/// The exporter's own connection, shared with `shutdown` for the final confirmation.
type SharedDirect = Arc<tokio::sync::Mutex<Direct>>;

impl<T> std::fmt::Debug for NatsTransport<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTransport")
            .field("server", &self.server)
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl<T> NatsTransport<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Connects `bus` to the server in `cfg`, starts exporting and importing.
    ///
    /// Fails at once — never retried with weaker settings — when the server
    /// is unreachable, refuses the credentials or presents an untrusted
    /// certificate ([`NatsError::Connect`] names the server and the cause);
    /// after a successful start, connection losses are retried forever.
    pub async fn connect(bus: &Bus<T>, cfg: NatsConfig<T>) -> Result<Self, NatsError> {
        let exports = parse_patterns(&cfg.exports, "export")?;
        parse_patterns(&cfg.imports, "import")?;
        if cfg.dead_letter_prefix.is_empty() || Pattern::new(&cfg.dead_letter_prefix).is_err() {
            return Err(NatsError::Config(format!(
                "dead letter prefix `{}` is not a valid subject",
                cfg.dead_letter_prefix
            )));
        }
        let server = cfg.server.clone();
        let (status_tx, status_rx) = watch::channel(Status {
            state: ConnState::Disconnected,
            server: server.clone(),
            reconnects: 0,
            last_error: None,
        });
        let status_tx = Arc::new(status_tx);
        // Status events reach the bus through one task, in order.
        let (events_tx, mut events_rx) = mpsc::unbounded_channel::<StatusEvent>();
        let (stop_tx, stop_rx) = watch::channel(false);
        let events_task = cfg.status_map.clone().map(|map| {
            let bus = bus.downgrade();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let publish = |se: StatusEvent| {
                    let bus = bus.upgrade();
                    let ev = map(&se);
                    async move {
                        if let (Some(bus), Some(ev)) = (bus, ev) {
                            let _ = bus.publish_to(se.topic(), ev).await;
                        }
                    }
                };
                loop {
                    tokio::select! {
                        biased;
                        se = events_rx.recv() => match se {
                            Some(se) => publish(se).await,
                            None => break,
                        },
                        // The client (and its callback's sender) outlives
                        // the stop: publish what is queued, then end.
                        _ = stop.changed() => {
                            while let Ok(se) = events_rx.try_recv() {
                                publish(se).await;
                            }
                            break;
                        }
                    }
                }
            })
        });
        let closed_tx = events_tx.clone();
        let direct_events = events_tx.clone();
        let opts = options(&cfg, status_tx.clone(), events_tx).await?;
        let client = opts
            .connect(server.as_str())
            .await
            .map_err(|e| connect_error(&server, e))?;
        // Exports go out on a connection of the exporter's own.
        let direct = if exports.is_empty() {
            None
        } else {
            let d = Direct::connect(DirectConfig {
                server: server.clone(),
                auth: cfg.auth.clone(),
                tls: cfg.tls.clone(),
                name: format!("{} (exports)", cfg.name),
                connect_timeout: cfg.connect_timeout,
                events: direct_events,
            })
            .await?;
            Some(Arc::new(tokio::sync::Mutex::new(d)))
        };
        status_tx.send_modify(|s| s.state = ConnState::Connected);

        let counters = Arc::new(Counters::default());
        let ctx = Ctx {
            client: client.clone(),
            server: server.clone(),
            codec: cfg.codec,
            counters: counters.clone(),
            dead_prefix: cfg.dead_letter_prefix.clone(),
            bus: bus.downgrade(),
            stop: stop_rx,
            status: status_rx.clone(),
            inboxes: Arc::new(Inboxes::default()),
        };
        let mut tasks: Vec<JoinHandle<()>> = events_task.into_iter().collect();
        let js = match &cfg.mode {
            Mode::Core => None,
            Mode::JetStream(js) => {
                Some(jetstream::setup(&ctx, js, &cfg.exports, &cfg.imports).await?)
            }
        };

        let mut flush_tx = None;
        let mut exporter = None;
        let give_up = Arc::new(tokio::sync::Notify::new());
        // Importers answer requests: their replies leave through the exporter.
        if !exports.is_empty() || !cfg.imports.is_empty() {
            let sub = ExportSubs {
                exports: if exports.is_empty() {
                    None
                } else {
                    Some(export_subscription(
                        bus,
                        exports,
                        ctx.inboxes.clone(),
                        cfg.buffer,
                    )?)
                },
                replies: if cfg.imports.is_empty() {
                    None
                } else {
                    Some(reply_subscription(bus, ctx.inboxes.clone(), cfg.buffer)?)
                },
            };
            let (ftx, frx) = mpsc::channel(16);
            flush_tx = Some(ftx);
            let sink = match &js {
                None => Sink::Core,
                Some(j) => Sink::Js(Box::new(j.clone())),
            };
            let acks = match (&js, sub.exports.is_some()) {
                (Some(_), true) => Some(jetstream::ack_inbox(&client).await.map_err(|detail| {
                    NatsError::ServerSubscribe {
                        server: server.clone(),
                        pattern: "_INBOX (jetstream acks)".into(),
                        detail,
                    }
                })?),
                _ => None,
            };
            if let (Some(_), Some(_)) = (&acks, &direct) {
                // Publishes leave on the exporter's connection: the server
                // must have the ack inbox's subscription first.
                round_trip(&client, cfg.connect_timeout.max(FLUSH_TIMEOUT))
                    .await
                    .map_err(|detail| NatsError::ServerSubscribe {
                        server: server.clone(),
                        pattern: "_INBOX (jetstream acks)".into(),
                        detail,
                    })?;
            }
            exporter = Some(tokio::spawn(export_loop(
                ctx.clone(),
                sub,
                sink,
                acks,
                direct.clone(),
                frx,
                give_up.clone(),
            )));
        }
        // Imports subscribe before `connect` returns, so a failure is a
        // startup error and nothing published after it is missed.
        // Overlapping patterns would each deliver what they share (one
        // consumer or subscription each): only those no other one covers,
        // and one dedup for all, for patterns that partly overlap.
        let patterns = jetstream::minimal_cover(&cfg.imports);
        let window = match &js {
            Some(j) => j.cfg.dedup_window,
            None => CORE_OVERLAP_WINDOW,
        };
        let dedup: SharedDedup = Arc::new(std::sync::Mutex::new(Dedup::new(
            window.saturating_mul(patterns.len()),
        )));
        for pattern in &patterns {
            let ctx = ctx.clone();
            let pattern = pattern.clone();
            let sub_err = |pattern: String, detail: String| NatsError::ServerSubscribe {
                server: server.clone(),
                pattern,
                detail,
            };
            tasks.push(match &js {
                None => {
                    let sub = client
                        .subscribe(pattern.clone())
                        .await
                        .map_err(|e| sub_err(pattern.clone(), e.to_string()))?;
                    // One pattern: nothing to meet twice (core NATS never redelivers).
                    let d = (patterns.len() > 1).then(|| dedup.clone());
                    tokio::spawn(crate::core::import_loop(ctx, sub, d))
                }
                Some(j) => {
                    let durable = jetstream::durable_name(&j.cfg.durable, &pattern);
                    let first = jetstream::open(j, &durable, &pattern).await.map_err(|e| {
                        sub_err(
                            pattern.clone(),
                            format!("JetStream consumer `{durable}`: {e}"),
                        )
                    })?;
                    tokio::spawn(jetstream::import_loop(
                        ctx,
                        j.clone(),
                        pattern,
                        first,
                        dedup.clone(),
                    ))
                }
            });
        }
        if !cfg.imports.is_empty() {
            round_trip(&client, cfg.connect_timeout)
                .await
                .map_err(|detail| NatsError::ServerSubscribe {
                    server: server.clone(),
                    pattern: cfg.imports.join(","),
                    detail,
                })?;
        }
        Ok(NatsTransport {
            client,
            server,
            counters,
            status: status_rx,
            status_tx,
            stop: stop_tx,
            flush_tx,
            exporter,
            give_up,
            shutdown_timeout: cfg.shutdown_timeout,
            tasks,
            status_events: closed_tx,
            direct,
            _t: PhantomData,
        })
    }
}

impl<T> NatsTransport<T> {
    /// The connection status; `changed().await` on it to follow changes.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// The counters so far.
    pub fn stats(&self) -> TransportStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TransportStats {
            exported: l(&c.exported),
            acked: l(&c.acked),
            publish_duplicates: l(&c.publish_duplicates),
            retried: l(&c.retried),
            rejected: l(&c.rejected),
            echo_skipped: l(&c.echo_skipped),
            imported: l(&c.imported),
            import_duplicates: l(&c.import_duplicates),
            import_own: l(&c.import_own),
            dead_lettered: l(&c.dead_lettered),
            dead_letters_lost: l(&c.dead_letters_lost),
            abandoned: l(&c.abandoned),
        }
    }

    /// The underlying `async-nats` client (for raw access, e.g. benchmarks).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The server's `max_payload`, from the connection's server info.
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Waits until every event published on the bus before this call and
    /// matching an export is settled: acknowledged by JetStream (or, on core
    /// NATS, processed by the server), or rejected and counted. On core NATS,
    /// if the connection was lost and re-established since the first event
    /// this flush covers was written to it, it fails with
    /// [`NatsError::Reconnected`]: what was in the lost connection's buffers
    /// may be gone (at-most-once), and nothing else reports it. On JetStream,
    /// while the server is away this waits for it; on core NATS it fails with
    /// [`NatsError::FlushTimedOut`] when the server has not confirmed within
    /// 30 seconds (what was sent meanwhile may be lost: at-most-once).
    pub async fn flush(&self) -> Result<(), NatsError> {
        let Some(tx) = &self.flush_tx else {
            return Ok(());
        };
        let (done_tx, done_rx) = oneshot::channel();
        tx.send(done_tx).await.map_err(|_| NatsError::Shutdown)?;
        done_rx.await.map_err(|_| NatsError::Shutdown)?
    }

    /// Stops importing, sends everything the exporter holds and waits for
    /// its acks (on core NATS: for the server to confirm it processed it),
    /// then closes the connection. Returns the final counters.
    ///
    /// Every event the exporter was handed is accounted for: sent, or
    /// counted in [`TransportStats::abandoned`]. Events published on an
    /// exported topic after the exporter closed its queue reach no
    /// subscriber here (their `Receipt` says so).
    ///
    /// It ends by [`NatsConfig::shutdown_timeout`] (default 30 s) even with
    /// the server away, plus at most a second for the server's final
    /// confirmation. Past the deadline it gives up:
    /// - events the exporter still held (JetStream: unacknowledged; core:
    ///   not yet written, its connection down, or not yet taken by the
    ///   client, whose buffer was full) are counted as `abandoned` and it
    ///   returns [`NatsError::ShutdownTimedOut`];
    /// - with none held but the server not confirming what was sent, it
    ///   returns [`NatsError::FlushTimedOut`] (on core NATS what the client
    ///   still had may be lost: at-most-once).
    ///
    /// On core NATS, as with [`flush`](Self::flush), a connection lost and
    /// re-established since events were last confirmed is
    /// [`NatsError::Reconnected`]: some of them may be lost.
    ///
    /// Dropping the transport, or this future, stops everything at once
    /// without counting (the bus counts what the exporter's queue held as
    /// discarded).
    pub async fn shutdown(mut self) -> Result<TransportStats, NatsError> {
        let waited = self.shutdown_timeout;
        let deadline = tokio::time::Instant::now() + waited;
        // Published (with any status event before it) by the events task,
        // which ends after it once stopped. Sent under the status lock: no
        // event from the client follows it.
        self.status_tx.send_modify(|s| {
            s.state = ConnState::Closed;
            let _ = self.status_events.send(StatusEvent::Closed {
                server: self.server.clone(),
            });
        });
        // The exporter sends what its queues hold, closes them, and waits
        // for the acks; the importers and the events task end.
        let _ = self.stop.send(true);
        let before = self.counters.abandoned.load(Ordering::Relaxed);
        let mut gave_up = false;
        // Left in place (not taken): if this future is dropped, dropping
        // the transport aborts the exporter.
        if let Some(ex) = self.exporter.as_mut() {
            if tokio::time::timeout_at(deadline, &mut *ex).await.is_err() {
                self.give_up.notify_one();
                let _ = ex.await;
                gave_up = true;
            }
        }
        for t in self.tasks.iter_mut() {
            if tokio::time::timeout_at(deadline, &mut *t).await.is_err() {
                t.abort();
            }
        }
        let abandoned = self.counters.abandoned.load(Ordering::Relaxed) - before;
        if abandoned > 0 {
            tracing::warn!(server = %self.server, abandoned, "nats shutdown abandoned events");
        }
        // Given up with nothing pending (a deadline of zero, say): not a failure.
        if gave_up && abandoned > 0 {
            return Err(NatsError::ShutdownTimedOut {
                server: self.server.clone(),
                waited,
                abandoned,
                stats: Box::new(self.stats()),
            });
        }
        if self.flush_tx.is_some() {
            // The server has processed everything before the marker (core
            // publishes, and replies, which go by core NATS in either mode).
            // At least a moment for it, so a deadline used up by the
            // exporter does not fail a shutdown that lost nothing.
            let left = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .max(FINAL_CONFIRMATION);
            let mut held = match &self.direct {
                Some(d) => Some(d.lock().await),
                None => None,
            };
            confirm_core(
                &self.client,
                held.as_deref_mut(),
                &self.counters,
                &self.server,
                left,
                waited,
            )
            .await?;
        }
        let _ = tokio::time::timeout_at(deadline, self.client.flush()).await;
        Ok(self.stats())
    }
}

impl<T> Drop for NatsTransport<T> {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.give_up.notify_one();
        for t in self.tasks.iter().chain(&self.exporter) {
            t.abort();
        }
    }
}

/// Waits until the server has processed everything this connection sent
/// before: a message to a private inbox comes back only after that.
/// (`Client::flush` only waits for the socket write.)
/// How long a core NATS flush waits for the server's confirmation.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Ids remembered per core NATS import pattern when there are several (to
/// deliver once what partly overlapping patterns share).
const CORE_OVERLAP_WINDOW: usize = 65_536;

/// The least time shutdown gives the server to confirm what was sent, even
/// past its deadline.
const FINAL_CONFIRMATION: Duration = Duration::from_secs(1);

/// Where a flush learns its outcome.
type FlushWaiter = oneshot::Sender<Result<(), NatsError>>;

/// Waits until the server has processed what went out by core NATS (a
/// round trip on the connection it went out on: the exporter's own, else
/// the client's), for at most `timeout`; `FlushTimedOut` (saying it
/// `waited`) otherwise. Then `Reconnected` if that connection is not the
/// one the first unconfirmed event went out on: what a lost connection
/// held may be gone, and nothing else reports it.
async fn confirm_core(
    client: &async_nats::Client,
    direct: Option<&mut Direct>,
    c: &Counters,
    server: &str,
    timeout: Duration,
    waited: Duration,
) -> Result<(), NatsError> {
    let confirmed = match direct {
        Some(d) => d.round_trip(timeout).await.map(|()| d.connects),
        None => round_trip(client, timeout)
            .await
            .map(|()| client.statistics().connects.load(Ordering::SeqCst)),
    };
    let connects = confirmed.map_err(|reason| NatsError::FlushTimedOut {
        server: server.to_string(),
        waited,
        reason,
    })?;
    let sent = c.core_unconfirmed.swap(0, Ordering::SeqCst);
    if sent > 0 && connects != c.core_connects_at.load(Ordering::SeqCst) {
        return Err(NatsError::Reconnected {
            server: server.to_string(),
            sent,
        });
    }
    Ok(())
}

async fn round_trip(client: &async_nats::Client, timeout: Duration) -> Result<(), String> {
    // All of it under the timeout: while the client reconnects, sending
    // the subscribe and the marker waits for room in its full buffer too.
    let trip = async {
        let inbox = client.new_inbox();
        let mut sub = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| e.to_string())?;
        client
            .publish(inbox, bytes::Bytes::new())
            .await
            .map_err(|e| e.to_string())?;
        match sub.next().await {
            Some(_) => Ok(()),
            None => Err("connection closed".to_string()),
        }
    };
    tokio::time::timeout(timeout, trip)
        .await
        .unwrap_or_else(|_| Err(format!("no answer from the server within {timeout:?}")))
}

fn parse_patterns(ps: &[String], what: &str) -> Result<Vec<Pattern>, NatsError> {
    ps.iter()
        .map(|p| Pattern::new(p).map_err(|e| NatsError::Config(format!("{what} pattern: {e}"))))
        .collect()
}

/// The exporter's subscription to the export patterns. One pattern that
/// starts with a literal token is subscribed as it is; otherwise `>` with a
/// filter (which keeps `$sys.` and `_INBOX.` topics out unless a pattern
/// names them, and leaves replies to the reply subscription).
fn export_subscription<T: Send + Sync + 'static>(
    bus: &Bus<T>,
    exports: Vec<Pattern>,
    inboxes: Arc<Inboxes>,
    buffer: usize,
) -> Result<Subscription<T>, NatsError> {
    let pattern = match exports.as_slice() {
        [p] if !matches!(p.as_str().split('.').next(), Some("*" | ">" | "_INBOX")) => {
            p.as_str().to_string()
        }
        _ => ">".to_string(),
    };
    let builder = if pattern != ">" {
        // Only what it names: no filter to run on every local event.
        bus.subscriber(&pattern)
    } else {
        bus.subscriber(">").filter(move |env: &Envelope<T>| {
            let t = env.topic.as_str();
            if t.starts_with("_INBOX.") && inboxes.is_remote_reply(t) {
                return false;
            }
            let reserved = t.starts_with("$sys.") || t.starts_with("_INBOX.");
            exports.iter().any(|p| {
                p.matches(&env.topic)
                    && (!reserved || p.as_str().starts_with(t.split('.').next().unwrap_or("")))
            })
        })
    };
    builder
        .lossless(buffer)
        .name("nats-export")
        .subscribe()
        .map_err(|e| NatsError::Subscribe {
            pattern,
            detail: e.to_string(),
        })
}

/// The exporter's subscription to replies to requests imported from NATS.
fn reply_subscription<T: Send + Sync + 'static>(
    bus: &Bus<T>,
    inboxes: Arc<Inboxes>,
    buffer: usize,
) -> Result<Subscription<T>, NatsError> {
    bus.subscriber("_INBOX.>")
        .lossless(buffer)
        .name("nats-export-replies")
        .filter(move |env: &Envelope<T>| inboxes.is_remote_reply(env.topic.as_str()))
        .subscribe()
        .map_err(|e| NatsError::Subscribe {
            pattern: "_INBOX.>".into(),
            detail: e.to_string(),
        })
}

// ----- request/reply across processes ------------------------------------------

/// How many requesting buses elsewhere an importer remembers replies for.
const REMOTE_INBOXES: usize = 1024;

/// The reply inboxes (`_INBOX.<node>`, a bus's request reply-to topics
/// without their last token) the transport routes replies for.
pub(crate) struct Inboxes {
    /// Of requests imported from NATS: local replies to them are exported.
    remote: std::sync::Mutex<Dedup<String>>,
    /// Of this bus's own requests that were exported: subscribed on NATS,
    /// replies arriving there go to the waiting requester.
    own: std::sync::Mutex<HashSet<String>>,
}

impl Default for Inboxes {
    fn default() -> Self {
        Inboxes {
            remote: std::sync::Mutex::new(Dedup::new(REMOTE_INBOXES)),
            own: std::sync::Mutex::new(HashSet::new()),
        }
    }
}

/// The inbox of a reply-to topic: `_INBOX.<node>` of `_INBOX.<node>.<n>`.
fn inbox_of(reply_to: &str) -> Option<&str> {
    if !reply_to.starts_with("_INBOX.") {
        return None;
    }
    reply_to.rsplit_once('.').map(|(inbox, _)| inbox)
}

impl Inboxes {
    fn is_remote_reply(&self, topic: &str) -> bool {
        inbox_of(topic).is_some_and(|i| self.remote.lock().map(|r| r.contains(i)).unwrap_or(false))
    }

    /// Notes the inbox of an imported request's reply-to topic.
    pub(crate) fn imported_request(&self, reply_to: &str) {
        if let Some(i) = inbox_of(reply_to) {
            if let Ok(mut r) = self.remote.lock() {
                if !r.contains(i) {
                    r.insert(i.to_string());
                }
            }
        }
    }

    /// The inbox of an exported request's reply-to topic, if it is not
    /// subscribed yet (and marks it subscribed).
    fn new_own(&self, reply_to: &str) -> Option<String> {
        let i = inbox_of(reply_to)?;
        let mut own = self.own.lock().ok()?;
        if own.contains(i) {
            return None;
        }
        own.insert(i.to_string());
        Some(i.to_string())
    }
}

/// The next message of a core subscription, or `None` once it ends or the
/// transport is stopping.
pub(crate) async fn next_or_stop(
    sub: &mut async_nats::Subscriber,
    stop: &mut watch::Receiver<bool>,
) -> Option<async_nats::Message> {
    tokio::select! {
        _ = stop.changed() => None,
        m = sub.next() => m,
    }
}

/// Delivers replies arriving on one of this bus's inboxes to the requesters
/// waiting for them.
async fn reply_import_loop<T>(ctx: Ctx<T>, mut sub: async_nats::Subscriber)
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    let mut stop = ctx.stop.clone();
    while let Some(msg) = next_or_stop(&mut sub, &mut stop).await {
        let (subject, headers) = (msg.subject.as_str(), msg.headers.as_ref());
        // Decoded twice: the bus hands a reply over against its request,
        // which needs a payload of its own (only its ids and reply-to count).
        let decoded =
            codec::decode::<T>(subject, headers, &msg.payload, ctx.codec).and_then(|env| {
                codec::decode::<T>(subject, headers, &msg.payload, ctx.codec)
                    .map(|again| (env, again.payload))
            });
        let (env, stand_in) = match decoded {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(%subject, error = %e, "undecodable reply dropped");
                continue;
            }
        };
        let Some(bus) = ctx.bus.upgrade() else { break };
        let request = Envelope::from_parts(
            0,
            env.causation_id.unwrap_or(env.id),
            env.topic.clone(),
            env.timestamp,
            None,
            env.correlation_id,
            None,
            Some(env.topic.clone()),
            Vec::new(),
            stand_in,
        );
        let mut reply = Message::new(env.payload)
            .id(env.id)
            .timestamp(env.timestamp)
            .header(IMPORTED, ctx.server.as_str());
        if let Some(s) = env.source {
            reply = reply.source(s);
        }
        for (k, v) in env.headers {
            reply = reply.header(k, v);
        }
        match bus.reply_msg(&request, reply).await {
            Ok(()) => inc(&ctx.counters.imported),
            Err(e) => tracing::debug!(%subject, error = %e, "reply not delivered"),
        }
    }
    let _ = sub.unsubscribe().await;
}

/// Connect options carrying `auth` and `tls` (shared by the transport and the JetStream store).
pub(crate) async fn credentials(
    server: &str,
    auth: &Auth,
    tls: &crate::config::Tls,
) -> Result<async_nats::ConnectOptions, NatsError> {
    let mut o = match auth {
        Auth::None => async_nats::ConnectOptions::new(),
        Auth::UserPassword { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        Auth::Token(t) => async_nats::ConnectOptions::with_token(t.clone()),
        Auth::NKey(seed) => async_nats::ConnectOptions::with_nkey(seed.clone()),
        Auth::CredentialsFile(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| NatsError::Connect {
                server: server.to_string(),
                cause: crate::error::ConnectCause::Authentication,
                detail: format!("credentials file {}: {e}", path.display()),
            })?,
    };
    if tls.required {
        o = o.require_tls(true);
    }
    if let Some(ca) = &tls.ca_file {
        if !ca.exists() {
            return Err(NatsError::Config(format!(
                "tls ca file {} does not exist",
                ca.display()
            )));
        }
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = &tls.client_cert {
        o = o
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    Ok(o)
}

async fn options<T: Send + Sync + 'static>(
    cfg: &NatsConfig<T>,
    status: Arc<watch::Sender<Status>>,
    events: mpsc::UnboundedSender<StatusEvent>,
) -> Result<async_nats::ConnectOptions, NatsError> {
    let server = cfg.server.clone();
    let initial = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let o = credentials(&server, &cfg.auth, &cfg.tls).await?;
    let o = o
        .name(&cfg.name)
        .connection_timeout(cfg.connect_timeout)
        .client_capacity(cfg.buffer.max(64))
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64 * 50).min(1000))
        })
        .event_callback(move |ev| {
            let status = status.clone();
            let events = events.clone();
            let server = server.clone();
            let first =
                matches!(ev, async_nats::Event::Connected) && initial.swap(false, Ordering::SeqCst);
            async move { on_event(ev, first, &server, &status, &events) }
        });
    Ok(o)
}

fn on_event(
    ev: async_nats::Event,
    first: bool,
    server: &str,
    status: &watch::Sender<Status>,
    events: &mpsc::UnboundedSender<StatusEvent>,
) {
    use async_nats::Event as E;
    if matches!(ev, E::Draining) {
        return;
    }
    let server = server.to_string();
    // Under the status lock, so the order of the events is the order of the
    // changes, and nothing follows `closed` (the client reports some events
    // late, from its own task: a `connected` could land after shutdown's
    // `closed`).
    status.send_if_modified(|s| {
        if s.state == ConnState::Closed {
            return false;
        }
        let before = s.clone();
        let se = match ev {
            E::Connected => {
                // The initial connection's event may come before or after
                // `connect` marked the state connected: it is no reconnect.
                if s.state == ConnState::Disconnected && !first {
                    s.reconnects += 1;
                }
                s.state = ConnState::Connected;
                StatusEvent::Connected { server }
            }
            E::Disconnected => {
                s.state = ConnState::Disconnected;
                StatusEvent::Disconnected { server }
            }
            E::Closed => {
                s.state = ConnState::Closed;
                StatusEvent::Closed { server }
            }
            E::LameDuckMode => StatusEvent::LameDuck { server },
            E::SlowConsumer(_) => StatusEvent::SlowConsumer { server },
            E::ServerError(e) => {
                let message = e.to_string();
                s.last_error = Some(message.clone());
                StatusEvent::Error { server, message }
            }
            E::ClientError(e) => {
                let message = e.to_string();
                s.last_error = Some(message.clone());
                StatusEvent::Error { server, message }
            }
            E::Draining => return false,
        };
        tracing::info!(event = ?se, "nats status");
        let _ = events.send(se);
        *s != before
    });
}

// ----- export -----------------------------------------------------------------

pub(crate) enum Sink {
    Core,
    Js(Box<jetstream::Js>),
}

type AckFuture = futures::future::BoxFuture<'static, u64>;

/// Events taken off the bus queue in one go before the exporter looks at its
/// other inputs again (acks, flush requests, stop): one `select!` per batch
/// instead of one per event.
const EXPORT_BATCH: usize = 64;

/// The same on the exporter's own connection, where a batch is one write.
const DIRECT_BATCH: usize = 1024;

/// Export sequence numbers handed out and not yet settled (acknowledged or
/// given up on), oldest first: settling is O(1), and everything below
/// [`Unsettled::below`] is settled.
#[derive(Default)]
struct Unsettled {
    base: u64,
    done: VecDeque<bool>,
}

impl Unsettled {
    /// The next sequence number, not yet settled.
    fn open(&mut self) -> u64 {
        self.done.push_back(false);
        self.base + self.done.len() as u64 - 1
    }

    fn settle(&mut self, seq: u64) {
        if let Some(d) = seq
            .checked_sub(self.base)
            .and_then(|i| self.done.get_mut(i as usize))
        {
            *d = true;
        }
        while self.done.front() == Some(&true) {
            self.done.pop_front();
            self.base += 1;
        }
    }

    /// Every sequence number below this one is settled.
    fn below(&self) -> u64 {
        self.base
    }

    /// The sequence number the next [`open`](Self::open) returns.
    fn next(&self) -> u64 {
        self.base + self.done.len() as u64
    }
}

/// A JetStream publish sent and not yet acknowledged.
struct Waiting<T> {
    env: Arc<Envelope<T>>,
    /// The sweep generation it was sent in.
    generation: u64,
}

impl<T> Waiting<T> {
    fn sent(env: &Arc<Envelope<T>>, generation: u64) -> Self {
        Waiting {
            env: env.clone(),
            generation,
        }
    }
}

/// Sweeps per ack timeout: an unanswered publish is retried between one and
/// one and a half timeouts after it was sent.
const SWEEPS_PER_ACK_TIMEOUT: u32 = 2;

/// What the exporter keeps between events.
struct Exporter<T> {
    encoder: codec::Encoder,
    /// For replies to requests from elsewhere: always core NATS.
    reply_encoder: codec::Encoder,
    max_payload: usize,
    max_in_flight: usize,
    unsettled: Unsettled,
    /// Retries (JetStream), each resolving to its sequence number once acknowledged.
    in_flight: FuturesUnordered<AckFuture>,
    /// Where the server acknowledges first attempts (JetStream).
    acks: Option<jetstream::AckInbox>,
    /// First attempts awaiting their ack, by sequence number.
    waiting: HashMap<u64, Waiting<T>>,
    generation: u64,
    /// An event taken off the bus queue and not yet sent (or settled).
    busy: bool,
    /// The client's counters (its connection count), fetched once.
    client_stats: Arc<async_nats::Statistics>,
    /// The exporter's own connection, which its events (and replies) are
    /// written to instead of the client (with exports).
    direct: Option<SharedDirect>,
    /// `direct`, locked for the batch being exported (one lock a batch).
    held: Option<tokio::sync::OwnedMutexGuard<Direct>>,
    /// `direct` holds events it could not write (its connection is down):
    /// no more are taken until a connection is back and they are written.
    backlog: bool,
}

impl<T> Exporter<T> {
    /// The exporter's own connection, locked (taking the batch's lock if
    /// it holds one); `None` when exports go by the client.
    async fn hold_direct(&mut self) -> Option<tokio::sync::OwnedMutexGuard<Direct>> {
        match self.held.take() {
            Some(g) => Some(g),
            None => Some(self.direct.clone()?.lock_owned().await),
        }
    }
}

impl<T: Serialize + Send + Sync + 'static> Exporter<T> {
    fn has_room(&self) -> bool {
        self.max_in_flight == 0 || self.in_flight.len() + self.waiting.len() < self.max_in_flight
    }

    /// Room for a batch worth a write (up to 64 publishes, or a quarter of
    /// the window): a full window opens one ack at a time, and taking one
    /// event per ack would make every publish a write of its own.
    fn has_room_for_a_batch(&self) -> bool {
        let want = (self.max_in_flight / 4).clamp(1, 64);
        self.max_in_flight == 0
            || self.in_flight.len() + self.waiting.len() + want <= self.max_in_flight
    }

    fn idle(&self) -> bool {
        self.in_flight.is_empty() && self.waiting.is_empty()
    }

    /// An answer on the ack inbox.
    fn on_ack(&mut self, ctx: &Ctx<T>, sink: &Sink, msg: async_nats::Message) {
        let Some(seq) = jetstream::acked_seq(&msg) else {
            return;
        };
        // Absent: already given up on and retried (the retry is de-duplicated).
        let Some(w) = self.waiting.remove(&seq) else {
            return;
        };
        match jetstream::parse_ack(msg.status, &msg.payload) {
            jetstream::AckReply::Stored { duplicate } => {
                if duplicate {
                    inc(&ctx.counters.publish_duplicates);
                }
                inc(&ctx.counters.acked);
                self.unsettled.settle(seq);
            }
            jetstream::AckReply::Failed(why) => self.retry(ctx, sink, w.env, seq, why),
        }
    }

    /// Retries publishes whose ack is overdue.
    fn sweep(&mut self, ctx: &Ctx<T>, sink: &Sink) {
        self.generation += 1;
        let cutoff = self
            .generation
            .saturating_sub(SWEEPS_PER_ACK_TIMEOUT as u64 + 1);
        let overdue: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.generation <= cutoff)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in overdue {
            if let Some(w) = self.waiting.remove(&seq) {
                self.retry(
                    ctx,
                    sink,
                    w.env,
                    seq,
                    "no ack within the ack timeout".into(),
                );
            }
        }
    }

    fn retry(&mut self, ctx: &Ctx<T>, sink: &Sink, env: Arc<Envelope<T>>, seq: u64, why: String) {
        if let Sink::Js(js) = sink {
            let c = ctx.counters.clone();
            self.in_flight
                .push(js.retry(env, ctx.codec, c, seq, Some(why)));
        }
    }

    /// Waits until another publish may be in flight.
    async fn make_room(&mut self, ctx: &Ctx<T>, sink: &Sink, sweep: &mut tokio::time::Interval) {
        while !self.has_room() {
            tokio::select! {
                biased;
                Some(done) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.unsettled.settle(done);
                }
                Some(msg) = next_ack(&mut self.acks) => self.on_ack(ctx, sink, msg),
                _ = sweep.tick() => self.sweep(ctx, sink),
            }
        }
    }
}

async fn next_ack(acks: &mut Option<jetstream::AckInbox>) -> Option<async_nats::Message> {
    match acks {
        Some(a) => a.sub.next().await,
        None => std::future::pending().await,
    }
}

/// The exporter: takes events off its bus subscription in order, publishes
/// them, and (JetStream) keeps up to `max_in_flight` awaiting their acks.
async fn export_loop<T: Serialize + DeserializeOwned + Send + Sync + 'static>(
    ctx: Ctx<T>,
    mut sub: ExportSubs<T>,
    sink: Sink,
    acks: Option<jetstream::AckInbox>,
    direct: Option<SharedDirect>,
    flush_rx: mpsc::Receiver<FlushWaiter>,
    give_up: Arc<tokio::sync::Notify>,
) {
    let ack_timeout = match &sink {
        Sink::Core => Duration::from_secs(5),
        Sink::Js(j) => j.cfg.ack_timeout,
    };
    let mut sweep = tokio::time::interval(
        (ack_timeout / SWEEPS_PER_ACK_TIMEOUT).max(Duration::from_millis(10)),
    );
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ex = Exporter {
        encoder: codec::Encoder::new::<T>(ctx.codec, matches!(sink, Sink::Js(_))),
        reply_encoder: codec::Encoder::new::<T>(ctx.codec, false),
        // Server info is cloned on every read: read max_payload once per connection.
        max_payload: ctx.client.server_info().max_payload,
        max_in_flight: match &sink {
            Sink::Core => 0,
            Sink::Js(j) => j.cfg.max_in_flight.max(1),
        },
        unsettled: Unsettled::default(),
        in_flight: FuturesUnordered::new(),
        acks,
        waiting: HashMap::new(),
        // Sweeps count from here, so the first publishes (generation 0 would
        // be at or below the first sweeps' cutoff) wait a full ack timeout too.
        generation: SWEEPS_PER_ACK_TIMEOUT as u64 + 1,
        busy: false,
        client_stats: ctx.client.statistics(),
        direct,
        held: None,
        backlog: false,
    };
    let gave_up = {
        let run = export_run(&ctx, &mut sub, &sink, &mut ex, flush_rx, sweep);
        tokio::select! {
            _ = run => false,
            _ = give_up.notified() => true,
        }
    };
    if gave_up {
        // Shutdown's deadline passed: what is unacknowledged, in hand or
        // still queued is given up on, and counted.
        let mut n = (ex.waiting.len() + ex.in_flight.len() + ex.busy as usize) as u64;
        if let Some(mut d) = ex.hold_direct().await {
            // Encoded, never written.
            n += std::mem::take(&mut d.pending);
            d.buf.clear();
        }
        for q in [sub.exports.take(), sub.replies.take()]
            .into_iter()
            .flatten()
        {
            n += q.unsubscribe();
        }
        ctx.counters.abandoned.fetch_add(n, Ordering::Relaxed);
    }
}

/// The exporter's loop: ends once stopped, with everything it was handed
/// settled (given up on from outside at shutdown's deadline).
async fn export_run<T: Serialize + DeserializeOwned + Send + Sync + 'static>(
    ctx: &Ctx<T>,
    sub: &mut ExportSubs<T>,
    sink: &Sink,
    ex: &mut Exporter<T>,
    mut flush_rx: mpsc::Receiver<FlushWaiter>,
    mut sweep: tokio::time::Interval,
) {
    let mut stop = ctx.stop.clone();
    let direct = ex.direct.clone();
    let mut waiters: Vec<(u64, FlushWaiter)> = Vec::new();
    let mut stopping = false;
    let mut status = ctx.status.clone();
    loop {
        if status.has_changed().unwrap_or(false) {
            status.borrow_and_update();
            ex.max_payload = ctx.client.server_info().max_payload;
        }
        tokio::select! {
            biased;
            Some(done) = ex.in_flight.next(), if !ex.in_flight.is_empty() => {
                ex.unsettled.settle(done);
            }
            Some(msg) = next_ack(&mut ex.acks), if !ex.waiting.is_empty() => {
                ex.on_ack(ctx, sink, msg);
            }
            _ = sweep.tick(), if !ex.waiting.is_empty() => {
                ex.sweep(ctx, sink);
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                // Everything handed to the exporter goes out; what lands
                // between the last take and the unsubscribe is counted.
                for (q, windowed) in [(&mut sub.exports, true), (&mut sub.replies, false)] {
                    // Drained in place: if shutdown gives up meanwhile, what
                    // is still queued is counted there (not dropped with a local).
                    if let Some(s) = q.as_mut() {
                        drain(ctx, sink, ex, s, windowed, &mut sweep).await;
                    }
                    if let Some(s) = q.take() {
                        let late = s.unsubscribe();
                        ctx.counters.abandoned.fetch_add(late, Ordering::Relaxed);
                    }
                }
            }
            Some(w) = flush_rx.recv() => {
                // Everything published before the flush call is already in our queues.
                if let Some(q) = &mut sub.exports {
                    drain(ctx, sink, ex, q, true, &mut sweep).await;
                }
                if let Some(q) = &mut sub.replies {
                    drain(ctx, sink, ex, q, false, &mut sweep).await;
                }
                if let Sink::Core = sink {
                    // The server has processed everything before the marker.
                    let mut held = ex.hold_direct().await;
                    if let Some(d) = held.as_deref_mut() {
                        // A backlog: the connection gets as long as the
                        // confirmation would.
                        if !d.buf.is_empty() {
                            let _ = tokio::time::timeout(FLUSH_TIMEOUT, d.connected()).await;
                        }
                        ex.backlog = !write_direct(ctx, d).await;
                        if ex.backlog {
                            let _ = w.send(Err(NatsError::FlushTimedOut {
                                server: ctx.server.clone(),
                                waited: FLUSH_TIMEOUT,
                                reason: "the exporter's connection is down".into(),
                            }));
                            continue;
                        }
                    }
                    let confirmed = confirm_core(
                        &ctx.client,
                        held.as_deref_mut(),
                        &ctx.counters,
                        &ctx.server,
                        FLUSH_TIMEOUT,
                        FLUSH_TIMEOUT,
                    )
                    .await;
                    if let Err(e) = confirmed {
                        tracing::warn!(error = %e, "core nats flush did not confirm everything");
                        let _ = w.send(Err(e));
                        continue;
                    }
                }
                waiters.push((ex.unsettled.next(), w));
            }
            // Back: what the exporter could not write goes out first.
            g = reconnected(direct.clone()), if ex.backlog => {
                ex.held = Some(g);
                release_direct(ctx, ex).await;
            }
            r = recv_opt(&mut sub.exports), if !stopping && ex.has_room_for_a_batch() && !ex.backlog => {
                if let Some(q) = &mut sub.exports {
                    stopping = export_batch(ctx, sink, ex, q, true, r).await;
                }
            }
            // Replies go by core NATS in either mode: no JetStream window.
            r = recv_opt(&mut sub.replies), if !stopping && !ex.backlog => {
                if let Some(q) = &mut sub.replies {
                    stopping = export_batch(ctx, sink, ex, q, false, r).await;
                }
            }
        }
        // Settle waiters: everything below their mark is done.
        let done_below = ex.unsettled.below();
        let mut i = 0;
        while i < waiters.len() {
            if waiters[i].0 <= done_below {
                let (_, w) = waiters.swap_remove(i);
                let _ = w.send(Ok(()));
            } else {
                i += 1;
            }
        }
        // A backlog is written before the end (or counted when shutdown gives up).
        if stopping && ex.idle() && !ex.backlog {
            break;
        }
    }
}

/// The exporter's queues on the bus.
pub(crate) struct ExportSubs<T> {
    /// Events on the export patterns.
    exports: Option<Subscription<T>>,
    /// Replies to requests that came from NATS (with imports only).
    replies: Option<Subscription<T>>,
}

async fn recv_opt<T: Send + Sync + 'static>(
    q: &mut Option<Subscription<T>>,
) -> Result<Arc<Envelope<T>>, RecvError> {
    match q {
        Some(q) => q.recv().await,
        None => std::future::pending().await,
    }
}

/// Exports what `q` holds now (not what publishers add meanwhile, or it
/// could chase them for ever); `windowed`: waiting for room in the
/// JetStream window (not for replies, which go by core NATS).
async fn drain<T: Serialize + DeserializeOwned + Send + Sync + 'static>(
    ctx: &Ctx<T>,
    sink: &Sink,
    ex: &mut Exporter<T>,
    q: &mut Subscription<T>,
    windowed: bool,
    sweep: &mut tokio::time::Interval,
) {
    for _ in 0..q.len() {
        match q.try_recv() {
            Ok(Some(env)) => {
                ex.busy = true;
                if windowed {
                    if !ex.has_room() {
                        // The acks waited for answer what is written.
                        release_direct(ctx, ex).await;
                    }
                    ex.make_room(ctx, sink, sweep).await;
                }
                export_one(ctx, sink, &env, ex).await;
                ex.busy = false;
            }
            Ok(None) => break,
            Err(RecvError::Lagged(n)) => {
                tracing::error!(missed = n, "nats exporter lagged (it is lossless: a bug)")
            }
            Err(_) => break,
        }
    }
    release_direct(ctx, ex).await;
}

/// Exports `first` and whatever else `q` holds already (up to a batch),
/// without another `select!`; `windowed`: while the JetStream window has
/// room. Returns whether the bus is closed.
async fn export_batch<T: Serialize + DeserializeOwned + Send + Sync + 'static>(
    ctx: &Ctx<T>,
    sink: &Sink,
    ex: &mut Exporter<T>,
    q: &mut Subscription<T>,
    windowed: bool,
    first: Result<Arc<Envelope<T>>, RecvError>,
) -> bool {
    let mut next = first.map(Some);
    let mut taken = 0;
    // The exporter's own connection writes every `WRITE_AT` bytes anyway.
    let limit = if ex.direct.is_some() {
        DIRECT_BATCH
    } else {
        EXPORT_BATCH
    };
    let closed = loop {
        match next {
            Ok(Some(env)) => {
                ex.busy = true;
                export_one(ctx, sink, &env, ex).await;
                ex.busy = false;
            }
            Ok(None) => break false,
            Err(RecvError::Lagged(n)) => {
                tracing::error!(missed = n, "nats exporter lagged (it is lossless: a bug)")
            }
            Err(_) => break true,
        }
        taken += 1;
        // Checked before taking the next one, which must not be dropped.
        if taken == limit || (windowed && !ex.has_room()) || ex.backlog {
            break false;
        }
        next = q.try_recv();
    };
    release_direct(ctx, ex).await;
    closed
}

/// Writes what the exporter's own connection has buffered, and unlocks it;
/// with the connection down, notes the backlog (written once it is back).
async fn release_direct<T>(ctx: &Ctx<T>, ex: &mut Exporter<T>) {
    if let Some(mut d) = ex.hold_direct().await {
        ex.backlog = !write_direct(ctx, &mut d).await;
    }
}

/// The exporter's own connection, locked, once it is up (for a backlog).
async fn reconnected(direct: Option<SharedDirect>) -> tokio::sync::OwnedMutexGuard<Direct> {
    match direct {
        Some(d) => {
            let mut g = d.lock_owned().await;
            g.connected().await;
            g
        }
        None => std::future::pending().await,
    }
}

/// Writes the buffered events to the exporter's own connection if it is
/// up, and counts them as handed over (`acked` on core NATS): a connection
/// that breaks under them may lose them, which the next flush reports.
/// `false`: the connection is down, nothing was written.
async fn write_direct<T>(ctx: &Ctx<T>, d: &mut Direct) -> bool {
    if d.buf.is_empty() {
        return true;
    }
    if !d.is_live() {
        return false;
    }
    let c = &ctx.counters;
    // The first since the last confirmation notes the connection it goes out on.
    if d.pending > 0 && c.core_unconfirmed.load(Ordering::Relaxed) == 0 {
        c.core_connects_at.store(d.connects, Ordering::Relaxed);
    }
    // JetStream publishes are not counted here: their acks count them, and
    // a publish lost with a broken connection is retried when its ack is
    // overdue.
    let n = match d.write().await {
        Ok(n) | Err(n) => n,
    };
    c.acked.fetch_add(n, Ordering::Relaxed);
    c.core_unconfirmed.fetch_add(n, Ordering::Relaxed);
    true
}

async fn export_one<T: Serialize + DeserializeOwned + Send + Sync + 'static>(
    ctx: &Ctx<T>,
    sink: &Sink,
    env: &Arc<Envelope<T>>,
    ex: &mut Exporter<T>,
) {
    let c = &ctx.counters;
    if env.header(IMPORTED).is_some() {
        inc(&c.echo_skipped);
        return;
    }
    if let Some(inbox) = env
        .reply_to
        .as_ref()
        .and_then(|r| ctx.inboxes.new_own(r.as_str()))
    {
        // A request of this bus leaves: its replies come back on NATS. The
        // subscription is sent before the request, so the server has it first.
        match ctx.client.subscribe(format!("{inbox}.>")).await {
            Ok(sub) => {
                tokio::spawn(reply_import_loop(ctx.clone(), sub));
                // The request leaves on another connection: the server
                // must have the subscription before it has the request.
                if ex.direct.is_some() {
                    if let Err(e) = round_trip(&ctx.client, FLUSH_TIMEOUT).await {
                        tracing::error!(%inbox, error = %e, "reply inbox subscription not confirmed");
                    }
                }
            }
            Err(e) => tracing::error!(%inbox, error = %e, "cannot subscribe to the reply inbox"),
        }
    }
    let topic = env.topic.as_str();
    // Replies to requests from elsewhere go by core NATS in either mode.
    let reply = topic.starts_with("_INBOX.") && ctx.inboxes.is_remote_reply(topic);
    let encoder = if reply {
        &ex.reply_encoder
    } else {
        &ex.encoder
    };
    if let Some(shared) = &ex.direct {
        // The exporter's own connection: encoded straight into its buffer,
        // written a batch at a time.
        if ex.held.is_none() {
            ex.held = Some(shared.clone().lock_owned().await);
        }
        let Some(d) = ex.held.as_deref_mut() else {
            return;
        };
        let max = d.max_payload();
        // JetStream: with the ack inbox as reply subject, and awaiting the ack.
        let js = match (sink, &ex.acks) {
            (Sink::Js(_), Some(acks)) if !reply => {
                Some((acks.prefix.as_str(), ex.unsettled.next()))
            }
            _ => None,
        };
        match encoder.encode_hpub(env, js, max, &mut d.buf, &mut d.scratch, &mut d.meta) {
            Ok(()) => {
                inc(&c.exported);
                if js.is_some() {
                    let seq = ex.unsettled.open();
                    ex.waiting.insert(seq, Waiting::sent(env, ex.generation));
                } else {
                    d.pending += 1;
                }
                // Counted from here on as pending or waiting, not as in hand.
                ex.busy = false;
                if d.buf.len() >= direct::WRITE_AT && !write_direct(ctx, d).await {
                    ex.backlog = true;
                }
            }
            Err(e) => {
                inc(&c.rejected);
                tracing::error!(error = %e, "event not exported");
            }
        }
        return;
    }
    let wire = match prepare(encoder, env, ex.max_payload) {
        Ok(w) => w,
        Err(e) => {
            inc(&c.rejected);
            tracing::error!(error = %e, "event not exported");
            return;
        }
    };
    inc(&c.exported);
    // Without exports there is no connection of the exporter's own: what
    // comes here are replies to imported requests, core NATS in either mode.
    // The first since the last confirmation notes the connection count,
    // read before the hand-off (a connection lost after it changes the
    // count).
    if c.core_unconfirmed.load(Ordering::Relaxed) == 0 {
        let connects = ex.client_stats.connects.load(Ordering::Relaxed);
        c.core_connects_at.store(connects, Ordering::Relaxed);
    }
    // Waits while the client's buffer is full (backpressure, also during a
    // reconnect); fails only once the client is closed.
    match ctx
        .client
        .publish_with_headers(
            async_nats::Subject::from(wire.subject),
            wire.headers,
            wire.payload,
        )
        .await
    {
        Ok(()) => {
            inc(&c.acked);
            inc(&c.core_unconfirmed);
        }
        Err(e) => {
            inc(&c.rejected);
            tracing::error!(error = %e, "core nats publish failed");
        }
    }
}

/// Encodes an envelope and checks its size against the server's max_payload.
pub(crate) fn prepare<T: Serialize>(
    encoder: &codec::Encoder,
    env: &Envelope<T>,
    max: usize,
) -> Result<Wire, NatsError> {
    let wire = encoder.encode(env)?;
    let size = wire.size();
    if max > 0 && size > max {
        return Err(NatsError::PayloadTooLarge {
            subject: wire.subject,
            id: env.id.to_string(),
            size,
            max,
        });
    }
    Ok(wire)
}

// ----- import -----------------------------------------------------------------

/// Ids an import delivered recently, to drop redelivered duplicates.
pub(crate) struct Dedup<K = EventId> {
    set: HashSet<K>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: std::hash::Hash + Eq + Clone> Dedup<K> {
    pub(crate) fn new(cap: usize) -> Self {
        Dedup {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }
    pub(crate) fn contains<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.set.contains(key)
    }
    pub(crate) fn insert(&mut self, key: K) {
        self.claim(key);
    }
    /// Remembers `key` unless it is known: whether it was new (always true
    /// with no window).
    pub(crate) fn claim(&mut self, key: K) -> bool {
        if self.cap == 0 {
            return true;
        }
        if !self.set.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
    /// Forgets a claimed `key` whose delivery failed (rare: a linear scan).
    pub(crate) fn release(&mut self, key: &K) {
        if self.set.remove(key) {
            self.order.retain(|k| k != key);
        }
    }
}

/// Ids delivered by all of a transport's imports: a message two patterns
/// both match (`a.*` and `*.b`) arrives on each, and goes to the bus once.
pub(crate) type SharedDedup = Arc<std::sync::Mutex<Dedup>>;

/// Locks a shared dedup (a panic elsewhere while it was held leaves it usable).
pub(crate) fn lock_dedup(d: &std::sync::Mutex<Dedup>) -> std::sync::MutexGuard<'_, Dedup> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}

/// The outcome of handing one NATS message to the bus.
pub(crate) enum Delivered {
    /// On the bus (or a known duplicate): ack it.
    Ok,
    /// Undecodable (or refused for good): dead-letter it with this reason.
    Dead(String),
    /// Not delivered for a reason that may pass (the bus's store failed):
    /// have it redelivered later where the server redelivers.
    Retry(String),
    /// The bus is gone: leave it unacked for redelivery.
    BusGone,
}

/// Decodes a message and publishes it on the local bus, returning once every
/// lossless subscriber has it queued.
pub(crate) async fn deliver<T: DeserializeOwned + Send + Sync + 'static>(
    ctx: &Ctx<T>,
    subject: &str,
    headers: Option<&async_nats::HeaderMap>,
    payload: &[u8],
    dedup: Option<&std::sync::Mutex<Dedup>>,
    exhausted: Option<i64>,
) -> Delivered {
    let env = match codec::decode::<T>(subject, headers, payload, ctx.codec) {
        Ok(env) => env,
        Err(e) => return Delivered::Dead(e.to_string()),
    };
    let Some(bus) = ctx.bus.upgrade() else {
        return Delivered::BusGone;
    };
    if env.id.node() == bus.node() {
        // Ours, exported and back: delivered locally when it was published.
        inc(&ctx.counters.import_own);
        return Delivered::Ok;
    }
    let id = env.id;
    if let Some(d) = dedup {
        let mut d = lock_dedup(d);
        // Claimed before delivering, so another import holding the same
        // message meanwhile counts it as a duplicate instead of delivering
        // it. A last delivery only dead-letters: nothing to claim.
        let known = match exhausted {
            Some(_) => d.contains(&id),
            None => !d.claim(id),
        };
        if known {
            inc(&ctx.counters.import_duplicates);
            return Delivered::Ok;
        }
    }
    if let Some(n) = exhausted {
        return Delivered::Dead(format!("delivered {n} times without an ack (max_deliver)"));
    }
    let mut msg = Message::new(env.payload)
        .topic(env.topic.as_str())
        .id(env.id)
        .timestamp(env.timestamp)
        .correlation_id(env.correlation_id)
        .header(IMPORTED, ctx.server.as_str());
    if let Some(s) = env.source {
        msg = msg.source(s);
    }
    if let Some(c) = env.causation_id {
        msg = msg.causation_id(c);
    }
    if let Some(r) = env.reply_to {
        // A request: the reply, sent on this bus, goes back over NATS.
        ctx.inboxes.imported_request(r.as_str());
        msg = msg.reply_to(r);
    }
    for (k, v) in env.headers {
        msg = msg.header(k, v);
    }
    let sent = bus.send(msg).await;
    if let (Err(_), Some(d)) = (&sent, dedup) {
        lock_dedup(d).release(&id);
    }
    match sent {
        Ok(_) => {
            inc(&ctx.counters.imported);
            Delivered::Ok
        }
        Err(busline::PublishError::Closed { .. }) => Delivered::BusGone,
        Err(e @ busline::PublishError::Store { .. }) => Delivered::Retry(e.to_string()),
        Err(e) => Delivered::Dead(e.to_string()),
    }
}

/// The dead-letter subject for a message that arrived on `subject`.
pub(crate) fn dead_subject(prefix: &str, subject: &str) -> String {
    format!("{prefix}.{subject}")
}

/// Builds the dead-letter headers: the original ones plus the reason.
pub(crate) fn dead_headers(
    original: Option<&async_nats::HeaderMap>,
    subject: &str,
    reason: &str,
    deliveries: i64,
) -> async_nats::HeaderMap {
    let mut h = original.cloned().unwrap_or_default();
    // A dead letter is a new message: the server must not drop it as a duplicate of the original.
    let mut clean = async_nats::HeaderMap::new();
    for (k, vs) in h.iter() {
        if AsRef::<str>::as_ref(k) != async_nats::header::NATS_MESSAGE_ID.to_string().as_str() {
            for v in vs {
                clean.append(AsRef::<str>::as_ref(k), v.as_str());
            }
        }
    }
    h = clean;
    let reason: String = reason
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    h.insert(codec::header::DEAD_REASON, reason);
    h.insert(codec::header::DEAD_SUBJECT, subject);
    h.insert(codec::header::DEAD_DELIVERIES, deliveries.to_string());
    h
}

#[cfg(test)]
mod tests {
    use super::Unsettled;

    #[test]
    fn unsettled_tracks_the_lowest_open_sequence() {
        let mut u = Unsettled::default();
        let (a, b, c) = (u.open(), u.open(), u.open());
        assert_eq!((a, b, c, u.below(), u.next()), (0, 1, 2, 0, 3));
        u.settle(b);
        assert_eq!(u.below(), 0);
        u.settle(a);
        assert_eq!(u.below(), 2);
        u.settle(a); // settled twice: ignored
        u.settle(c);
        assert_eq!((u.below(), u.next()), (3, 3));
        assert_eq!(u.open(), 3);
    }
}
