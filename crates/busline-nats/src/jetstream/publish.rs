//! Acknowledged publishes: the exporter's ack inbox, the server's answers,
//! and the retry of a publish until it is acknowledged.

use std::sync::Arc;

use busline::Envelope;
use futures::future::BoxFuture;
use serde::Serialize;

use super::{backoff, Js};
use crate::codec::{self, Codec};
use crate::stats::{inc, Counters};

/// Where the server acknowledges this exporter's publishes: each one is
/// written on the exporter's own connection with the reply subject
/// `<prefix>.<seq>` (see `Encoder::encode_hpub`), and the
/// server's answer (the same one `async-nats`'s JetStream publish waits
/// for) comes back on one subscription to `<prefix>.*`, instead of one
/// inbox, channel and timer per publish.
pub(crate) struct AckInbox {
    pub(crate) prefix: String,
    pub(crate) sub: async_nats::Subscriber,
}

pub(crate) async fn ack_inbox(client: &async_nats::Client) -> Result<AckInbox, String> {
    let prefix = client.new_inbox();
    let sub = client
        .subscribe(format!("{prefix}.*"))
        .await
        .map_err(|e| e.to_string())?;
    Ok(AckInbox { prefix, sub })
}

/// The sequence number an ack message answers.
pub(crate) fn acked_seq(msg: &async_nats::Message) -> Option<u64> {
    msg.subject.as_str().rsplit('.').next()?.parse().ok()
}

/// What the server said to a publish.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AckReply {
    /// Stored (or a duplicate of a stored message).
    Stored { duplicate: bool },
    /// Not stored: retry.
    Failed(String),
}

#[derive(serde::Deserialize)]
struct PubAck {
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    duplicate: bool,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

pub(crate) fn parse_ack(status: Option<async_nats::StatusCode>, payload: &[u8]) -> AckReply {
    if let Some(s) = status {
        // 503: no stream takes the subject (or JetStream is unavailable).
        return AckReply::Failed(format!("server status {s}"));
    }
    match serde_json::from_slice::<PubAck>(payload) {
        Ok(PubAck { error: Some(e), .. }) => AckReply::Failed(format!("jetstream error {e}")),
        Ok(PubAck {
            stream: Some(_),
            duplicate,
            ..
        }) => AckReply::Stored { duplicate },
        Ok(_) => AckReply::Failed("an ack without a stream".into()),
        Err(e) => AckReply::Failed(format!("unreadable ack: {e}")),
    }
}

impl Js {
    /// Re-sends `env` (encoded again: same id, same bytes) with `async-nats`'s
    /// JetStream publish, with backoff, until it is acknowledged; resolves
    /// to `seq`. `failure` is why the previous attempt did not count (`None`:
    /// there was none, send at once).
    pub(crate) fn retry<T: Serialize + Send + Sync + 'static>(
        &self,
        env: Arc<Envelope<T>>,
        codec: Codec,
        c: Arc<Counters>,
        seq: u64,
        failure: Option<String>,
    ) -> BoxFuture<'static, u64> {
        let context = self.context.clone();
        let js = self.clone();
        Box::pin(async move {
            let mut failure = failure;
            let mut attempt = 0u32;
            // Answers in a row where the server refused the event itself.
            let mut refused = 0;
            loop {
                if let Some(why) = failure.take() {
                    attempt += 1;
                    inc(&c.retried);
                    if attempt % 20 == 0 {
                        tracing::warn!(subject = %env.topic, id = %env.id, attempt, error = %why, "jetstream publish still not acknowledged; retrying");
                    } else {
                        tracing::debug!(subject = %env.topic, id = %env.id, attempt, error = %why, "jetstream publish not acknowledged; retrying");
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
                let wire = match codec::encode(&env, codec, true) {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::error!(error = %e, "re-encoding for a retry failed");
                        return seq;
                    }
                };
                let sent = context
                    .publish_with_headers(
                        async_nats::Subject::from(wire.subject),
                        wire.headers,
                        wire.payload,
                    )
                    .await;
                let (why, permanent) = match sent {
                    Ok(ack) => {
                        match ack.await {
                            Ok(ack) => {
                                if ack.duplicate {
                                    inc(&c.publish_duplicates);
                                }
                                inc(&c.acked);
                                return seq;
                            }
                            // Over the stream's message size: sending it again
                            // gets the same answer. Anything else (a missing
                            // stream, full resources, limits with DiscardNew, a
                            // timeout, a broken connection) may pass.
                            Err(e) => {
                                if e.kind() == async_nats::jetstream::context::PublishErrorKind::StreamNotFound {
                                // Gone (a memory stream after a server restart): made again.
                                js.ensure_streams().await;
                            }
                                let permanent = std::error::Error::source(&e)
                                .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
                                .is_some_and(|j| {
                                    j.error_code()
                                        == async_nats::jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
                                });
                                (e.to_string(), permanent)
                            }
                        }
                    }
                    Err(e) => (e.to_string(), false),
                };
                refused = if permanent { refused + 1 } else { 0 };
                if refused >= REFUSALS_TO_REJECT {
                    inc(&c.rejected);
                    tracing::error!(subject = %env.topic, id = %env.id, error = %why, "jetstream refuses this event; it is not exported");
                    return seq;
                }
                failure = Some(why);
            }
        })
    }
}

/// Refusals in a row (the server answering that the event is over the
/// stream's maximum message size) after which a JetStream export gives the
/// event up, counted as rejected.
const REFUSALS_TO_REJECT: u32 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks() {
        assert_eq!(
            parse_ack(None, br#"{"stream":"S","seq":3}"#),
            AckReply::Stored { duplicate: false }
        );
        assert_eq!(
            parse_ack(None, br#"{"stream":"S","seq":3,"duplicate":true}"#),
            AckReply::Stored { duplicate: true }
        );
        assert!(matches!(
            parse_ack(None, br#"{"error":{"code":503,"description":"no"}}"#),
            AckReply::Failed(_)
        ));
        assert!(matches!(
            parse_ack(Some(async_nats::StatusCode::NO_RESPONDERS), b""),
            AckReply::Failed(_)
        ));
        assert!(matches!(parse_ack(None, b"x"), AckReply::Failed(_)));
    }
}
