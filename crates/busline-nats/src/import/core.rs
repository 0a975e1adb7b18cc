//! The core NATS import loop: at-most-once, nothing acknowledged. What
//! cannot be delivered now is dead-lettered at once (core NATS never
//! redelivers); a shutdown does not wait for room on the bus.

use serde::de::DeserializeOwned;

use super::dead_letter::{dead_headers, dead_subject};
use super::{deliver, Delivered};
use crate::dedup::SharedDedup;
use crate::shared::{next_or_stop, Ctx};
use crate::stats::inc;

/// `dedup`: shared by the transport's imports when there are several (a
/// message two patterns match comes on each subscription).
pub(crate) async fn import_loop<T>(
    ctx: Ctx<T>,
    mut sub: async_nats::Subscriber,
    dedup: Option<SharedDedup>,
) where
    T: DeserializeOwned + Send + Sync + 'static,
{
    let mut stop = ctx.stop.clone();
    while let Some(msg) = next_or_stop(&mut sub, &mut stop).await {
        // A shutdown does not wait for room on the bus (the message is lost:
        // at-most-once).
        let outcome = tokio::select! {
            _ = stop.changed() => break,
            o = deliver(
                &ctx,
                msg.subject.as_str(),
                msg.headers.as_ref(),
                &msg.payload,
                dedup.as_deref(),
                None,
            ) => o,
        };
        match outcome {
            Delivered::Ok => {}
            // Core NATS never redelivers: what cannot be delivered now is dead.
            Delivered::Dead(reason) | Delivered::Retry(reason) => {
                let h = dead_headers(msg.headers.as_ref(), msg.subject.as_str(), &reason, 1);
                let subject = dead_subject(&ctx.dead_prefix, msg.subject.as_str());
                tracing::warn!(subject = %msg.subject, %reason, "dead letter");
                if ctx
                    .client
                    .publish_with_headers(subject, h, msg.payload.clone())
                    .await
                    .is_ok()
                {
                    inc(&ctx.counters.dead_lettered);
                }
            }
            Delivered::BusGone => break,
        }
    }
    let _ = sub.unsubscribe().await;
}
