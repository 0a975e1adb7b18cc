//! The JetStream import loop: durable, acknowledged after local delivery.
//!
//! Pulls from the pattern's durable consumer, delivers each message to the
//! bus, and acks it once every lossless subscriber has it queued; reopens
//! the consumer after errors. A reason that may pass (a failing store) is
//! retried in place with in-progress acks; a message that cannot be
//! delivered, or is on its last delivery, is dead-lettered (see
//! [`jetstream`](crate::jetstream), *Dead letters*). A shutdown never waits
//! for room on the bus: the message in hand stays unacked and comes again.

use std::time::Duration;

use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::Message;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use super::dead_letter::{dead_headers, dead_letter_id, dead_subject};
use super::seed::seed_from_stores;
use super::{deliver, Delivered};
use crate::codec;
use crate::dedup::SharedDedup;
use crate::jetstream::consumer::{self, stable_id, Opened};
use crate::jetstream::{backoff, durable_name, Js};
use crate::shared::Ctx;
use crate::stats::inc;

/// Attempts at storing the dead letter of a message on its last delivery
/// (with backoff) before it is given up, logged and counted as lost.
const DEAD_LETTER_ATTEMPTS: u32 = 10;

/// The transport is stopping: the import ends, the message in hand unacked.
struct Stopped;

/// One durable import: pulls, delivers to the bus, acks; reopens after errors.
pub(crate) async fn import_loop<T>(
    ctx: Ctx<T>,
    js: Js,
    pattern: String,
    first: Opened,
    dedup: SharedDedup,
) where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let durable = durable_name(&js.cfg.durable, &pattern);
    if let Some(bus) = ctx.bus.upgrade() {
        seed_from_stores(&bus, &pattern, &dedup).await;
    }
    let mut stop = ctx.stop.clone();
    let mut attempt = 0u32;
    let mut first = Some(first);
    'outer: loop {
        if *stop.borrow() {
            break;
        }
        let opened = match first.take() {
            Some(f) => Ok(f),
            None => consumer::open(&js, &durable, &pattern).await,
        };
        let (mut messages, limit) = match opened {
            Ok(m) => m,
            Err(e) => {
                attempt += 1;
                tracing::warn!(consumer = %durable, error = %e, "cannot open jetstream consumer; retrying");
                tokio::select! {
                    _ = stop.changed() => break 'outer,
                    _ = tokio::time::sleep(backoff(attempt)) => continue 'outer,
                }
            }
        };
        attempt = 0;
        loop {
            let next = tokio::select! {
                _ = stop.changed() => break 'outer,
                m = messages.next() => m,
            };
            let msg = match next {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!(consumer = %durable, error = %e, "jetstream consumer error; reopening");
                    break;
                }
                Some(Ok(m)) => m,
            };
            if let Err(Stopped) = handle(&ctx, &js, &msg, limit, &dedup, &mut stop).await {
                break 'outer;
            }
        }
        tokio::select! {
            _ = stop.changed() => break 'outer,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Delivers one message and acks it, or dead-letters it. `limit`: the
/// deliveries the server makes of one message (0 or less: no limit).
async fn handle<T>(
    ctx: &Ctx<T>,
    js: &Js,
    msg: &Message,
    limit: i64,
    dedup: &SharedDedup,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Stopped>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
    // Tried `max_deliver` times without an ack (the process died with it,
    // say): this delivery, the server's last, dead-letters it.
    let last = limit > 0 && delivered >= limit;
    let headers = with_stable_id(msg);
    let headers = headers.as_ref().or(msg.headers.as_ref());
    let outcome = deliver_retrying(
        ctx,
        msg,
        headers,
        dedup,
        last.then_some(delivered - 1),
        stop,
    )
    .await?;
    match outcome {
        Delivered::Ok => {
            let _ = msg.ack().await;
            Ok(())
        }
        Delivered::Dead(reason) => dead_letter(ctx, js, msg, &reason, delivered, last, stop).await,
        Delivered::BusGone => Err(Stopped),
        Delivered::Retry(_) => unreachable!("retried by deliver_retrying"),
    }
}

/// The headers of a message without an id of its own (a plain NATS
/// client's), with a stable one added: the same at every redelivery, so
/// the import's dedup knows it again. `None`: the message's own headers do.
fn with_stable_id(msg: &Message) -> Option<async_nats::HeaderMap> {
    let h = msg.headers.as_ref();
    if h.and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .is_some()
    {
        return None;
    }
    let info = msg.info().ok()?;
    let mut h = h.cloned().unwrap_or_default();
    h.insert(
        async_nats::header::NATS_MESSAGE_ID,
        stable_id(
            info.stream,
            info.published.unix_timestamp_nanos(),
            info.stream_sequence,
        ),
    );
    Some(h)
}

/// Hands the message to the bus. A reason that may pass (a failing store)
/// is retried here, the message kept with in-progress acks: a negative ack
/// would count as a delivery, and enough of them would dead-letter it.
/// `exhausted`: the deliveries before this last one (it only dead-letters).
/// Waiting for room on the bus does not hold up a shutdown.
async fn deliver_retrying<T>(
    ctx: &Ctx<T>,
    msg: &Message,
    headers: Option<&async_nats::HeaderMap>,
    dedup: &SharedDedup,
    exhausted: Option<i64>,
    stop: &mut watch::Receiver<bool>,
) -> Result<Delivered, Stopped>
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    let mut tries = 0u32;
    loop {
        let o = tokio::select! {
            _ = stop.changed() => return Err(Stopped),
            o = deliver(
                ctx,
                msg.subject.as_str(),
                headers,
                &msg.payload,
                Some(dedup),
                exhausted,
            ) => o,
        };
        match o {
            Delivered::Retry(reason) if exhausted.is_some() => return Ok(Delivered::Dead(reason)),
            Delivered::Retry(reason) => {
                tries += 1;
                tracing::warn!(subject = %msg.subject, %reason, tries, "not delivered; retrying");
                let _ = msg.ack_with(AckKind::Progress).await;
                tokio::select! {
                    _ = stop.changed() => return Err(Stopped),
                    _ = tokio::time::sleep(backoff(tries)) => {}
                }
            }
            o => return Ok(o),
        }
    }
}

/// Publishes the message's dead letter and acks the message. On the
/// server's last delivery nothing comes again, so the dead letter is
/// retried here until it is stored (at most [`DEAD_LETTER_ATTEMPTS`]
/// times); otherwise a failure naks the message for a later try.
async fn dead_letter<T>(
    ctx: &Ctx<T>,
    js: &Js,
    msg: &Message,
    reason: &str,
    delivered: i64,
    last: bool,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Stopped> {
    let mut h = dead_headers(
        msg.headers.as_ref(),
        msg.subject.as_str(),
        reason,
        delivered,
    );
    // The same message dead-lettered again (its ack was lost, or the
    // process died before acking it) is the same dead letter: the server
    // drops the copy within its duplicate window.
    if let Ok(info) = msg.info() {
        h.insert(
            async_nats::header::NATS_MESSAGE_ID,
            dead_letter_id(info.stream, info.consumer, info.stream_sequence),
        );
    }
    let subject = dead_subject(&ctx.dead_prefix, msg.subject.as_str());
    tracing::warn!(subject = %msg.subject, %reason, "dead letter");
    let size = msg.payload.len() + codec::header_bytes(&h);
    let max = ctx.client.server_info().max_payload;
    if max > 0 && size > max {
        // It can never be stored, and coming again would not change that:
        // acknowledged, logged and counted.
        tracing::error!(subject = %msg.subject, size, max, "the dead letter is over the server's max_payload with its headers: the message is lost");
        inc(&ctx.counters.dead_letters_lost);
        let _ = msg.ack().await;
        return Ok(());
    }
    let mut attempt = 0;
    let stored = loop {
        let r = match js
            .context
            .publish_with_headers(subject.clone(), h.clone(), msg.payload.clone())
            .await
        {
            Ok(ack) => ack.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match r {
            Err(e) if last && attempt + 1 >= DEAD_LETTER_ATTEMPTS => {
                // Refused for good (the stream deleted, say): waiting longer
                // would stop the import for every message.
                tracing::error!(subject = %msg.subject, error = %e, attempts = DEAD_LETTER_ATTEMPTS, "dead letter of a message on its last delivery not stored: the message is lost");
                inc(&ctx.counters.dead_letters_lost);
                break Err(e);
            }
            Err(e) if last => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "dead letter not stored on the message's last delivery; retrying");
                tokio::select! {
                    _ = stop.changed() => {
                        tracing::error!(subject = %msg.subject, "stopped before the dead letter of a message on its last delivery was stored: the server will not deliver it again");
                        return Err(Stopped);
                    }
                    _ = tokio::time::sleep(backoff(attempt)) => {}
                }
            }
            r => break r,
        }
    };
    match stored {
        Ok(ack) => {
            if ack.duplicate {
                tracing::debug!(subject = %msg.subject, "dead letter stored before; the message is acked now");
            } else {
                inc(&ctx.counters.dead_lettered);
            }
            let _ = msg.ack().await;
        }
        // Given up on the last delivery (counted above).
        Err(_) if last => {
            let _ = msg.ack().await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "dead letter not stored; will retry");
            let _ = msg
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        }
    }
    Ok(())
}
