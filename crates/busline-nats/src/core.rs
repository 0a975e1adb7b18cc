//! Core NATS: at-most-once, for throw-away streams.
//!
//! Nothing is stored and nothing is acknowledged: an event exported while no
//! process subscribes is gone; when the connection drops, what the client
//! had not yet written to the server is gone (a
//! [`flush`](crate::NatsTransport::flush) covering it then fails with
//! [`NatsError::Reconnected`](crate::NatsError::Reconnected) instead of
//! confirming); an importer that falls behind the server's limits loses
//! messages (reported as `$sys.nats.slow_consumer`). Use it for live
//! metrics where the next value replaces a lost one; use
//! [JetStream](crate::jetstream) for events that must arrive.
//!
//! Undecodable messages go to `<dead_letter_prefix>.<subject>` with the same
//! headers as on JetStream, published with core NATS.

use serde::de::DeserializeOwned;

use crate::transport::{
    dead_headers, dead_subject, deliver, inc, next_or_stop, Ctx, Delivered, SharedDedup,
};

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
