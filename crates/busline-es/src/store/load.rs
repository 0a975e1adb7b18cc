//! Reading an aggregate back: its current state (from a snapshot plus the
//! events after it, or every event), its state at a version or a time, and
//! its history.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{AggregateStore, Entry, Loaded};
use crate::aggregate::Aggregate;
use crate::error::{Error, Result};
use crate::event::{decode, Recorded, Stored};

impl<A: Aggregate> AggregateStore<A> {
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
}
