//! The event store: one stream per aggregate over one durable log.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use busline::Bus;
use busline_log::Log;
use parking_lot::{Mutex, RwLock};

use crate::aggregate::Aggregate;
use crate::error::{Error, ExecuteError, Result};
use crate::event::{decode, split, Metadata, Recorded, Stored};
use crate::snapshot::SnapshotStore;
use crate::upcast::Upcasters;

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

    /// The aggregate's acknowledged entries (an append's records are in
    /// the index from the moment they are queued; loads wait for the ack).
    fn entries(&self, id: &str) -> Vec<Entry> {
        let acked = self.inner.log.committed_end();
        self.stream(id)
            .map(|s| {
                s.entries
                    .read()
                    .iter()
                    .take_while(|e| e.offset < acked)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Reads and decodes the events at `entries` (versions
    /// `first_version..`), calling `f` for each.
    fn replay(
        &self,
        id: &str,
        entries: &[Entry],
        first_version: u64,
        mut f: impl FnMut(Recorded<A::Event>),
    ) -> Result<()> {
        let mut reader: Option<busline_log::Reader> = None;
        for (i, e) in entries.iter().enumerate() {
            let r = match &mut reader {
                Some(r) if busline_log::Reader::position(r) == e.offset => r,
                slot => slot.insert(self.inner.log.read_from(e.offset)?),
            };
            let rec = r.try_next()?.ok_or_else(|| Error::MissingRecord {
                aggregate: id.to_owned(),
                offset: e.offset,
            })?;
            let stored = Stored::parse(rec.offset, &rec.payload)?;
            let version = first_version + i as u64;
            if stored.aggregate_id != id || stored.version != version {
                return Err(Error::VersionGap {
                    aggregate: id.to_owned(),
                    expected: version,
                    found: stored.version,
                    offset: rec.offset,
                });
            }
            f(decode(rec.offset, stored, &self.inner.upcasters)?);
        }
        Ok(())
    }

    /// Folds the events `from.version + 1 ..= upto` onto `from`.
    fn fold(
        &self,
        id: &str,
        entries: &[Entry],
        mut from: Loaded<A>,
        upto: u64,
    ) -> Result<Loaded<A>> {
        let start = from.version as usize;
        let end = upto as usize;
        self.replay(id, &entries[start..end], from.version + 1, |r| {
            from.state.apply(&r.event);
        })?;
        from.version = upto;
        Ok(from)
    }

    /// The best usable snapshot at or below `upto`, or a fresh state.
    fn base(&self, id: &str, upto: u64) -> Loaded<A> {
        let fresh = Loaded {
            state: A::default(),
            version: 0,
            from_snapshot: false,
        };
        let Some((snaps, _)) = &self.inner.snapshots else {
            return fresh;
        };
        match snaps.read::<A>(A::TYPE, id) {
            Ok(None) => fresh,
            Ok(Some((v, state))) if v <= upto => Loaded {
                state,
                version: v,
                from_snapshot: true,
            },
            Ok(Some((v, _))) => {
                if v > self.version(id) {
                    tracing::warn!(
                        aggregate = id,
                        snapshot_version = v,
                        stream_version = self.version(id),
                        "snapshot is newer than the event stream; replaying all events"
                    );
                }
                fresh
            }
            Err(reason) => {
                tracing::warn!(aggregate = id, %reason, "damaged snapshot ignored; replaying all events");
                fresh
            }
        }
    }

    /// The current state of `id` (a default state at version 0 if it has
    /// no events), from its snapshot plus the events after it when
    /// snapshots are on. Loads read the log synchronously (blocking file
    /// reads, as the log's readers do).
    pub fn load(&self, id: &str) -> Result<Loaded<A>> {
        let entries = self.entries(id);
        let upto = entries.len() as u64;
        let base = self.base(id, upto);
        self.fold(id, &entries, base, upto)
    }

    /// The current state of `id` by replaying every event, ignoring snapshots.
    pub fn load_full(&self, id: &str) -> Result<Loaded<A>> {
        let entries = self.entries(id);
        let upto = entries.len() as u64;
        let base = Loaded {
            state: A::default(),
            version: 0,
            from_snapshot: false,
        };
        self.fold(id, &entries, base, upto)
    }

    /// The state of `id` right after its event `version` (0: the initial state).
    pub fn load_at_version(&self, id: &str, version: u64) -> Result<Loaded<A>> {
        let entries = self.entries(id);
        let current = entries.len() as u64;
        if version > current {
            return Err(Error::VersionOutOfRange {
                aggregate: id.to_owned(),
                requested: version,
                current,
            });
        }
        let base = self.base(id, version);
        self.fold(id, &entries, base, version)
    }

    /// The state of `id` as of `time`: every event appended at or before
    /// it (millisecond resolution).
    pub fn load_as_of(&self, id: &str, time: SystemTime) -> Result<Loaded<A>> {
        let t = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let entries = self.entries(id);
        let upto = entries.partition_point(|e| e.timestamp_ms <= t) as u64;
        let base = self.base(id, upto);
        self.fold(id, &entries, base, upto)
    }

    /// The audit trail of `id`: every event with its metadata, in order.
    pub fn history(&self, id: &str) -> Result<Vec<Recorded<A::Event>>> {
        let entries = self.entries(id);
        let mut out = Vec::with_capacity(entries.len());
        self.replay(id, &entries, 1, |r| out.push(r))?;
        Ok(out)
    }

    /// Appends `events` to `id` if its version is still `expected`.
    ///
    /// Fails with [`Error::Concurrency`] (naming the aggregate, the expected
    /// and the actual version) if another append got there first. Resolves
    /// once the log has acknowledged the events durably; only then are they
    /// visible to loads and published on the bus.
    pub async fn append(
        &self,
        id: &str,
        expected: u64,
        events: Vec<A::Event>,
        metadata: Metadata,
    ) -> Result<Appended> {
        self.append_inner(id, expected, events, metadata, None)
            .await
    }

    async fn append_inner(
        &self,
        id: &str,
        expected: u64,
        events: Vec<A::Event>,
        metadata: Metadata,
        state: Option<A>,
    ) -> Result<Appended> {
        let stream = self.stream_or_create(id);
        let guard = stream.write.clone().lock_owned().await;
        let actual = stream.entries.read().len() as u64;
        if actual != expected {
            return Err(Error::Concurrency {
                aggregate: id.to_owned(),
                expected,
                actual,
            });
        }
        if events.is_empty() {
            let end = self.inner.log.next_offset();
            return Ok(Appended {
                version: actual,
                offsets: end..end,
            });
        }
        let ts = busline_log::now_millis();
        let (payloads, types) = Self::encode(id, expected, &events, &metadata, ts)?;
        let ticket = self.inner.log.submit_batch(ts, &payloads).await?;
        // The records are queued now: they get written whether or not this
        // future is polled to the end (a timeout, a `select!`, a runtime
        // shutting down). So they go into the aggregate's index at once,
        // under its lock: a caller that goes away cannot leave the index
        // behind the log (a second append at the same version, a log that
        // no longer opens). Loads see them once acknowledged (`entries`).
        let offsets = ticket.offsets();
        stream
            .entries
            .write()
            .extend(offsets.clone().map(|offset| Entry {
                offset,
                timestamp_ms: ts,
            }));
        ticket.acknowledged().await?;
        let _guard = guard;
        let version = expected + events.len() as u64;
        self.snapshot_if_due(id, expected, version, &events, state);
        drop(_guard);
        self.publish(id, expected, events, types, offsets.clone(), ts, metadata)
            .await;
        Ok(Appended { version, offsets })
    }

    /// The log records of `events`, appended at `expected`: each a stored
    /// event naming its aggregate and version; and the events' type names.
    fn encode(
        id: &str,
        expected: u64,
        events: &[A::Event],
        metadata: &Metadata,
        ts: u64,
    ) -> Result<(Vec<Vec<u8>>, Vec<String>)> {
        let mut payloads = Vec::with_capacity(events.len());
        let mut types = Vec::with_capacity(events.len());
        for (i, ev) in events.iter().enumerate() {
            let (event_type, payload) = split(ev)?;
            types.push(event_type.clone());
            let stored = Stored {
                aggregate_type: A::TYPE.to_owned(),
                aggregate_id: id.to_owned(),
                version: expected + 1 + i as u64,
                schema_version: <A::Event as crate::DomainEvent>::schema_version(&event_type),
                event_type,
                timestamp_ms: ts,
                metadata: metadata.clone(),
                payload,
            };
            payloads.push(serde_json::to_vec(&stored).map_err(|source| Error::Encode {
                what: "stored event",
                source,
            })?);
        }
        Ok((payloads, types))
    }

    /// Writes a snapshot at `version` when the append from `expected`
    /// crossed a snapshot interval. `state` is the state before the append,
    /// if the caller has it; otherwise the aggregate is loaded. A snapshot
    /// that fails is logged, never an error: the events are durable.
    fn snapshot_if_due(
        &self,
        id: &str,
        expected: u64,
        version: u64,
        events: &[A::Event],
        state: Option<A>,
    ) {
        if let Some((snaps, every)) = &self.inner.snapshots {
            if expected / every != version / every {
                let snap = match state {
                    Some(mut s) => {
                        for e in events {
                            s.apply(e);
                        }
                        Ok(s)
                    }
                    None => self.load(id).map(|l| l.state),
                };
                match snap.and_then(|s| snaps.write(A::TYPE, id, version, &s)) {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(aggregate = id, version, error = %e, "snapshot not written")
                    }
                }
            }
        }
    }

    /// Publishes appended events on the bus, if the store has one, as
    /// [`Recorded`] on `es.<aggregate type>.<event type>` (`types`, from
    /// [`encode`](Self::encode)). A publish that fails is logged: the events
    /// are durable.
    #[allow(clippy::too_many_arguments)]
    async fn publish(
        &self,
        id: &str,
        expected: u64,
        events: Vec<A::Event>,
        types: Vec<String>,
        offsets: Range<u64>,
        ts: u64,
        metadata: Metadata,
    ) {
        if let Some(bus) = self.inner.bus.get() {
            let each = events.into_iter().zip(types).zip(offsets).enumerate();
            for (i, ((event, event_type), offset)) in each {
                let topic = format!("es.{}.{}", A::TYPE, event_type);
                let rec = Recorded {
                    offset,
                    aggregate_type: A::TYPE.to_owned(),
                    aggregate_id: id.to_owned(),
                    version: expected + 1 + i as u64,
                    schema_version: <A::Event as crate::DomainEvent>::schema_version(&event_type),
                    event_type,
                    timestamp_ms: ts,
                    metadata: metadata.clone(),
                    event,
                };
                if let Err(e) = bus.publish_to(&topic, rec).await {
                    tracing::warn!(%topic, error = %e, "appended event not published on the bus");
                }
            }
        }
    }

    /// Loads `id`, lets it handle `command`, and appends the resulting events
    /// at the loaded version. A concurrent writer makes it fail with
    /// [`Error::Concurrency`] (inside [`ExecuteError::Store`]); the caller
    /// may retry, which re-runs the command on the newer state.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: Metadata,
    ) -> Result<Appended, ExecuteError<A::Error>> {
        let loaded = self.load(id)?;
        let events = loaded
            .state
            .handle(command)
            .map_err(ExecuteError::Rejected)?;
        Ok(self
            .append_inner(id, loaded.version, events, metadata, Some(loaded.state))
            .await?)
    }
}
