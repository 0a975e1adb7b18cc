//! The durable log as a bus's [`EventStore`]: persist topics before delivery,
//! replay-then-live subscriptions and named consumers on local disk.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::sync::Arc;
//! use busline::{Bus, StartAt};
//! use busline_log::{LogStore, Options};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Arc::new(LogStore::<String>::open(dir.path(), Options::default()).unwrap());
//! let bus = Bus::new();
//! bus.persist("orders.>", store.clone()).unwrap();
//! // Acknowledged only once an fsync covers it; then delivered.
//! bus.publish_to("orders.new", "42 widgets".to_string()).await.unwrap();
//! drop(bus);
//!
//! // A new bus on the same log (a restart) replays it.
//! let bus = Bus::new();
//! bus.persist("orders.>", store).unwrap();
//! let mut sub = bus.subscriber("orders.>").from(StartAt::Beginning).subscribe().unwrap();
//! let e = sub.recv().await.unwrap();
//! assert_eq!((e.payload.as_str(), e.offset()), ("42 widgets", Some(0)));
//! # }
//! ```
//!
//! Each envelope is stored as one JSON record: its id, topic, timestamp
//! (nanoseconds), source, correlation and causation ids, headers and payload.
//! The record's own timestamp is the envelope's, in milliseconds, so
//! `StartAt::Time` uses the log's time index.

use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use busline::{Envelope, EventId, Topic};
use busline::{EventStore, StoreError, StoredEvents};
use futures::future::BoxFuture;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{Log, Options};

/// A [`Log`] holding envelopes of `T`, for [`Bus::persist`](busline::Bus::persist).
pub struct LogStore<T> {
    log: Log,
    _events: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for LogStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("log", &self.log).finish()
    }
}

impl<T> Clone for LogStore<T> {
    fn clone(&self) -> Self {
        LogStore {
            log: self.log.clone(),
            _events: PhantomData,
        }
    }
}

impl<T> LogStore<T> {
    /// Wraps an open log.
    pub fn new(log: Log) -> Self {
        LogStore {
            log,
            _events: PhantomData,
        }
    }

    /// Opens (recovering if needed) the log in `dir`. Blocks on disk.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> crate::Result<Self> {
        Ok(Self::new(Log::open(dir, options)?))
    }

    /// The log underneath.
    pub fn log(&self) -> &Log {
        &self.log
    }
}

#[derive(Serialize)]
struct StoredRef<'a, T> {
    id: String,
    topic: &'a str,
    ts_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    correlation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    causation: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<(&'a str, &'a str)>,
    payload: &'a T,
}

#[derive(Deserialize)]
struct Stored<T> {
    id: String,
    topic: String,
    ts_ns: u64,
    #[serde(default)]
    source: Option<String>,
    correlation: String,
    #[serde(default)]
    causation: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    payload: T,
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

fn encode<T: Serialize>(env: &Envelope<T>) -> Result<Vec<u8>, StoreError> {
    let stored = StoredRef {
        id: env.id.to_string(),
        topic: env.topic.as_str(),
        ts_ns: nanos(env.timestamp()),
        source: env.source.as_deref(),
        correlation: env.correlation_id.to_string(),
        causation: env.causation_id().map(|c| c.to_string()),
        headers: env.headers().iter().map(|(k, v)| (&**k, &**v)).collect(),
        payload: &env.payload,
    };
    serde_json::to_vec(&stored)
        .map_err(|e| StoreError::new(format!("encode event {} on `{}`", env.id, env.topic), e))
}

/// Decodes the record at `offset` back into its envelope.
pub fn decode<T: DeserializeOwned>(offset: u64, bytes: &[u8]) -> Result<Envelope<T>, StoreError> {
    let ctx = || format!("decode record at offset {offset}");
    let s: Stored<T> = serde_json::from_slice(bytes).map_err(|e| StoreError::new(ctx(), e))?;
    let id_of = |field: &str, v: &str| {
        EventId::parse(v).ok_or_else(|| {
            StoreError::new(ctx(), format!("field `{field}`: `{v}` is not an event id"))
        })
    };
    let id = id_of("id", &s.id)?;
    let correlation = id_of("correlation", &s.correlation)?;
    let causation = s
        .causation
        .as_deref()
        .map(|c| id_of("causation", c))
        .transpose()?;
    let topic = Topic::new(&s.topic).map_err(|e| StoreError::new(ctx(), e))?;
    Ok(Envelope::from_parts(
        offset,
        id,
        topic,
        UNIX_EPOCH + Duration::from_nanos(s.ts_ns),
        s.source.map(Arc::from),
        correlation,
        causation,
        None,
        s.headers
            .into_iter()
            .map(|(k, v)| (Arc::from(k), Arc::from(v)))
            .collect(),
        s.payload,
    )
    .with_offset(offset))
}

impl<T> EventStore<T> for LogStore<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn append<'a>(&'a self, env: &'a Envelope<T>) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let bytes = encode(env)?;
            let ms = nanos(env.timestamp()) / 1_000_000;
            self.log.append_at(ms, bytes).await.map_err(|e| {
                StoreError::new(
                    format!("append event {} to {}", env.id, self.log.dir().display()),
                    e,
                )
            })
        })
    }

    fn end(&self) -> u64 {
        self.log.committed_end()
    }

    fn read(&self, from: u64, to: u64) -> Result<StoredEvents<T>, StoreError> {
        let dir = self.log.dir().display().to_string();
        let reader = self
            .log
            .read_from(from)
            .map_err(|e| StoreError::new(format!("read {dir} from offset {from}"), e))?;
        Ok(Box::new(
            reader
                .take_while(move |r| r.as_ref().map_or(true, |r| r.offset < to))
                .map(move |r| match r {
                    Ok(rec) => decode(rec.offset, &rec.payload),
                    Err(e) => Err(StoreError::new(format!("read {dir}"), e)),
                }),
        ))
    }

    fn offset_for_time(&self, at: SystemTime) -> Result<u64, StoreError> {
        let ms = nanos(at) / 1_000_000;
        self.log
            .offset_for_time(ms)
            .map(|o| o.unwrap_or_else(|| self.log.committed_end()))
            .map_err(|e| {
                StoreError::new(
                    format!("find time {ms} ms in {}", self.log.dir().display()),
                    e,
                )
            })
    }

    fn commit_offset<'a>(
        &'a self,
        name: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.log.commit_offset(name, offset).await.map_err(|e| {
                StoreError::new(format!("commit offset {offset} of consumer `{name}`"), e)
            })
        })
    }

    fn committed_offset(&self, name: &str) -> Result<Option<u64>, StoreError> {
        self.log
            .committed_offset(name)
            .map_err(|e| StoreError::new(format!("read committed offset of consumer `{name}`"), e))
    }
}
