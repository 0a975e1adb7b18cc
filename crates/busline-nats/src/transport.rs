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

use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use busline::{Bus, Pattern};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use crate::config::{Mode, NatsConfig};
use crate::connection::Settings;
use crate::error::NatsError;
use crate::export::wire::{WireConfig, WireConnection};
use crate::export::{self, confirm_core, FlushWaiter, SharedWire};
use crate::inboxes::Inboxes;
use crate::shared::Ctx;
use crate::stats::Counters;
use crate::{import, jetstream, status};

pub use crate::shared::IMPORTED;
pub use crate::stats::TransportStats;
pub use crate::status::{ConnState, Status, StatusEvent};

/// The least time shutdown gives the server to confirm what was sent, even
/// past its deadline.
const FINAL_CONFIRMATION: Duration = Duration::from_secs(1);

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
    give_up: Arc<Notify>,
    shutdown_timeout: Duration,
    tasks: Vec<JoinHandle<()>>,
    /// Where the `$sys.nats.*` events go (for `closed` at shutdown).
    status_events: mpsc::UnboundedSender<StatusEvent>,
    /// The exporter's own connection (with exports).
    wire: Option<SharedWire>,
    _t: PhantomData<fn(T)>,
}

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
        let exports = checked_exports(&cfg)?;
        let settings = Arc::new(Settings::resolve(
            &cfg.server,
            cfg.connect_timeout,
            &cfg.auth,
            &cfg.tls,
        )?);
        let server = cfg.server.clone();
        let (status_tx, status_rx) = watch::channel(Status {
            state: ConnState::Disconnected,
            server: server.clone(),
            reconnects: 0,
            last_error: None,
        });
        let status_tx = Arc::new(status_tx);
        // Status events reach the bus through one task, in order.
        let (events_tx, events_rx) = mpsc::unbounded_channel::<StatusEvent>();
        let (stop_tx, stop_rx) = watch::channel(false);
        let events_task = cfg
            .status_map
            .clone()
            .map(|map| status::spawn_publisher(bus.downgrade(), map, events_rx, stop_rx.clone()));
        let opts = settings
            .client_options()
            .name(&cfg.name)
            .client_capacity(cfg.buffer.max(64))
            .event_callback(status::callback(
                server.clone(),
                status_tx.clone(),
                events_tx.clone(),
            ));
        let client = settings.connect_client(opts).await?;
        // Exports go out on a wire connection of the exporter's own.
        let wire = wire_connection(&cfg, &exports, &settings, &events_tx).await?;
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
        let js = match &cfg.mode {
            Mode::Core => None,
            Mode::JetStream(js) => Some(
                jetstream::setup(
                    &client,
                    &server,
                    &cfg.dead_letter_prefix,
                    js,
                    &cfg.exports,
                    &cfg.imports,
                )
                .await?,
            ),
        };
        let give_up = Arc::new(Notify::new());
        // Importers answer requests: their replies leave through the exporter.
        let exporter = export::start(
            bus,
            &ctx,
            &cfg,
            exports,
            js.as_ref(),
            wire.clone(),
            give_up.clone(),
        )
        .await?;
        let mut tasks: Vec<JoinHandle<()>> = events_task.into_iter().collect();
        tasks.extend(import::start(&ctx, js.as_ref(), &cfg.imports, cfg.connect_timeout).await?);
        let (flush_tx, exporter) = match exporter {
            Some(e) => (Some(e.flush), Some(e.task)),
            None => (None, None),
        };
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
            status_events: events_tx,
            wire,
            _t: PhantomData,
        })
    }
}

/// The exporter's wire connection, with exports: the same settings as
/// the client, named `<name> (exports)`.
async fn wire_connection<T>(
    cfg: &NatsConfig<T>,
    exports: &[Pattern],
    settings: &Arc<Settings>,
    events: &mpsc::UnboundedSender<StatusEvent>,
) -> Result<Option<SharedWire>, NatsError> {
    if exports.is_empty() {
        return Ok(None);
    }
    let wire = WireConnection::connect(WireConfig {
        settings: settings.clone(),
        name: format!("{} (exports)", cfg.name),
        events: events.clone(),
    })
    .await?;
    Ok(Some(Arc::new(tokio::sync::Mutex::new(wire))))
}

/// The export patterns, parsed; the import patterns and the dead-letter
/// prefix checked.
fn checked_exports<T>(cfg: &NatsConfig<T>) -> Result<Vec<Pattern>, NatsError> {
    let exports = parse_patterns(&cfg.exports, "export")?;
    parse_patterns(&cfg.imports, "import")?;
    if cfg.dead_letter_prefix.is_empty() || Pattern::new(&cfg.dead_letter_prefix).is_err() {
        return Err(NatsError::Config(format!(
            "dead letter prefix `{}` is not a valid subject",
            cfg.dead_letter_prefix
        )));
    }
    Ok(exports)
}

fn parse_patterns(ps: &[String], what: &str) -> Result<Vec<Pattern>, NatsError> {
    ps.iter()
        .map(|p| Pattern::new(p).map_err(|e| NatsError::Config(format!("{what} pattern: {e}"))))
        .collect()
}

impl<T> NatsTransport<T> {
    /// The connection status; `changed().await` on it to follow changes.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// The counters so far.
    pub fn stats(&self) -> TransportStats {
        self.counters.snapshot()
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
            let mut held = match &self.wire {
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
