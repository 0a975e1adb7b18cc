//! Export: local events on the export patterns, published on NATS.
//!
//! One task, the exporter ([`export_loop`]), takes events off its lossless
//! bus subscriptions ([`subscription`]) in order and writes them as
//! protocol text onto its own [wire connection](wire), a batch at a time
//! ([`batch`]); without exports, replies to imported requests go by the
//! `async-nats` client. On JetStream it keeps up to `max_in_flight`
//! publishes awaiting their acks ([`window`]). It answers flush requests
//! and, at shutdown, sends what it holds ([`run`]). The user-facing
//! contract is in the [`transport`](crate::transport) docs.

mod batch;
mod run;
mod subscription;
mod window;
pub(crate) mod wire;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use busline::{Bus, Pattern};
use futures::stream::FuturesUnordered;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Notify, OwnedMutexGuard};
use tokio::task::JoinHandle;

use self::run::export_run;
use self::subscription::{export_subscription, reply_subscription, ExportSubs};
use self::window::{Unsettled, Waiting, SWEEPS_PER_ACK_TIMEOUT};
use self::wire::WireConnection;
use crate::codec;
use crate::config::NatsConfig;
use crate::connection::round_trip;
use crate::error::NatsError;
use crate::jetstream::publish::{ack_inbox, AckInbox};
use crate::jetstream::Js;
use crate::shared::Ctx;
use crate::stats::Counters;

/// The exporter's wire connection, shared with `shutdown` for the final confirmation.
pub(crate) type SharedWire = Arc<tokio::sync::Mutex<WireConnection>>;

/// Where a flush learns its outcome.
pub(crate) type FlushWaiter = oneshot::Sender<Result<(), NatsError>>;

/// How long a core NATS flush waits for the server's confirmation.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Where publishes go: core NATS, or JetStream (acknowledged, retried).
pub(crate) enum Sink {
    Core,
    Js(Box<Js>),
}

type AckFuture = futures::future::BoxFuture<'static, u64>;

/// What the exporter keeps between events.
pub(crate) struct Exporter<T> {
    encoder: codec::Encoder,
    /// For replies to requests from elsewhere: always core NATS.
    reply_encoder: codec::Encoder,
    max_payload: usize,
    max_in_flight: usize,
    unsettled: Unsettled,
    /// Retries (JetStream), each resolving to its sequence number once acknowledged.
    in_flight: FuturesUnordered<AckFuture>,
    /// Where the server acknowledges first attempts (JetStream).
    acks: Option<AckInbox>,
    /// First attempts awaiting their ack, by sequence number.
    waiting: HashMap<u64, Waiting<T>>,
    generation: u64,
    /// An event taken off the bus queue and not yet sent (or settled).
    busy: bool,
    /// The client's counters (its connection count), fetched once.
    client_stats: Arc<async_nats::Statistics>,
    /// The exporter's own connection, which its events (and replies) are
    /// written to instead of the client (with exports).
    wire: Option<SharedWire>,
    /// `wire`, locked for the batch being exported (one lock a batch).
    held: Option<OwnedMutexGuard<WireConnection>>,
    /// `wire` holds events it could not write (its connection is down):
    /// no more are taken until a connection is back and they are written.
    backlog: bool,
}

impl<T> Exporter<T> {
    /// The exporter's own connection, locked (taking the batch's lock if
    /// it holds one); `None` when exports go by the client.
    async fn hold_wire(&mut self) -> Option<OwnedMutexGuard<WireConnection>> {
        match self.held.take() {
            Some(g) => Some(g),
            None => Some(self.wire.clone()?.lock_owned().await),
        }
    }
}

/// The exporter's side of the transport: where flushes are asked for, and its task.
pub(crate) struct Started {
    pub(crate) flush: mpsc::Sender<FlushWaiter>,
    pub(crate) task: JoinHandle<()>,
}

/// Starts the exporter when there is anything to export: events on the
/// `exports` patterns, or (with imports) replies to imported requests.
/// On JetStream with exports it first subscribes the ack inbox and has the
/// server confirm it, since the publishes leave on the wire connection.
pub(crate) async fn start<T>(
    bus: &Bus<T>,
    ctx: &Ctx<T>,
    cfg: &NatsConfig<T>,
    exports: Vec<Pattern>,
    js: Option<&Js>,
    wire: Option<SharedWire>,
    give_up: Arc<Notify>,
) -> Result<Option<Started>, NatsError>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let (buffer, with_imports) = (cfg.buffer, !cfg.imports.is_empty());
    if exports.is_empty() && !with_imports {
        return Ok(None);
    }
    let sub = ExportSubs {
        exports: if exports.is_empty() {
            None
        } else {
            Some(export_subscription(
                bus,
                exports,
                ctx.inboxes.clone(),
                buffer,
            )?)
        },
        replies: if with_imports {
            Some(reply_subscription(bus, ctx.inboxes.clone(), buffer)?)
        } else {
            None
        },
    };
    let acks_err = |detail: String| NatsError::ServerSubscribe {
        server: ctx.server.clone(),
        pattern: "_INBOX (jetstream acks)".into(),
        detail,
    };
    let acks = match (js, sub.exports.is_some()) {
        (Some(_), true) => Some(ack_inbox(&ctx.client).await.map_err(acks_err)?),
        _ => None,
    };
    if acks.is_some() && wire.is_some() {
        round_trip(&ctx.client, cfg.connect_timeout.max(FLUSH_TIMEOUT))
            .await
            .map_err(acks_err)?;
    }
    let sink = match js {
        None => Sink::Core,
        Some(j) => Sink::Js(Box::new(j.clone())),
    };
    let (flush, flush_rx) = mpsc::channel(16);
    let task = tokio::spawn(export_loop(
        ctx.clone(),
        sub,
        sink,
        acks,
        wire,
        flush_rx,
        give_up,
    ));
    Ok(Some(Started { flush, task }))
}

/// The exporter: takes events off its bus subscription in order, publishes
/// them, and (JetStream) keeps up to `max_in_flight` awaiting their acks.
async fn export_loop<T: Serialize + DeserializeOwned + Send + Sync + 'static>(
    ctx: Ctx<T>,
    mut sub: ExportSubs<T>,
    sink: Sink,
    acks: Option<AckInbox>,
    wire: Option<SharedWire>,
    flush_rx: mpsc::Receiver<FlushWaiter>,
    give_up: Arc<Notify>,
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
        wire,
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
        if let Some(mut d) = ex.hold_wire().await {
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

/// Waits until the server has processed what went out by core NATS (a
/// round trip on the connection it went out on: the exporter's own, else
/// the client's), for at most `timeout`; `FlushTimedOut` (saying it
/// `waited`) otherwise. Then `Reconnected` if that connection is not the
/// one the first unconfirmed event went out on: what a lost connection
/// held may be gone, and nothing else reports it.
pub(crate) async fn confirm_core(
    client: &async_nats::Client,
    wire: Option<&mut WireConnection>,
    c: &Counters,
    server: &str,
    timeout: Duration,
    waited: Duration,
) -> Result<(), NatsError> {
    let confirmed = match wire {
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
