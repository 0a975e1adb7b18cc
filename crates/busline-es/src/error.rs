//! Errors of the event store, snapshots and projections.
//!
//! Every variant names where the problem is: the aggregate, the version, the
//! log offset, the file.

use std::path::PathBuf;

/// Everything that can go wrong in the event store and projections.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Someone else appended to the aggregate first (optimistic concurrency).
    #[error(
        "concurrency conflict on aggregate {aggregate}: expected version {expected}, actual version {actual}"
    )]
    Concurrency {
        /// The aggregate id.
        aggregate: String,
        /// The version the caller based its events on.
        expected: u64,
        /// The version the stream has.
        actual: u64,
    },

    /// A stored event has a type the event enum does not know.
    #[error(
        "unknown event type {event_type:?} (schema version {schema_version}) of aggregate {aggregate} at version {version}, log offset {offset}"
    )]
    UnknownEventType {
        /// The stored type name.
        event_type: String,
        /// The stored schema version.
        schema_version: u32,
        /// The aggregate id.
        aggregate: String,
        /// The event's version in its aggregate.
        version: u64,
        /// The record's log offset.
        offset: u64,
    },

    /// A stored event is of an older schema version and no upcaster converts it.
    #[error(
        "no upcaster for event type {event_type:?} from schema version {from_version} (current {current}) of aggregate {aggregate} at version {version}, log offset {offset}"
    )]
    MissingUpcaster {
        /// The type name.
        event_type: String,
        /// The version no upcaster starts from.
        from_version: u32,
        /// The current schema version of the type.
        current: u32,
        /// The aggregate id.
        aggregate: String,
        /// The event's version in its aggregate.
        version: u64,
        /// The record's log offset.
        offset: u64,
    },

    /// A stored event's schema version is newer than the code knows.
    #[error(
        "event type {event_type:?} has schema version {found}, newer than the current {current}, in aggregate {aggregate} at version {version}, log offset {offset}"
    )]
    FutureSchema {
        /// The type name.
        event_type: String,
        /// The stored version.
        found: u32,
        /// The current version known to the code.
        current: u32,
        /// The aggregate id.
        aggregate: String,
        /// The event's version in its aggregate.
        version: u64,
        /// The record's log offset.
        offset: u64,
    },

    /// An upcaster failed.
    #[error(
        "upcasting {event_type:?} from schema version {from_version} failed for aggregate {aggregate} at version {version}, log offset {offset}: {message}"
    )]
    Upcast {
        /// The type name.
        event_type: String,
        /// The version the upcaster started from.
        from_version: u32,
        /// The aggregate id.
        aggregate: String,
        /// The event's version in its aggregate.
        version: u64,
        /// The record's log offset.
        offset: u64,
        /// What the upcaster said.
        message: String,
    },

    /// An event's payload does not decode into the event type.
    #[error(
        "cannot decode event {event_type:?} of aggregate {aggregate} at version {version}, log offset {offset}: {source}"
    )]
    DecodeEvent {
        /// The type name.
        event_type: String,
        /// The aggregate id.
        aggregate: String,
        /// The event's version in its aggregate.
        version: u64,
        /// The record's log offset.
        offset: u64,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },

    /// A log record is not an event envelope written by this crate.
    #[error("log record at offset {offset} is not a stored event: {source}")]
    BadRecord {
        /// The record's log offset.
        offset: u64,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },

    /// The stream of an aggregate skips or repeats a version.
    #[error(
        "aggregate {aggregate} has version {found} at log offset {offset}, expected version {expected}"
    )]
    VersionGap {
        /// The aggregate id.
        aggregate: String,
        /// The version expected next.
        expected: u64,
        /// The version found.
        found: u64,
        /// The record's log offset.
        offset: u64,
    },

    /// The index names a log offset the log no longer returns (retention
    /// removed it, or the log was replaced underneath).
    #[error("log record at offset {offset} of aggregate {aggregate} is missing")]
    MissingRecord {
        /// The aggregate id.
        aggregate: String,
        /// The log offset.
        offset: u64,
    },

    /// A temporal query asked for a version the aggregate does not have.
    #[error("aggregate {aggregate} has {current} events, version {requested} was asked for")]
    VersionOutOfRange {
        /// The aggregate id.
        aggregate: String,
        /// The requested version.
        requested: u64,
        /// The current version.
        current: u64,
    },

    /// An event or a state could not be encoded as JSON.
    #[error("cannot encode {what} as json: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },

    /// A projection's checkpoint file is damaged or unreadable.
    #[error("projection checkpoint {path} is damaged: {reason}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A file operation failed.
    #[error("i/o error during {op} on {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The durable log failed.
    #[error("log error: {0}")]
    Log(#[from] busline_log::Error),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// The error of [`AggregateStore::execute`](crate::AggregateStore::execute): the
/// aggregate rejected the command, or storing its events failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecuteError<E: std::error::Error + 'static> {
    /// The aggregate rejected the command (its own typed error).
    #[error("command rejected: {0}")]
    Rejected(#[source] E),
    /// Loading or appending failed (including [`Error::Concurrency`]).
    #[error(transparent)]
    Store(#[from] Error),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
