//! Event sourcing and CQRS on busline's durable log.
//!
//! An application keeps its state as the sequence of events that produced
//! it. An [`Aggregate`] handles commands (returning events or its own typed
//! error) and applies events to its state; an [`AggregateStore`] keeps one
//! stream per aggregate id in one [`busline_log::Log`], rebuilds any
//! aggregate at any version or time, and serves its audit trail. Reads are
//! served by [`Projection`]s: read models that consume the log, keep their
//! own state, and resume from a checkpoint.
//!
//! # The model
//!
//! Each log record is one event, stored as JSON: aggregate type and id,
//! version in the aggregate (1, 2, ...), event type name and schema version,
//! timestamp, [`Metadata`] (correlation/causation ids, headers) and payload.
//! On open, the store scans the log once and builds an in-memory index
//! aggregate id → log offsets; a stream that skips a version is
//! [`Error::VersionGap`]. Open one [`AggregateStore`] per aggregate type and
//! log, and clone it to share it (a second store of the same type over the
//! same log would not see the first one's appends); stores of different
//! aggregate types may share a log, each skipping the other's records. Keep
//! the log's retention off: aggregates are rebuilt from their first event.
//!
//! ## Optimistic concurrency
//!
//! [`AggregateStore::append`] takes the version the caller's decision was based
//! on. Check and append are atomic per aggregate (a per-aggregate lock held
//! across the log append): if another writer got there first the append
//! fails with [`Error::Concurrency`] naming the aggregate and both versions,
//! and nothing is written.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use busline_es::{doc_support::{Counter, CounterEvent}, *};
//! # let tmp = tempfile::tempdir()?;
//! let log = busline_log::Log::open(tmp.path(), Default::default())?;
//! let store = AggregateStore::<Counter>::open(log, StoreOptions::default())?;
//! store.append("c1", 0, vec![CounterEvent::Added { n: 1 }], Metadata::new()).await?;
//! let err = store.append("c1", 0, vec![CounterEvent::Added { n: 9 }], Metadata::new()).await;
//! assert!(matches!(err, Err(Error::Concurrency { expected: 0, actual: 1, .. })));
//! assert_eq!(store.load("c1")?.state.total, 1);
//! # Ok(()) }
//! ```
//!
//! # What is durable when
//!
//! - An append resolves only after the log acknowledged its events (with the
//!   log's default [`busline_log::Persist::Fsync`], after their fsync); all
//!   events of one append go in one log batch. Only then do they enter the
//!   index (loads see them) and get published on the bus
//!   ([`AggregateStore::publish_to`]). The bus is a notification: an event lost
//!   there (a bus closed, a lossy subscriber) is still in the log, and
//!   projections read the log, not the bus.
//! - A snapshot is written after the append that crosses a multiple of
//!   [`StoreOptions::snapshot_every`], durably (temp file, fsync, rename).
//!   A failed snapshot write is a warning; the events are already safe.
//! - A projection checkpoint is written every
//!   [`ProjectionOptions::commit_every`] records and at the end of each
//!   catch-up, with the state and its offset in one atomically replaced file.
//!
//! # Snapshots and their fallback
//!
//! [`AggregateStore::load`] starts from the aggregate's snapshot (if any) and
//! applies only the events after it; this always equals a full replay
//! ([`AggregateStore::load_full`]). A snapshot that is missing, damaged
//! (checksum, length, JSON), of another aggregate, newer than the stream, or
//! that no longer decodes into the state type is ignored with a
//! `tracing::warn!` and the aggregate is replayed from its first event; see
//! [`snapshot`].
//!
//! # Temporal queries
//!
//! [`AggregateStore::load_at_version`] and [`AggregateStore::load_as_of`] rebuild the
//! state as it was after a version or at a time;
//! [`AggregateStore::history`] returns the audit trail ([`Recorded`] events with
//! offset, version, time, type, schema version and metadata).
//!
//! # Projections and their offsets
//!
//! See [`projection`]: the checkpoint holds the state and the offset of the
//! next record together, so a restart after a crash at any point neither
//! misses nor double-applies an event.
//!
//! # Sagas
//!
//! [`saga`] runs process managers on the same log: a [`saga::Saga`]'s
//! state per correlation id is event-sourced, what it emits is stored with
//! its state change in one record and published from there (an outbox with
//! stable emit ids), its timeouts are durable and fire once, and its
//! [`saga::SagaManager`] is a busline module supervised by the runtime. The
//! module docs state what is guaranteed and what is not.
//!
//! # Schema evolution
//!
//! Events carry their type name and schema version; [`Upcasters`] convert
//! old payloads on load. An unknown type is [`Error::UnknownEventType`],
//! naming it and its position (aggregate, version, log offset):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use busline_es::{doc_support::Counter, *};
//! # let tmp = tempfile::tempdir()?;
//! let log = busline_log::Log::open(tmp.path(), Default::default())?;
//! // A record written by a newer program version, with an event type this one lacks:
//! log.append(br#"{"at":"counter","id":"c1","v":1,"t":"Reset","sv":1,"ts":0,"p":null}"#).await?;
//! let store = AggregateStore::<Counter>::open(log, StoreOptions::default())?;
//! let err = store.load("c1").unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "unknown event type \"Reset\" (schema version 1) of aggregate c1 at version 1, log offset 0"
//! );
//! # Ok(()) }
//! ```

#![warn(unreachable_pub, missing_debug_implementations)]

pub mod aggregate;
pub mod error;
pub mod event;
pub mod projection;
pub mod saga;
pub mod snapshot;
pub mod store;
pub mod upcast;

pub use crate::aggregate::Aggregate;
pub use crate::error::{Error, ExecuteError, Result};
pub use crate::event::{DomainEvent, Metadata, Recorded};
pub use crate::projection::{Projection, ProjectionHandle, ProjectionOptions, ProjectionRunner};
pub use crate::snapshot::SnapshotStore;
pub use crate::store::{AggregateStore, Appended, Loaded, StoreOptions};
pub use crate::upcast::Upcasters;

#[cfg(feature = "test-util")]
#[doc(hidden)]
pub mod doc_support {
    //! A tiny aggregate for the doctests.
    use serde::{Deserialize, Serialize};

    /// Events of [`Counter`].
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum CounterEvent {
        /// Added `n`.
        Added {
            /// The amount.
            n: u64,
        },
    }

    impl crate::DomainEvent for CounterEvent {
        const TYPES: &'static [&'static str] = &["Added"];
    }

    /// A counter.
    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Counter {
        /// The sum.
        pub total: u64,
    }

    impl crate::Aggregate for Counter {
        const TYPE: &'static str = "counter";
        type Command = u64;
        type Event = CounterEvent;
        type Error = std::convert::Infallible;
        fn handle(&self, n: u64) -> Result<Vec<CounterEvent>, Self::Error> {
            Ok(vec![CounterEvent::Added { n }])
        }
        fn apply(&mut self, CounterEvent::Added { n }: &CounterEvent) {
            self.total += n;
        }
    }
}
