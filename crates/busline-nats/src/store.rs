//! A durable [`EventStore`] on JetStream: persist the bus's topics in a
//! stream on the NATS server instead of a local log.
//!
//! [`JetStreamStore`] keeps the events of every topic the bus
//! [persists](busline::Bus::persist) to it in one JetStream stream (file
//! storage by default), in the order the server stored them:
//!
//! * **Subjects.** An event on topic `t` is stored on subject `<prefix>.t`
//!   ([`JetStreamStoreConfig::subject_prefix`], default `busline.store`); the
//!   stream captures `<prefix>.>`. Not on `t` itself: a stream captures every
//!   publish on its subjects, so the [transport](crate::transport)'s exports
//!   of the same topics (core or JetStream) would land in the store twice and
//!   its own JetStream stream could not overlap it.
//! * **Offsets.** offset = stream sequence − 1: dense from 0 as long as
//!   nothing is removed from the stream. The metadata travels in the headers
//!   the transport's [`codec`] writes, with `Nats-Msg-Id` = the
//!   event id.
//! * **Append** publishes and resolves once the server's `PubAck` arrives.
//!   A publish that fails or gets no ack (the server restarted, the
//!   connection broke) is sent again with the same `Nats-Msg-Id` until the
//!   store's [`timeout`](JetStreamStoreConfig::timeout) has passed; the server
//!   stores it once (within the stream's duplicate window, 2 minutes by
//!   default), and a duplicate's ack names the first copy's sequence. An
//!   event larger than the server's `max_payload` (payload and headers)
//!   is refused at once with an error naming both sizes, without a
//!   publish; other errors the server would repeat are retried until the
//!   timeout before they are returned.
//! * **`end`** is kept locally: the stream's last sequence when the store was
//!   opened, then raised by every ack this store receives. Events other
//!   writers append to the same stream meanwhile are not counted (not
//!   replayed by this store's subscribers) until this store appends them too
//!   (below) or is opened again.
//! * **Reads** (`read`, `offset_for_time`, `committed_offset`) are answered by
//!   the server. The [`EventStore`] trait calls them synchronously (from
//!   `subscribe` and while a subscription replays), so the store runs its own
//!   small tokio runtime on a helper thread with its own connection, does the
//!   work there and blocks the caller on a channel, for at most twice the
//!   timeout. That works from any runtime, `current_thread` included, since
//!   nothing the caller's thread would have to run is involved. A replay reads
//!   through an ordered consumer starting at the wanted sequence, in batches.
//!   `offset_for_time` binary-searches the envelopes' own timestamps (as the
//!   in-memory store and the log do), with one message get per step.
//! * **Named consumers' offsets** are kept in a second stream
//!   ([`offsets_stream`](JetStreamStoreConfig::offsets_stream), default
//!   `<stream>_OFFSETS`) that keeps the last message per subject, one subject
//!   `<prefix>-offsets.<consumer>` per consumer (a name longer than 200
//!   bytes as a subject token is a 128-bit hash of it, and the stored value
//!   names the consumer too, so two names never share a commit): what a JetStream key-value
//!   bucket is underneath, made directly because `async-nats` 0.42's bucket
//!   creation fails against the nats-server 2.9 these tests run on. `commit_offset` resolves
//!   once the server has acknowledged the publish; `committed_offset` gets
//!   the subject's last message. Not durable JetStream consumers: the bus,
//!   not the server, decides what a consumer has handled, and a commit is
//!   one acknowledged publish.
//!
//! ## Two buses, one stream
//!
//! A bus that imports events over the [transport](crate::transport) and
//! persists the same topics to a store on the same stream as the exporting
//! bus appends each imported copy again; the server recognises it by its
//! `Nats-Msg-Id` and acknowledges it with the first copy's sequence, so both
//! buses see one log with the same offsets (tested: `tests/conformance.rs`).
//! That holds within the stream's duplicate window: a copy imported later
//! than that (the importer was down for longer) is stored a second time.
//!
//! ## Removed events
//!
//! Limits (`max_age`, `max_msgs`, …), purges and deletes remove events from
//! the stream; offsets stay as they were (sequences are never reused), so the
//! removed offsets cannot be read any more. `read` then fails with a
//! [`StoreError`] naming the stream and the first offset that is gone (as
//! does a replay item, if an event is removed while it is being read):
//! never other events in their place. The store itself sets no limits.
//!
//! ## What an acknowledged event means
//!
//! The server acknowledges an event once it has stored it, which with the
//! server's default `sync_interval` (2 minutes) means it is in the OS page
//! cache, not necessarily on disk: killing `nats-server` loses nothing
//! acknowledged (tested), but a power loss or a kernel crash of the server's
//! machine can lose what was acknowledged in the last interval. Configure the
//! server with `jetstream { sync_interval: always }` (every write is fsynced
//! before the ack) or use a replicated stream when that matters; the embedded
//! log (`busline-log`) acknowledges only after an fsync of its own.
//!
//! ```
//! use std::sync::Arc;
//! use busline::{Bus, StartAt};
//! use busline_nats::server::NatsServer;
//! use busline_nats::store::{JetStreamStore, JetStreamStoreConfig};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! # let server = NatsServer::start().expect("nats-server");
//! let cfg = JetStreamStoreConfig::new(server.url()).stream("ORDERS");
//! let store = Arc::new(JetStreamStore::<String>::open(cfg.clone()).await.unwrap());
//! let bus = Bus::new();
//! bus.persist("orders.>", store).unwrap();
//! // Delivered once the server has acknowledged it.
//! bus.publish_to("orders.new", "42 widgets".to_string()).await.unwrap();
//! drop(bus);
//!
//! // Another process (here: a new bus and store) replays it from the server.
//! let bus = Bus::new();
//! bus.persist("orders.>", Arc::new(JetStreamStore::<String>::open(cfg).await.unwrap())).unwrap();
//! let mut sub = bus.subscriber("orders.>").from(StartAt::Beginning).subscribe().unwrap();
//! let e = sub.recv().await.unwrap();
//! assert_eq!((e.payload.as_str(), e.offset), ("42 widgets", Some(0)));
//! # }
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::stream::{
    Config as StreamConfig, LastRawMessageErrorKind, StorageType, Stream,
};
use async_nats::jetstream::Context;
use busline::store::{EventStore, StoreError, StoredEvents};
use busline::Envelope;
use futures::future::BoxFuture;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::codec::{self, Codec, Encoder};
use crate::config::{Auth, Tls};
use crate::connection::Settings;

/// Settings of a [`JetStreamStore`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JetStreamStoreConfig {
    /// The server (`nats://host:port`; several separated by commas).
    pub server: String,
    /// Credentials.
    pub auth: Auth,
    /// TLS.
    pub tls: Tls,
    /// The stream's name (default `BUSLINE_STORE`).
    pub stream: String,
    /// Events on topic `t` are stored on subject `<subject_prefix>.t` (default `busline.store`).
    pub subject_prefix: String,
    /// The stream of named consumers' offsets (default `<stream>_OFFSETS`).
    pub offsets_stream: Option<String>,
    /// File storage (default) or memory (lost when the server stops).
    pub file_storage: bool,
    /// How new events' payloads are encoded (reading decodes by each event's own codec).
    pub codec: Codec,
    /// How long one operation may take, retries included (default 10 s); one
    /// attempt of a request to the server gets a quarter of it.
    pub timeout: Duration,
    /// The stream's duplicate window, when the store creates the stream (default 2 minutes).
    pub duplicate_window: Duration,
}

impl JetStreamStoreConfig {
    /// Defaults for `server`.
    pub fn new(server: impl Into<String>) -> Self {
        JetStreamStoreConfig {
            server: server.into(),
            auth: Auth::None,
            tls: Tls::default(),
            stream: "BUSLINE_STORE".into(),
            subject_prefix: "busline.store".into(),
            offsets_stream: None,
            file_storage: true,
            codec: Codec::Json,
            timeout: Duration::from_secs(10),
            duplicate_window: Duration::from_secs(120),
        }
    }

    /// The stream's name.
    pub fn stream(mut self, name: impl Into<String>) -> Self {
        self.stream = name.into();
        self
    }

    /// The subject prefix.
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.subject_prefix = prefix.into();
        self
    }

    /// Credentials.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// TLS.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// The payload codec.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// The per-operation timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn offsets_name(&self) -> String {
        self.offsets_stream
            .clone()
            .unwrap_or_else(|| format!("{}_OFFSETS", self.stream))
    }
}

/// What the helper runtime's tasks need.
#[derive(Clone)]
struct Remote {
    /// The helper's connection (for the server's `max_payload`).
    client: async_nats::Client,
    js: Context,
    stream: Stream,
    offsets: Stream,
    offsets_name: String,
    name: String,
    prefix: String,
    codec: Codec,
    timeout: Duration,
}

/// Owns the helper runtime; shuts it down without waiting when dropped.
struct Helper(Option<tokio::runtime::Runtime>);

impl Drop for Helper {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A durable [`EventStore`] in a JetStream stream (see the [module docs](self)).
pub struct JetStreamStore<T> {
    remote: Remote,
    handle: tokio::runtime::Handle,
    end: Arc<AtomicU64>,
    encoder: Encoder,
    _helper: Arc<Helper>,
    _events: PhantomData<fn() -> T>,
}

/// Retries `op` until it succeeds or `timeout` has passed (each attempt is bounded too).
async fn retrying<R, F, Fut>(timeout: Duration, mut op: F) -> Result<R, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<R, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(20);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let err = match tokio::time::timeout(left, op()).await {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(e)) => e,
            Err(_) => format!("no answer within {timeout:?}"),
        };
        if tokio::time::Instant::now() + delay >= deadline {
            return Err(err);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// Longest escaped consumer name used as it is in a subject; a longer one
/// (the server refuses a protocol line over 4 KiB) becomes a hash.
const KV_KEY_MAX: usize = 200;

/// A consumer name as a subject token: `[A-Za-z0-9_-]` as they are, other
/// bytes `=XX`; past [`KV_KEY_MAX`] bytes that way, `~` and a 128-bit hash
/// of the name (the stored value then also holds the name, see [`kv_value`]).
fn kv_key(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    if out.is_empty() {
        out.push('=');
    }
    if out.len() > KV_KEY_MAX {
        return format!("~{:032x}", fnv1a_128(name.as_bytes()));
    }
    out
}

/// FNV-1a, 128 bits: stable across builds and platforms (a subject made
/// from it must mean the same after an upgrade).
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ b as u128).wrapping_mul(PRIME))
}

/// The value stored for a commit: the offset, and for a hashed key the
/// name after a space (so a read can tell another name with the same hash).
fn kv_value(name: &str, offset: u64) -> String {
    if kv_key(name).starts_with('~') {
        format!("{offset} {name}")
    } else {
        offset.to_string()
    }
}

/// The offset in a stored commit value of consumer `name`.
fn parse_kv_value(name: &str, value: &str) -> Result<u64, String> {
    let (offset, stored_name) = match value.split_once(' ') {
        Some((o, n)) => (o, Some(n)),
        None => (value, None),
    };
    if kv_key(name).starts_with('~') && stored_name != Some(name) {
        return Err(format!(
            "the stored commit belongs to another consumer name with the same hash ({:?})",
            stored_name.unwrap_or("")
        ));
    }
    offset
        .parse()
        .map_err(|_| format!("stored value {value:?} is not an offset"))
}

impl<T> JetStreamStore<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Connects (on the store's own helper runtime), creates the stream and
    /// the offsets stream if they do not exist, and reads the stream's end.
    pub async fn open(cfg: JetStreamStoreConfig) -> Result<Self, StoreError> {
        let what = format!("open stream `{}` on `{}`", cfg.stream, cfg.server);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("busline-js-store")
            .enable_all()
            .build()
            .map_err(|e| StoreError::new(&what, format!("helper runtime: {e}")))?;
        let helper = Arc::new(Helper(Some(rt)));
        let handle = helper.0.as_ref().expect("runtime").handle().clone();
        let c = cfg.clone();
        let task = handle.spawn(async move {
            let settings = Settings::resolve(&c.server, c.timeout, &c.auth, &c.tls)
                .map_err(|e| e.to_string())?;
            let client = settings
                .client_options()
                .connect(c.server.as_str())
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let mut js = async_nats::jetstream::new(client.clone());
            // One attempt gets a quarter of the timeout, so a publish whose ack
            // was lost (a server restart) is retried within it.
            js.set_timeout((c.timeout / 4).max(Duration::from_millis(250)));
            let storage = if c.file_storage {
                StorageType::File
            } else {
                StorageType::Memory
            };
            let stream = js
                .get_or_create_stream(StreamConfig {
                    name: c.stream.clone(),
                    subjects: vec![format!("{}.>", c.subject_prefix)],
                    storage,
                    duplicate_window: c.duplicate_window,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("stream: {e}"))?;
            let offsets = js
                .get_or_create_stream(StreamConfig {
                    name: c.offsets_name(),
                    subjects: vec![format!("{}-offsets.>", c.subject_prefix)],
                    storage,
                    max_messages_per_subject: 1,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("offsets stream `{}`: {e}", c.offsets_name()))?;
            let info = stream
                .get_info()
                .await
                .map_err(|e| format!("stream info: {e}"))?;
            let want = format!("{}.>", c.subject_prefix);
            if info.config.subjects != [want.clone()] {
                // Anything else it captures would be read back as events.
                return Err(format!(
                    "the existing stream captures {:?}, not just `{want}` (another subject prefix, or other subjects as well)",
                    info.config.subjects
                ));
            }
            Ok::<_, String>((client, js, stream, offsets, info.state.last_sequence))
        });
        let (client, js, stream, offsets, last) = tokio::time::timeout(cfg.timeout * 2, task)
            .await
            .map_err(|_| StoreError::new(&what, "no answer in time"))?
            .map_err(|e| StoreError::new(&what, e))?
            .map_err(|e| StoreError::new(&what, e))?;
        Ok(JetStreamStore {
            remote: Remote {
                client,
                js,
                stream,
                offsets,
                offsets_name: cfg.offsets_name(),
                name: cfg.stream.clone(),
                prefix: cfg.subject_prefix.clone(),
                codec: cfg.codec,
                timeout: cfg.timeout,
            },
            handle,
            end: Arc::new(AtomicU64::new(last)),
            encoder: Encoder::new::<T>(cfg.codec, true),
            _helper: helper,
            _events: PhantomData,
        })
    }
}

impl<T> JetStreamStore<T> {
    /// The stream's name.
    pub fn stream_name(&self) -> &str {
        &self.remote.name
    }

    /// Runs `fut` on the helper runtime and blocks the caller (any thread,
    /// any runtime) until it answers, for at most twice the timeout.
    fn block_on<R: Send + 'static>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<R, String>> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = std_mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        match rx.recv_timeout(self.remote.timeout * 2) {
            Ok(r) => r.map_err(|e| StoreError::new(what, e)),
            Err(_) => Err(StoreError::new(what, "no answer from the helper in time")),
        }
    }
}

/// Decodes a stored message into an envelope with its offset.
fn decode_stored<T: DeserializeOwned>(
    r: &Remote,
    subject: &str,
    headers: Option<&async_nats::HeaderMap>,
    payload: &[u8],
    seq: u64,
) -> Result<Envelope<T>, StoreError> {
    let topic = subject
        .strip_prefix(r.prefix.as_str())
        .and_then(|t| t.strip_prefix('.'))
        .unwrap_or(subject);
    codec::decode::<T>(topic, headers, payload, r.codec)
        .map(|e| e.with_offset(seq - 1))
        .map_err(|e| StoreError::new(format!("read offset {} of stream `{}`", seq - 1, r.name), e))
}

fn gone(r: &Remote, offset: u64, first: u64) -> StoreError {
    StoreError::new(
        format!("read offset {offset} of stream `{}`", r.name),
        format!(
            "the event is no longer in the stream (removed by limits, a purge or a delete); the next stored offset is {first}"
        ),
    )
}

/// Events per round trip of a replay.
const BATCH: u64 = 256;

/// How long a replay waits for the next event before it checks that the
/// event is still in the stream.
const PROBE_AFTER: Duration = Duration::from_millis(500);

type Batch<T> = Vec<Result<Envelope<T>, StoreError>>;

/// A replay: asks the helper's reader task for batches.
struct Reader<T> {
    next: u64,
    to: u64,
    buf: VecDeque<Result<Envelope<T>, StoreError>>,
    ask: mpsc::UnboundedSender<u64>,
    answers: std_mpsc::Receiver<Batch<T>>,
    wait: Duration,
    name: String,
    done: bool,
}

impl<T> Iterator for Reader<T> {
    type Item = Result<Envelope<T>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.buf.is_empty() {
            if self.next >= self.to {
                self.done = true;
                return None;
            }
            let n = (self.to - self.next).min(BATCH);
            let answer = if self.ask.send(n).is_ok() {
                self.answers.recv_timeout(self.wait).ok()
            } else {
                None
            };
            match answer {
                Some(batch) if !batch.is_empty() => self.buf.extend(batch),
                _ => {
                    self.done = true;
                    return Some(Err(StoreError::new(
                        format!("read offset {} of stream `{}`", self.next, self.name),
                        "no answer from the server in time",
                    )));
                }
            }
        }
        let item = self.buf.pop_front()?;
        match &item {
            Ok(_) => self.next += 1,
            Err(_) => self.done = true,
        }
        Some(item)
    }
}

/// The helper's side of a replay: an ordered consumer from `from`, batch by batch.
async fn reader_task<T: DeserializeOwned + Send + 'static>(
    r: Remote,
    from: u64,
    mut asks: mpsc::UnboundedReceiver<u64>,
    answers: std_mpsc::Sender<Batch<T>>,
) {
    let what = |o: u64| format!("read offset {o} of stream `{}`", r.name);
    let mut next = from;
    let consumer = retrying(r.timeout, || {
        let stream = r.stream.clone();
        async move {
            stream
                .create_consumer(OrderedConfig {
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: from + 1,
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("ordered consumer: {e}"))
        }
    })
    .await;
    let mut messages = match consumer {
        Ok(c) => match c.messages().await {
            Ok(m) => Some(m),
            Err(e) => {
                let _ = answers.send(vec![Err(StoreError::new(what(next), e))]);
                None
            }
        },
        Err(e) => {
            let _ = answers.send(vec![Err(StoreError::new(what(next), e))]);
            None
        }
    };
    let Some(messages) = messages.as_mut() else {
        return;
    };
    while let Some(n) = asks.recv().await {
        let mut batch = Vec::with_capacity(n as usize);
        for _ in 0..n {
            // Nothing within a moment: if the wanted event is gone (deleted
            // at the end of the stream, so no later one shows the gap), say
            // so now rather than after the whole timeout.
            let quick = tokio::time::timeout(PROBE_AFTER.min(r.timeout), messages.next()).await;
            let next_msg = match quick {
                Ok(m) => Ok(m),
                Err(_) => match r.stream.get_raw_message(next + 1).await {
                    Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                        batch.push(Err(StoreError::new(
                            what(next),
                            "the event is no longer in the stream (removed by limits, a purge or a delete)",
                        )));
                        break;
                    }
                    _ => tokio::time::timeout(r.timeout, messages.next()).await,
                },
            };
            let m = match next_msg {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => {
                    batch.push(Err(StoreError::new(what(next), e)));
                    break;
                }
                Ok(None) => {
                    batch.push(Err(StoreError::new(what(next), "the consumer ended")));
                    break;
                }
                Err(_) => {
                    batch.push(Err(StoreError::new(
                        what(next),
                        format!("not delivered within {:?}", r.timeout),
                    )));
                    break;
                }
            };
            let seq = match m.info() {
                Ok(i) => i.stream_sequence,
                Err(e) => {
                    batch.push(Err(StoreError::new(what(next), e)));
                    break;
                }
            };
            if seq != next + 1 {
                batch.push(Err(gone(&r, next, seq - 1)));
                break;
            }
            batch.push(decode_stored(
                &r,
                m.message.subject.as_str(),
                m.message.headers.as_ref(),
                &m.message.payload,
                seq,
            ));
            next += 1;
        }
        let failed = batch.last().is_some_and(|b| b.is_err());
        if answers.send(batch).is_err() || failed {
            return;
        }
    }
}

impl<T> EventStore<T> for JetStreamStore<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn append<'a>(&'a self, env: &'a Envelope<T>) -> BoxFuture<'a, Result<u64, StoreError>> {
        let what = || {
            format!(
                "append event {} on `{}` to stream `{}`",
                env.id, env.topic, self.remote.name
            )
        };
        let wire = match self.encoder.encode(env) {
            Ok(w) => w,
            Err(e) => return Box::pin(std::future::ready(Err(StoreError::new(what(), e)))),
        };
        // Refused by the client (and so by every retry) when too large: say so now.
        let subject = format!("{}.{}", self.remote.prefix, wire.subject);
        let size = wire.size();
        let max = self.remote.client.server_info().max_payload;
        if max > 0 && size > max {
            let e = format!(
                "it is {size} bytes encoded (payload and headers), over the server's max_payload of {max} bytes"
            );
            return Box::pin(std::future::ready(Err(StoreError::new(what(), e))));
        }
        let r = self.remote.clone();
        let end = self.end.clone();
        let task = self.handle.spawn(async move {
            let ack = retrying(r.timeout, || {
                let (js, subject, headers, payload) = (
                    r.js.clone(),
                    subject.clone(),
                    wire.headers.clone(),
                    wire.payload.clone(),
                );
                async move {
                    js.publish_with_headers(subject, headers, payload)
                        .await
                        .map_err(|e| e.to_string())?
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .await?;
            if ack.stream != r.name {
                return Err(format!(
                    "stored in stream `{}` instead (its subjects overlap the store's)",
                    ack.stream
                ));
            }
            end.fetch_max(ack.sequence, Ordering::AcqRel);
            Ok(ack.sequence - 1)
        });
        Box::pin(async move {
            match task.await {
                Ok(r) => r.map_err(|e| StoreError::new(what(), e)),
                Err(e) => Err(StoreError::new(what(), e)),
            }
        })
    }

    fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    fn read(&self, from: u64, to: u64) -> Result<StoredEvents<T>, StoreError> {
        let to = to.min(self.end());
        if from >= to {
            return Ok(Box::new(std::iter::empty()));
        }
        let what = format!("read offsets {from}..{to} of stream `{}`", self.remote.name);
        let stream = self.remote.stream.clone();
        let timeout = self.remote.timeout;
        let first = self.block_on(&what, async move {
            retrying(timeout, || async {
                stream
                    .get_info()
                    .await
                    .map(|i| i.state.first_sequence)
                    .map_err(|e| format!("stream info: {e}"))
            })
            .await
        })?;
        // An empty stream reports the sequence after its last as its first.
        if first > from + 1 {
            return Err(gone(&self.remote, from, first.saturating_sub(1)));
        }
        let (ask, asks) = mpsc::unbounded_channel();
        let (answer, answers) = std_mpsc::channel();
        self.handle
            .spawn(reader_task::<T>(self.remote.clone(), from, asks, answer));
        Ok(Box::new(Reader {
            next: from,
            to,
            buf: VecDeque::new(),
            ask,
            answers,
            wait: self.remote.timeout * 2,
            name: self.remote.name.clone(),
            done: false,
        }))
    }

    fn offset_for_time(&self, at: SystemTime) -> Result<u64, StoreError> {
        let what = format!("find time {at:?} in stream `{}`", self.remote.name);
        let r = self.remote.clone();
        let end = self.end();
        self.block_on(&what, async move {
            let first = retrying(r.timeout, || async {
                r.stream
                    .get_info()
                    .await
                    .map(|i| i.state.first_sequence)
                    .map_err(|e| format!("stream info: {e}"))
            })
            .await?;
            // Binary search over offsets [lo, hi): the first event stamped at or after `at`.
            let (mut lo, mut hi) = (first.saturating_sub(1).min(end), end);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let m = retrying(r.timeout, || async {
                    match r.stream.get_raw_message(mid + 1).await {
                        Ok(m) => Ok(Some(m)),
                        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
                        Err(e) => Err(format!("get offset {mid}: {e}")),
                    }
                })
                .await?;
                let Some(m) = m else {
                    return Err(format!(
                        "offset {mid} is no longer in the stream (removed by limits, a purge or a delete)"
                    ));
                };
                let env = decode_stored::<T>(
                    &r,
                    m.subject.as_str(),
                    Some(&m.headers),
                    &m.payload,
                    m.sequence,
                )
                .map_err(|e| e.to_string())?;
                if env.timestamp < at {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            Ok(lo)
        })
    }

    fn commit_offset<'a>(
        &'a self,
        name: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let what = format!(
            "commit offset {offset} of consumer `{name}` to stream `{}`",
            self.remote.offsets_name
        );
        let r = self.remote.clone();
        let subject = format!("{}-offsets.{}", r.prefix, kv_key(name));
        let value = kv_value(name, offset);
        let task = self.handle.spawn(async move {
            retrying(r.timeout, || async {
                r.js.publish(subject.clone(), value.clone().into())
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await
        });
        Box::pin(async move {
            match task.await {
                Ok(r) => r.map_err(|e| StoreError::new(what, e)),
                Err(e) => Err(StoreError::new(what, e)),
            }
        })
    }

    fn committed_offset(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let what = format!(
            "committed offset of consumer `{name}` in stream `{}`",
            self.remote.offsets_name
        );
        let r = self.remote.clone();
        let subject = format!("{}-offsets.{}", r.prefix, kv_key(name));
        let name = name.to_string();
        self.block_on(&what, async move {
            let v = retrying(r.timeout, || async {
                match r.offsets.get_last_raw_message_by_subject(&subject).await {
                    Ok(m) => Ok(Some(m.payload)),
                    Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await?;
            match v {
                None => Ok(None),
                Some(b) => std::str::from_utf8(&b)
                    .map_err(|_| format!("stored value {b:?} is not an offset"))
                    .and_then(|s| parse_kv_value(&name, s))
                    .map(Some),
            }
        })
    }
}
