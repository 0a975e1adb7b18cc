//! Exporting events: a batch off a queue, one event at a time, encoded
//! into the wire connection's buffer (or, without exports, handed to the
//! `async-nats` client), and the buffer written.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use busline::{Envelope, RecvError, Subscription};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::OwnedMutexGuard;

use super::window::Waiting;
use super::wire::{WireConnection, WRITE_AT};
use super::{Exporter, SharedWire, Sink};
use crate::codec::{Encoder, Wire};
use crate::error::NatsError;
use crate::jetstream::publish::AckInbox;
use crate::request::subscribe_own_inbox;
use crate::shared::{Ctx, IMPORTED};
use crate::stats::inc;

/// Events taken off the bus queue in one go before the exporter looks at its
/// other inputs again (acks, flush requests, stop): one `select!` per batch
/// instead of one per event.
const EXPORT_BATCH: usize = 64;

/// The same on the exporter's wire connection, where a batch is one write.
const WIRE_BATCH: usize = 1024;

/// Exports what `q` holds now (not what publishers add meanwhile, or it
/// could chase them for ever); `windowed`: waiting for room in the
/// JetStream window (not for replies, which go by core NATS).
pub(crate) async fn drain<T: Serialize + DeserializeOwned + Send + Sync + 'static>(
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
                        release_wire(ctx, ex).await;
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
    release_wire(ctx, ex).await;
}

/// Exports `first` and whatever else `q` holds already (up to a batch),
/// without another `select!`; `windowed`: while the JetStream window has
/// room. Returns whether the bus is closed.
pub(crate) async fn export_batch<T: Serialize + DeserializeOwned + Send + Sync + 'static>(
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
    let limit = if ex.wire.is_some() {
        WIRE_BATCH
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
    release_wire(ctx, ex).await;
    closed
}

/// Writes what the exporter's own connection has buffered, and unlocks it;
/// with the connection down, notes the backlog (written once it is back).
pub(crate) async fn release_wire<T>(ctx: &Ctx<T>, ex: &mut Exporter<T>) {
    if let Some(mut d) = ex.hold_wire().await {
        ex.backlog = !write_wire(ctx, &mut d).await;
    }
}

/// The exporter's own connection, locked, once it is up (for a backlog).
pub(crate) async fn reconnected(wire: Option<SharedWire>) -> OwnedMutexGuard<WireConnection> {
    match wire {
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
pub(crate) async fn write_wire<T>(ctx: &Ctx<T>, d: &mut WireConnection) -> bool {
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

/// Exports one event: skipped if imported (no echo); a request of this bus
/// first gets its reply inbox subscribed; then encoded onto the wire
/// connection, or handed to the client.
async fn export_one<T: Serialize + DeserializeOwned + Send + Sync + 'static>(
    ctx: &Ctx<T>,
    sink: &Sink,
    env: &Arc<Envelope<T>>,
    ex: &mut Exporter<T>,
) {
    if env.header(IMPORTED).is_some() {
        inc(&ctx.counters.echo_skipped);
        return;
    }
    if let Some(reply_to) = env.reply_to() {
        // Its replies come back on NATS. With the wire connection the
        // request leaves on another connection than the subscription: the
        // server must have the subscription before it has the request.
        subscribe_own_inbox(ctx, reply_to.as_str(), ex.wire.is_some()).await;
    }
    let topic = env.topic.as_str();
    // Replies to requests from elsewhere go by core NATS in either mode.
    let reply = topic.starts_with("_INBOX.") && ctx.inboxes.is_remote_reply(topic);
    if ex.wire.is_some() {
        to_wire(ctx, sink, env, ex, reply).await;
    } else {
        to_client(ctx, env, ex, reply).await;
    }
}

/// Encodes the event straight into the wire connection's buffer (on
/// JetStream, with the ack inbox as reply subject, and awaiting the ack),
/// written a batch at a time, or once the buffer holds [`WRITE_AT`] bytes.
async fn to_wire<T: Serialize + DeserializeOwned + Send + Sync + 'static>(
    ctx: &Ctx<T>,
    sink: &Sink,
    env: &Arc<Envelope<T>>,
    ex: &mut Exporter<T>,
    reply: bool,
) {
    let c = &ctx.counters;
    if ex.held.is_none() {
        let Some(shared) = ex.wire.clone() else {
            return;
        };
        ex.held = Some(shared.lock_owned().await);
    }
    let Some(d) = ex.held.as_deref_mut() else {
        return;
    };
    let max = d.max_payload();
    let js = match (sink, &ex.acks) {
        (Sink::Js(_), Some(AckInbox { prefix, .. })) if !reply => {
            Some((prefix.as_str(), ex.unsettled.next()))
        }
        _ => None,
    };
    let encoder = if reply {
        &ex.reply_encoder
    } else {
        &ex.encoder
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
            if d.buf.len() >= WRITE_AT && !write_wire(ctx, d).await {
                ex.backlog = true;
            }
        }
        Err(e) => {
            inc(&c.rejected);
            tracing::error!(error = %e, "event not exported");
        }
    }
}

/// Hands the event to the `async-nats` client. Without exports there is no
/// wire connection: what comes here are replies to imported requests, core
/// NATS in either mode.
async fn to_client<T: Serialize + DeserializeOwned + Send + Sync + 'static>(
    ctx: &Ctx<T>,
    env: &Arc<Envelope<T>>,
    ex: &mut Exporter<T>,
    reply: bool,
) {
    let c = &ctx.counters;
    let encoder = if reply {
        &ex.reply_encoder
    } else {
        &ex.encoder
    };
    let wire = match prepare(encoder, env, ex.max_payload) {
        Ok(w) => w,
        Err(e) => {
            inc(&c.rejected);
            tracing::error!(error = %e, "event not exported");
            return;
        }
    };
    inc(&c.exported);
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
    encoder: &Encoder,
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
