//! Dead letters: where a message goes that cannot be delivered.
//!
//! It is published to `<dead_letter_prefix>.<subject>` with its headers
//! (without its `Nats-Msg-Id`: a dead letter is a new message) plus
//! `Busline-Dead-Reason`, `Busline-Dead-Subject` and
//! `Busline-Dead-Deliveries`. On JetStream it carries a `Nats-Msg-Id` of
//! its own ([`dead_letter_id`]), so the same message dead-lettered twice
//! is stored once.

use crate::codec;

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

/// The `Nats-Msg-Id` of the dead letter for the message at `seq` in
/// `stream`, as consumer `consumer` saw it: one per message and consumer,
/// so a second copy is dropped by the server as a duplicate while two
/// consumers that both cannot decode a message each leave their own.
pub(crate) fn dead_letter_id(stream: &str, consumer: &str, seq: u64) -> String {
    format!("busline-dead:{stream}:{consumer}:{seq}")
}
