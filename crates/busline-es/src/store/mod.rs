//! The event store: one stream per aggregate over one durable log.
//!
//! The types, [`AggregateStore::open`] and the index are here; reading
//! state back in `load`, writing events in `append`.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use busline::Bus;
use busline_log::Log;
use parking_lot::{Mutex, RwLock};

use crate::aggregate::Aggregate;
use crate::error::{Error, Result};
use crate::event::{Recorded, Stored};
use crate::snapshot::SnapshotStore;
use crate::upcast::Upcasters;

mod append;
mod load;

/// Options of [`AggregateStore::open`].
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Write a snapshot each time an aggregate's version crosses a multiple
    /// of this many events (`None`: no snapshots).
    pub snapshot_every: Option<u64>,
    /// Where snapshot files go (required when `snapshot_every` is set;
    /// default `<log dir>/snapshots`).
    pub snapshot_dir: Option<PathBuf>,
    /// Converters for old event schema versions.
    pub upcasters: Upcasters,
}

impl StoreOptions {
    /// Snapshot every `n` events.
    pub fn snapshot_every(mut self, n: u64) -> Self {
        self.snapshot_every = (n > 0).then_some(n);
        self
    }

    /// Use these upcasters.
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }
}

/// An aggregate's state and the version it reflects.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// The number of events applied (0 for a new aggregate).
    pub version: u64,
    /// Whether a snapshot was used.
    pub from_snapshot: bool,
}

/// What an append stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The aggregate's version after the append.
    pub version: u64,
    /// The log offsets of the appended events (empty for no events).
    pub offsets: Range<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: u64,
    timestamp_ms: u64,
}

#[derive(Default)]
struct Stream {
    /// Serializes check-and-append of this aggregate (shared, so an append
    /// whose caller went away can keep it until its index update is done).
    write: Arc<tokio::sync::Mutex<()>>,
    /// Entry `i` is version `i + 1`.
    entries: RwLock<Vec<Entry>>,
}

struct Inner<A: Aggregate> {
    log: Log,
    streams: Mutex<HashMap<String, Arc<Stream>>>,
    snapshots: Option<(SnapshotStore, u64)>,
    upcasters: Upcasters,
    bus: OnceLock<Bus<Recorded<A::Event>>>,
}

/// Event store of aggregate type `A` over a [`Log`]. Cheap to clone.
///
/// See the [crate docs](crate) for the model and its guarantees.
pub struct AggregateStore<A: Aggregate> {
    inner: Arc<Inner<A>>,
}

impl<A: Aggregate> Clone for AggregateStore<A> {
    fn clone(&self) -> Self {
        AggregateStore {
            inner: self.inner.clone(),
        }
    }
}

impl<A: Aggregate> std::fmt::Debug for AggregateStore<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregateStore")
            .field("type", &A::TYPE)
            .field("log", &self.inner.log)
            .field("aggregates", &self.inner.streams.lock().len())
            .finish()
    }
}

impl<A: Aggregate> AggregateStore<A> {
    /// Opens the store over `log`, rebuilding the index (aggregate id →
    /// log offsets) by scanning every record. Records of other aggregate
    /// types are skipped. This blocks while the log is read.
    pub fn open(log: Log, options: StoreOptions) -> Result<Self> {
        let mut map: HashMap<String, Vec<Entry>> = HashMap::new();
        let mut reader = log.read_from(log.first_offset())?;
        while let Some(rec) = reader.try_next()? {
            let stored = Stored::parse(rec.offset, &rec.payload)?;
            if stored.aggregate_type != A::TYPE {
                continue;
            }
            let entries = map.entry(stored.aggregate_id.clone()).or_default();
            let expected = entries.len() as u64 + 1;
            if stored.version != expected {
                return Err(Error::VersionGap {
                    aggregate: stored.aggregate_id,
                    expected,
                    found: stored.version,
                    offset: rec.offset,
                });
            }
            entries.push(Entry {
                offset: rec.offset,
                timestamp_ms: stored.timestamp_ms,
            });
        }
        let streams = map
            .into_iter()
            .map(|(id, entries)| {
                let s = Stream {
                    write: Default::default(),
                    entries: RwLock::new(entries),
                };
                (id, Arc::new(s))
            })
            .collect();
        let snapshots = match options.snapshot_every {
            Some(n) if n > 0 => {
                let dir = options
                    .snapshot_dir
                    .unwrap_or_else(|| log.dir().join("snapshots"));
                Some((SnapshotStore::open(dir)?, n))
            }
            _ => None,
        };
        Ok(AggregateStore {
            inner: Arc::new(Inner {
                log,
                streams: Mutex::new(streams),
                snapshots,
                upcasters: options.upcasters,
                bus: OnceLock::new(),
            }),
        })
    }

    /// Publishes every appended event on `bus` (topic
    /// `es.<aggregate type>.<event type>`) after the log acknowledged it.
    /// Only the first call has an effect.
    pub fn publish_to(&self, bus: Bus<Recorded<A::Event>>) -> &Self {
        let _ = self.inner.bus.set(bus);
        self
    }

    /// The log underneath.
    pub fn log(&self) -> &Log {
        &self.inner.log
    }

    /// The upcasters in use.
    pub fn upcasters(&self) -> &Upcasters {
        &self.inner.upcasters
    }

    /// The snapshot files, if snapshots are on.
    pub fn snapshots(&self) -> Option<&SnapshotStore> {
        self.inner.snapshots.as_ref().map(|(s, _)| s)
    }

    /// Ids of every aggregate with at least one event.
    pub fn ids(&self) -> Vec<String> {
        // An append that was refused or failed leaves an empty entry behind.
        let mut ids: Vec<String> = self
            .inner
            .streams
            .lock()
            .iter()
            .filter(|(_, s)| !s.entries.read().is_empty())
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// The current version of `id` (0 if it has no events).
    pub fn version(&self, id: &str) -> u64 {
        self.stream(id).map_or(0, |s| s.entries.read().len() as u64)
    }

    fn stream(&self, id: &str) -> Option<Arc<Stream>> {
        self.inner.streams.lock().get(id).cloned()
    }

    fn stream_or_create(&self, id: &str) -> Arc<Stream> {
        self.inner
            .streams
            .lock()
            .entry(id.to_owned())
            .or_default()
            .clone()
    }
}
