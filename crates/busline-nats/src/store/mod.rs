//! A durable [`EventStore`](busline::EventStore) on JetStream: persist the bus's topics in a
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
//!   the transport's [`codec`](crate::codec) writes, with `Nats-Msg-Id` = the
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
//!   the server. The [`EventStore`](busline::EventStore) trait calls them synchronously (from
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
//! assert_eq!((e.payload.as_str(), e.offset()), ("42 widgets", Some(0)));
//! # }
//! ```

mod event_store;
mod offsets;
mod reader;

use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Duration;

use async_nats::jetstream::stream::{Config as StreamConfig, StorageType, Stream};
use async_nats::jetstream::Context;
use busline::StoreError;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{Codec, Encoder};
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

/// A durable [`EventStore`](busline::EventStore) in a JetStream stream (see the [module docs](self)).
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

impl<T> std::fmt::Debug for JetStreamStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamStore")
            .field("stream", &self.remote.name)
            .field("subject_prefix", &self.remote.prefix)
            .field("end", &self.end.load(std::sync::atomic::Ordering::Acquire))
            .finish_non_exhaustive()
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
