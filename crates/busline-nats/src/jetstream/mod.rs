//! JetStream: at-least-once export and import.
//!
//! ## Export: pipelined, acknowledged, de-duplicated
//!
//! The exporter publishes each event and keeps up to
//! [`max_in_flight`](crate::JetStreamConfig::max_in_flight) publishes awaiting
//! their acks at once, instead of one round trip per event. An event counts as
//! acknowledged when the server has stored it and said so. The first attempt
//! is a plain publish whose reply subject is `<inbox>.<n>` on one inbox the
//! exporter subscribes to at start (on the client, confirmed by the server
//! before the first publish), written as protocol text on the exporter's
//! own connection a batch at a time (see the transport's docs): the
//! server's ack (the answer `async-nats`'s JetStream publish waits for)
//! arrives there, so a publish costs no inbox, channel and timers of its
//! own; overdue acks are found by a sweep twice per timeout. A publish whose ack does not come within one to
//! one and a half [`ack_timeout`](crate::JetStreamConfig::ack_timeout)s (the
//! server restarted, the connection broke, no stream takes the subject:
//! the exporter's connection gets no "no responders" answer), or that the
//! server refuses, is
//! sent again with `async-nats`'s JetStream publish, with backoff, until it
//! is acknowledged. A missing stream, a timeout or a broken connection may
//! pass and is retried for as long as it lasts (logged as a warning every 20
//! attempts), and so is any error answer from the server that may pass (full
//! resources, limits with `DiscardNew`); an event the server refuses three
//! times in a row as over the stream's `max_msg_size` is given up, logged as
//! an error and counted as `rejected`. Every publish carries `Nats-Msg-Id` = the event
//! id, so the server drops a retry of an event it already stored, as long as
//! the retry arrives within the stream's
//! [`duplicate_window`](crate::JetStreamConfig::duplicate_window) (default
//! 2 minutes); such retries are counted as `publish_duplicates`.
//! [`NatsTransport::flush`](crate::NatsTransport::flush) waits until every
//! event published before it is acknowledged.
//!
//! Ordering: events of one publisher are sent in publish order and stored in
//! that order while the connection holds. A retry after a failure may be
//! stored after events published later than it.
//!
//! ## Import: durable, acked after local delivery
//!
//! Each import pattern gets a durable pull consumer named
//! `<durable>_<pattern>` (`.` → `_`, `*` → `STAR`, `>` → `GT`). A message is
//! acknowledged only after `bus.send(..)` has returned, i.e. after every
//! lossless subscriber has it in its queue; a crash before that means the
//! server redelivers it after [`ack_wait`](crate::JetStreamConfig::ack_wait),
//! never that it is lost. A redelivered message whose id this import has
//! already delivered (the last
//! [`dedup_window`](crate::JetStreamConfig::dedup_window) ids) is acked and
//! dropped, counted as `import_duplicates`. An import starts with the ids
//! of the newest events (up to 10,000) on its topics in the bus's own
//! [stores](busline::Bus::persist), so a message stored locally but not
//! acked before a stop or a crash is not stored again when it comes back.
//! Otherwise that memory is gone after a *process* restart, so live
//! subscribers may see an event twice: at-least-once.
//! A message the bus could not take for a reason that may pass (a failing
//! [store](busline::Bus::persist)) is retried in place with backoff (up to
//! a second apart), its ack deadline pushed back meanwhile, until it is
//! delivered or the import stops: not dead-lettered, and the messages after
//! it wait, so their order holds. (A negative ack would count as a
//! delivery, and enough of them would dead-letter a good event.) A shutdown does not wait for a full lossless
//! subscriber: the message it was delivering stays unacked and comes again.
//!
//! ## Dead letters
//!
//! A message that cannot be decoded, or that was delivered
//! [`max_deliver`](crate::JetStreamConfig::max_deliver) times without an ack
//! (a poison message that crashed the process each time; the consumer lets
//! the server deliver it once more, and that delivery only dead-letters it),
//! is published to
//! `<dead_letter_prefix>.<subject>` (stored in the stream `<stream>_DEAD`)
//! with headers `Busline-Dead-Reason`, `Busline-Dead-Subject` and
//! `Busline-Dead-Deliveries`, and then acknowledged; the import goes on. If
//! the dead letter cannot be stored on the server's last delivery of the
//! message (the dead-letter stream is unavailable), the import retries it
//! in place, since nothing would come again: ten attempts with backoff,
//! then the message is given up, logged as an error and counted as
//! `dead_letters_lost` (an import stopped for good would lose more). A dead
//! letter over the server's `max_payload` with its added headers can never
//! be stored: its message is given up at once, the same way.
//!
//! A dead letter carries `Nats-Msg-Id: busline-dead:<stream>:<consumer>:<sequence>`
//! (the original message's place in its stream): if the same message is
//! dead-lettered again by the same consumer (the ack of the first time was
//! lost, or the process died before sending it), the server drops the copy
//! within the dead-letter stream's duplicate window, and `dead_lettered`
//! counts it once.
//!
//! ## What the server's durability means
//!
//! An ack means the server has the message, not necessarily that it is on
//! disk: by default JetStream fsyncs its file store every 2 minutes
//! (`sync_interval`), so a power loss of the server machine can lose events
//! that busline saw acknowledged, although busline did everything right. Set
//! `jetstream { sync_interval: always }` on the server (or run a replicated
//! cluster, `num_replicas: 3`) when that matters. A process crash of
//! `nats-server` alone (SIGKILL) loses nothing acknowledged: the data is in
//! the OS page cache.

pub(crate) mod consumer;
pub(crate) mod publish;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::jetstream::Context;

use crate::config::JetStreamConfig;
use crate::error::NatsError;

/// A JetStream context with its settings.
#[derive(Clone)]
pub(crate) struct Js {
    pub(crate) context: Context,
    pub(crate) cfg: JetStreamConfig,
    /// The streams `setup` made sure of: made again when one is found
    /// missing (a memory stream after a server restart, one deleted).
    pub(crate) streams: Arc<Vec<StreamConfig>>,
}

impl Js {
    /// Creates whichever of this transport's streams is missing.
    pub(crate) async fn ensure_streams(&self) {
        for cfg in self.streams.iter() {
            if let Err(e) = self.context.get_or_create_stream(cfg.clone()).await {
                tracing::debug!(stream = %cfg.name, error = %e, "cannot create the stream again yet");
            }
        }
    }
}

/// Whether every subject `inner` matches is matched by `outer`.
fn covers(outer: &str, inner: &str) -> bool {
    let (o, i): (Vec<&str>, Vec<&str>) = (outer.split('.').collect(), inner.split('.').collect());
    for (k, ot) in o.iter().enumerate() {
        if *ot == ">" {
            return i.len() > k;
        }
        let Some(it) = i.get(k) else { return false };
        if *it == ">" {
            return false;
        }
        if *ot != "*" && ot != it {
            return false;
        }
    }
    o.len() == i.len()
}

/// The patterns without those another one already covers (a stream rejects overlaps).
pub(crate) fn minimal_cover(patterns: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in patterns {
        if out.iter().any(|o| covers(o, p)) {
            continue;
        }
        out.retain(|o| !covers(p, o));
        out.push(p.clone());
    }
    out
}

/// Consumer name for an import pattern: one per pattern. The short form
/// (`.` → `_`, `*` → `STAR`, `>` → `GT`) is kept where it names one
/// pattern only (no `_` in it, no token `STAR` or `GT`); any other pattern is
/// escaped byte by byte after a `__` no short form has.
pub(crate) fn durable_name(prefix: &str, pattern: &str) -> String {
    let short = pattern
        .split('.')
        .all(|t| !t.contains('_') && t != "STAR" && t != "GT");
    if short {
        let p = pattern
            .replace('.', "_")
            .replace('*', "STAR")
            .replace('>', "GT");
        return format!("{prefix}_{p}");
    }
    let mut s = format!("{prefix}__");
    for b in pattern.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            s.push(b as char);
        } else {
            s.push_str(&format!("_{b:02X}"));
        }
    }
    s
}

/// Makes sure the transport's streams exist: the one for its exports and
/// imports (`cfg.stream`, on `cfg.subjects` or else the patterns' cover)
/// and, with imports, the dead-letter stream `<stream>_DEAD` on
/// `<dead_prefix>.>`.
pub(crate) async fn setup(
    client: &async_nats::Client,
    server: &str,
    dead_prefix: &str,
    cfg: &JetStreamConfig,
    exports: &[String],
    imports: &[String],
) -> Result<Js, NatsError> {
    let mut context = async_nats::jetstream::new(client.clone());
    context.set_timeout(cfg.ack_timeout);
    let subjects = if cfg.subjects.is_empty() {
        let all: Vec<String> = exports.iter().chain(imports).cloned().collect();
        minimal_cover(&all)
    } else {
        cfg.subjects.clone()
    };
    let storage = if cfg.file_storage {
        StorageType::File
    } else {
        StorageType::Memory
    };
    let err = |name: &str, e: String| NatsError::JetStreamSetup {
        name: name.to_string(),
        server: server.to_string(),
        detail: e,
    };
    let mut streams = Vec::new();
    if !subjects.is_empty() {
        streams.push(StreamConfig {
            name: cfg.stream.clone(),
            subjects,
            duplicate_window: cfg.duplicate_window,
            storage,
            max_age: cfg.max_age,
            ..Default::default()
        });
    }
    if !imports.is_empty() {
        streams.push(StreamConfig {
            name: format!("{}_DEAD", cfg.stream),
            subjects: vec![format!("{}.>", dead_prefix)],
            storage,
            ..Default::default()
        });
    }
    for s in &streams {
        context
            .get_or_create_stream(s.clone())
            .await
            .map_err(|e| err(&s.name, e.to_string()))?;
    }
    Ok(Js {
        context,
        cfg: cfg.clone(),
        streams: Arc::new(streams),
    })
}

/// The pause before retry `attempt`: 50 ms doubled `attempt` times, at most 1 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((50u64 << attempt.min(5)).min(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cover() {
        assert!(covers("a.>", "a.b.c"));
        assert!(covers("a.*", "a.b"));
        assert!(!covers("a.*", "a.b.c"));
        assert!(!covers("a.b", "a.*"));
        assert!(covers(">", "a"));
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            minimal_cover(&v(&["a.b", "a.>", "c", "a.*"])),
            v(&["a.>", "c"])
        );
        assert_eq!(durable_name("d", "a.*.>"), "d_a_STAR_GT");
        assert_ne!(durable_name("d", "a.b"), durable_name("d", "a_b"));
        assert_ne!(durable_name("d", "a.*"), durable_name("d", "a.STAR"));
    }
}
