//! Import: NATS messages on the import patterns, delivered to the local bus.
//!
//! Every import pattern gets a subscription (core NATS, [`core`]) or a
//! durable consumer (JetStream, [`jetstream`]), made before
//! [`NatsTransport::connect`](crate::NatsTransport::connect) returns, so a
//! failure is a startup error and nothing published after it is missed.
//! Overlapping patterns would each deliver what they share: only those no
//! other one covers get one, and one [`Dedup`] of delivered ids serves
//! them all, for patterns that partly overlap.
//!
//! Each message is decoded and published on the bus ([`deliver`]) with its
//! envelope metadata intact, plus the header [`IMPORTED`]; a message whose
//! id says this very bus published it is skipped (counted as
//! `import_own`). What cannot be delivered goes to a
//! [dead-letter subject](dead_letter).

mod core;
pub(crate) mod dead_letter;
mod jetstream;
mod seed;

use std::sync::Arc;

use busline::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::codec;
use crate::connection::round_trip;
use crate::dedup::{lock_dedup, Dedup, SharedDedup};
use crate::error::NatsError;
use crate::jetstream::{consumer, durable_name, minimal_cover, Js};
use crate::shared::{Ctx, IMPORTED};
use crate::stats::inc;

/// Ids remembered per core NATS import pattern when there are several (to
/// deliver once what partly overlapping patterns share).
const CORE_OVERLAP_WINDOW: usize = 65_536;

/// Subscribes to every import pattern (JetStream: opens its consumer),
/// starts its import loop, and waits until the server has the
/// subscriptions. A failure names the pattern.
pub(crate) async fn start<T>(
    ctx: &Ctx<T>,
    js: Option<&Js>,
    imports: &[String],
    connect_timeout: std::time::Duration,
) -> Result<Vec<JoinHandle<()>>, NatsError>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let patterns = minimal_cover(imports);
    let window = js.map_or(CORE_OVERLAP_WINDOW, |j| j.cfg.dedup_window);
    let dedup: SharedDedup = Arc::new(std::sync::Mutex::new(Dedup::new(
        window.saturating_mul(patterns.len()),
    )));
    let sub_err = |pattern: &str, detail: String| NatsError::ServerSubscribe {
        server: ctx.server.clone(),
        pattern: pattern.to_string(),
        detail,
    };
    let mut tasks = Vec::new();
    for pattern in &patterns {
        let ctx = ctx.clone();
        tasks.push(match js {
            None => {
                let sub = ctx
                    .client
                    .subscribe(pattern.clone())
                    .await
                    .map_err(|e| sub_err(pattern, e.to_string()))?;
                // One pattern: nothing to meet twice (core NATS never redelivers).
                let d = (patterns.len() > 1).then(|| dedup.clone());
                tokio::spawn(core::import_loop(ctx, sub, d))
            }
            Some(j) => {
                let durable = durable_name(&j.cfg.durable, pattern);
                let first = consumer::open(j, &durable, pattern).await.map_err(|e| {
                    sub_err(pattern, format!("JetStream consumer `{durable}`: {e}"))
                })?;
                tokio::spawn(jetstream::import_loop(
                    ctx,
                    j.clone(),
                    pattern.clone(),
                    first,
                    dedup.clone(),
                ))
            }
        });
    }
    if !imports.is_empty() {
        round_trip(&ctx.client, connect_timeout)
            .await
            .map_err(|detail| sub_err(&imports.join(","), detail))?;
    }
    Ok(tasks)
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
    let (timestamp, causation_id) = (env.timestamp(), env.causation_id());
    let (reply_to, headers) = (env.reply_to().cloned(), env.headers().to_vec());
    let mut msg = Message::new(env.payload)
        .topic(env.topic.as_str())
        .id(env.id)
        .timestamp(timestamp)
        .correlation_id(env.correlation_id)
        .header(IMPORTED, ctx.server.as_str());
    if let Some(s) = env.source {
        msg = msg.source(s);
    }
    if let Some(c) = causation_id {
        msg = msg.causation_id(c);
    }
    if let Some(r) = reply_to {
        // A request: the reply, sent on this bus, goes back over NATS.
        ctx.inboxes.imported_request(r.as_str());
        msg = msg.reply_to(r);
    }
    for (k, v) in headers {
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
