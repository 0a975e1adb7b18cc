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

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::jetstream::Context;
use futures::future::BoxFuture;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use busline::Envelope;

use crate::codec::{self, Codec};
use crate::config::JetStreamConfig;
use crate::error::NatsError;
use crate::transport::{
    dead_headers, dead_subject, deliver, inc, lock_dedup, Counters, Ctx, Dedup, Delivered,
    SharedDedup,
};

/// A JetStream context with its settings.
#[derive(Clone)]
pub(crate) struct Js {
    pub context: Context,
    pub cfg: JetStreamConfig,
    /// The streams `setup` made sure of: made again when one is found
    /// missing (a memory stream after a server restart, one deleted).
    pub streams: Arc<Vec<StreamConfig>>,
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

/// A stable id for a JetStream message that carries none (a plain NATS
/// client's): the same at every redelivery, so the import's dedup (and its
/// seeding from the local stores) knows it again. From the stream, the time
/// the server received the message and its sequence.
fn stable_id(stream: &str, published_nanos: i128, seq: u64) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stream.bytes().chain(published_nanos.to_le_bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}{seq:016x}")
}

pub(crate) async fn setup<T>(
    ctx: &Ctx<T>,
    cfg: &JetStreamConfig,
    exports: &[String],
    imports: &[String],
) -> Result<Js, NatsError> {
    let mut context = async_nats::jetstream::new(ctx.client.clone());
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
        server: ctx.server.clone(),
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
            subjects: vec![format!("{}.>", ctx.dead_prefix)],
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

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((50u64 << attempt.min(5)).min(1000))
}

/// Where the server acknowledges this exporter's publishes: each one is
/// written on the exporter's own connection with the reply subject
/// `<prefix>.<seq>` (see `Encoder::encode_hpub`), and the
/// server's answer (the same one `async-nats`'s JetStream publish waits
/// for) comes back on one subscription to `<prefix>.*`, instead of one
/// inbox, channel and timer per publish.
pub(crate) struct AckInbox {
    pub prefix: String,
    pub sub: async_nats::Subscriber,
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

/// Attempts at storing the dead letter of a message on its last delivery
/// (with backoff) before it is given up, logged and counted as lost.
const DEAD_LETTER_ATTEMPTS: u32 = 10;

/// The server's delivery limit for import consumers: one more than the
/// tries, so the last delivery is the one that dead-letters.
fn max_deliveries(cfg: &JetStreamConfig) -> Option<i64> {
    (cfg.max_deliver > 0).then_some(cfg.max_deliver + 1)
}

/// An import consumer's messages, and the deliveries the server makes of
/// one message (its `max_deliver`; 0 or less: no limit). A consumer made by
/// an earlier version keeps its own limit, which the import follows.
pub(crate) type Opened = (pull::Stream, i64);

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

/// The `Nats-Msg-Id` of the dead letter for the message at `seq` in
/// `stream`, as consumer `consumer` saw it: one per message and consumer,
/// so a second copy is dropped by the server as a duplicate while two
/// consumers that both cannot decode a message each leave their own.
pub(crate) fn dead_letter_id(stream: &str, consumer: &str, seq: u64) -> String {
    format!("busline-dead:{stream}:{consumer}:{seq}")
}

/// Events read back from the end of each local store at the start of an
/// import (at most; and at most the dedup window).
const SEED_LIMIT: u64 = 10_000;

/// Puts the ids of the newest events on `pattern`'s topics in the bus's own
/// stores into `dedup`. A message the import had stored locally but not yet
/// acked when it stopped (a shutdown while a lossless subscriber was full,
/// a crash) comes again from the server; it is then known, acked and
/// dropped, not stored a second time. Best effort: a store that cannot be
/// read is logged and skipped (the event may then be stored twice).
async fn seed_from_stores<T: Send + Sync + 'static>(
    bus: &busline::Bus<T>,
    pattern: &str,
    dedup: &std::sync::Mutex<Dedup>,
) {
    let Ok(pattern) = busline::Pattern::new(pattern) else {
        return;
    };
    let limit = SEED_LIMIT.min(lock_dedup(dedup).capacity() as u64);
    if limit == 0 {
        return;
    }
    for (persisted, store) in bus.persisted() {
        if !persisted.overlaps(&pattern) {
            continue;
        }
        let p = pattern.clone();
        // Reading may block on disk.
        let read = tokio::task::spawn_blocking(move || {
            let end = store.end();
            let events = store.read(end.saturating_sub(limit), end)?;
            let mut ids = Vec::new();
            for e in events {
                let e = e?;
                if p.matches(&e.topic) {
                    ids.push(e.id);
                }
            }
            Ok::<_, busline::StoreError>(ids)
        })
        .await;
        match read {
            Ok(Ok(ids)) => {
                let mut d = lock_dedup(dedup);
                ids.into_iter().for_each(|id| d.insert(id));
            }
            Ok(Err(e)) => {
                tracing::warn!(pattern = %pattern, error = %e, "cannot read the local store's newest events: an event stored before a restart but not acked may be stored again")
            }
            Err(e) => {
                tracing::warn!(pattern = %pattern, error = %e, "reading the local store's newest events failed")
            }
        }
    }
}

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
            None => open(&js, &durable, &pattern).await,
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
            let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
            // Tried `max_deliver` times without an ack (the process died
            // with it, say): this delivery, the server's last, dead-letters it.
            let last = limit > 0 && delivered >= limit;
            let exhausted = last;
            // Waiting for room on the bus must not hold up a shutdown: the
            // message is left unacked and comes again.
            // A message without an id of its own gets a stable one.
            let derived;
            let headers = match (msg.headers.as_ref(), msg.info()) {
                (h, Ok(info))
                    if h.and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                        .is_none() =>
                {
                    let mut h = h.cloned().unwrap_or_default();
                    h.insert(
                        async_nats::header::NATS_MESSAGE_ID,
                        stable_id(
                            info.stream,
                            info.published.unix_timestamp_nanos(),
                            info.stream_sequence,
                        ),
                    );
                    derived = h;
                    Some(&derived)
                }
                (h, _) => h,
            };
            // A reason that may pass (a failing store) is retried here, the
            // message kept with in-progress acks: a negative ack would count
            // as a delivery, and enough of them would dead-letter it.
            let mut tries = 0u32;
            let outcome = loop {
                let o = tokio::select! {
                    _ = stop.changed() => break 'outer,
                    o = deliver(
                        &ctx,
                        msg.subject.as_str(),
                        headers,
                        &msg.payload,
                        Some(&dedup),
                        exhausted.then_some(delivered - 1),
                    ) => o,
                };
                match o {
                    Delivered::Retry(reason) if exhausted => break Delivered::Dead(reason),
                    Delivered::Retry(reason) => {
                        tries += 1;
                        tracing::warn!(subject = %msg.subject, %reason, tries, "not delivered; retrying");
                        let _ = msg.ack_with(AckKind::Progress).await;
                        tokio::select! {
                            _ = stop.changed() => break 'outer,
                            _ = tokio::time::sleep(backoff(tries)) => {}
                        }
                    }
                    o => break o,
                }
            };
            match outcome {
                Delivered::Ok => {
                    let _ = msg.ack().await;
                }
                Delivered::Retry(_) => unreachable!("handled above"),
                Delivered::Dead(reason) => {
                    let mut h = dead_headers(
                        msg.headers.as_ref(),
                        msg.subject.as_str(),
                        &reason,
                        delivered,
                    );
                    // The same message dead-lettered again (its ack was lost,
                    // or the process died before acking it) is the same dead
                    // letter: the server drops the copy within its duplicate window.
                    if let Ok(info) = msg.info() {
                        h.insert(
                            async_nats::header::NATS_MESSAGE_ID,
                            dead_letter_id(info.stream, info.consumer, info.stream_sequence),
                        );
                    }
                    let subject = dead_subject(&ctx.dead_prefix, msg.subject.as_str());
                    tracing::warn!(subject = %msg.subject, %reason, "dead letter");
                    // On the server's last delivery nothing comes again: the
                    // dead letter is retried here until it is stored.
                    let mut attempt = 0;
                    let size = msg.payload.len() + codec::header_bytes(&h);
                    let max = ctx.client.server_info().max_payload;
                    if max > 0 && size > max {
                        // It can never be stored, and coming again would not
                        // change that: acknowledged, logged and counted.
                        tracing::error!(subject = %msg.subject, size, max, "the dead letter is over the server's max_payload with its headers: the message is lost");
                        inc(&ctx.counters.dead_letters_lost);
                        let _ = msg.ack().await;
                        continue;
                    }
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
                                // Refused for good (over max_payload with its
                                // headers, the stream deleted): waiting longer
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
                                        break 'outer;
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
                }
                Delivered::BusGone => break 'outer,
            }
        }
        tokio::select! {
            _ = stop.changed() => break 'outer,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

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
