//! Writing events: an append at an expected version (encoded, acknowledged
//! by the log, snapshotted when due, published on the bus), and a command
//! executed against the loaded state.

use std::ops::Range;

use super::{AggregateStore, Appended, Entry};
use crate::aggregate::Aggregate;
use crate::error::{Error, ExecuteError, Result};
use crate::event::{split, Metadata, Recorded, Stored};

impl<A: Aggregate> AggregateStore<A> {
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
