//! The durable pull consumers behind JetStream imports.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};

use super::Js;
use crate::config::JetStreamConfig;

/// A stable id for a JetStream message that carries none (a plain NATS
/// client's): the same at every redelivery, so the import's dedup (and its
/// seeding from the local stores) knows it again. From the stream, the time
/// the server received the message and its sequence.
pub(crate) fn stable_id(stream: &str, published_nanos: i128, seq: u64) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stream.bytes().chain(published_nanos.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}{seq:016x}")
}

/// The server's delivery limit for import consumers: one more than the
/// tries, so the last delivery is the one that dead-letters.
fn max_deliveries(cfg: &JetStreamConfig) -> Option<i64> {
    (cfg.max_deliver > 0).then_some(cfg.max_deliver + 1)
}

/// An import consumer's messages, and the deliveries the server makes of
/// one message (its `max_deliver`; 0 or less: no limit). A consumer that
/// exists already, made with other settings, keeps its own limit, which
/// the import follows.
pub(crate) type Opened = (pull::Stream, i64);

/// Opens the durable pull consumer `durable` on `pattern` (making the
/// stream again if it is gone) and starts pulling from it.
pub(crate) async fn open(js: &Js, durable: &str, pattern: &str) -> Result<Opened, String> {
    let stream = match js.context.get_stream(&js.cfg.stream).await {
        Ok(s) => s,
        Err(e) => {
            // Gone (a memory stream after a server restart): made again.
            tracing::warn!(stream = %js.cfg.stream, error = %e, "stream missing; creating it again");
            js.ensure_streams().await;
            js.context
                .get_stream(&js.cfg.stream)
                .await
                .map_err(|e| e.to_string())?
        }
    };
    let consumer = stream
        .get_or_create_consumer(
            durable,
            pull::Config {
                durable_name: Some(durable.to_string()),
                filter_subject: pattern.to_string(),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                // One delivery more than the tries: the last one only
                // dead-letters the message (see `import_loop`).
                max_deliver: max_deliveries(&js.cfg).unwrap_or(js.cfg.max_deliver),
                ack_wait: js.cfg.ack_wait,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    // Pull requests expire well within ack_wait, so a request left behind by
    // a stopped import cannot take redeliveries for long.
    let expires = (js.cfg.ack_wait / 2).clamp(Duration::from_secs(1), Duration::from_secs(10));
    let limit = consumer.cached_info().config.max_deliver;
    let messages = consumer
        .stream()
        .max_messages_per_batch(256)
        .heartbeat(expires / 4)
        .expires(expires)
        .messages()
        .await
        .map_err(|e| e.to_string())?;
    Ok((messages, limit))
}
