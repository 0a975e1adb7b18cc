//! Errors of the log.
//!
//! Every variant says what went wrong and where: the file, the file position,
//! the record offset. A corrupt record is never skipped; a failed write or
//! fsync leaves the log read-only ([`Error::ReadOnly`]) instead of pretending
//! nothing happened.

use std::io;
use std::path::PathBuf;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed.
    #[error("i/o error during {op} on {path}: {source}")]
    Io {
        /// What was being done (`"open"`, `"read"`, `"write"`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A write or fsync failed earlier; the log accepts no more appends.
    ///
    /// Records that were not acknowledged before the failure may or may not be
    /// on disk; reopening the log runs recovery and tells.
    #[error("log is read-only: {op} of {path} failed ({kind}: {message})")]
    ReadOnly {
        /// The operation that failed (`"write"`, `"fsync"`, `"create segment"`, ...).
        op: &'static str,
        /// The file or directory it failed on.
        path: PathBuf,
        /// The kind of the original I/O error.
        kind: io::ErrorKind,
        /// The original error, as text.
        message: String,
    },

    /// A record's CRC does not match its bytes.
    #[error(
        "corrupt record in {segment} at file position {position} (record offset {offset}): \
         crc expected {expected:#010x}, found {found:#010x}"
    )]
    CorruptRecord {
        /// The segment file.
        segment: PathBuf,
        /// Byte position of the record header in the file.
        position: u64,
        /// The offset the record should have.
        offset: u64,
        /// The CRC stored in the record header.
        expected: u32,
        /// The CRC computed over the bytes found.
        found: u32,
    },

    /// A segment's bytes do not form valid records (bad length, wrong offset,
    /// truncated record outside the tail, bad header).
    #[error(
        "corrupt segment {segment} at file position {position} (record offset {offset}): {reason}"
    )]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte position of the problem in the file.
        position: u64,
        /// The offset of the record expected there.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// A segment was written by a newer version of this crate.
    #[error(
        "segment {segment} has format version {found}, this build reads versions up to {supported}"
    )]
    UnsupportedVersion {
        /// The segment file.
        segment: PathBuf,
        /// The version in its header.
        found: u16,
        /// The newest version this build understands.
        supported: u16,
    },

    /// The offset asked for was removed by retention.
    #[error("offset {offset} was removed by retention; the log now starts at offset {first}")]
    OffsetRemoved {
        /// The offset asked for.
        offset: u64,
        /// The first offset still in the log.
        first: u64,
    },

    /// A record is larger than the log accepts.
    #[error("record of {len} bytes exceeds the maximum record size of {max} bytes")]
    RecordTooLarge {
        /// The payload length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },

    /// A consumer name that cannot be used as a file name.
    #[error("invalid consumer name {name:?}: use 1 to 200 characters from [A-Za-z0-9._-], not starting with '.'")]
    InvalidConsumerName {
        /// The name given.
        name: String,
    },

    /// A stored consumer offset file is damaged.
    #[error("consumer offset file {path} is corrupt: {reason}")]
    CorruptConsumerOffset {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The options are inconsistent.
    #[error("invalid option {name}: {reason}")]
    InvalidOption {
        /// The option.
        name: &'static str,
        /// Why it is rejected.
        reason: String,
    },

    /// Another process (or handle) has the log open for writing.
    #[error("log at {path} is in use by another writer (lock file {path}/LOCK is held)")]
    Locked {
        /// The log directory.
        path: PathBuf,
    },

    /// The log's writer has stopped (the log was closed).
    #[error("log at {path} is closed")]
    Closed {
        /// The log directory.
        path: PathBuf,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl Clone for Error {
    /// Clones the error; an [`Error::Io`] source is cloned by kind and message.
    fn clone(&self) -> Self {
        match self {
            Error::Io { op, path, source } => Error::Io {
                op,
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Error::ReadOnly {
                op,
                path,
                kind,
                message,
            } => Error::ReadOnly {
                op,
                path: path.clone(),
                kind: *kind,
                message: message.clone(),
            },
            Error::CorruptRecord {
                segment,
                position,
                offset,
                expected,
                found,
            } => Error::CorruptRecord {
                segment: segment.clone(),
                position: *position,
                offset: *offset,
                expected: *expected,
                found: *found,
            },
            Error::Corrupt {
                segment,
                position,
                offset,
                reason,
            } => Error::Corrupt {
                segment: segment.clone(),
                position: *position,
                offset: *offset,
                reason: reason.clone(),
            },
            Error::UnsupportedVersion {
                segment,
                found,
                supported,
            } => Error::UnsupportedVersion {
                segment: segment.clone(),
                found: *found,
                supported: *supported,
            },
            Error::OffsetRemoved { offset, first } => Error::OffsetRemoved {
                offset: *offset,
                first: *first,
            },
            Error::RecordTooLarge { len, max } => Error::RecordTooLarge {
                len: *len,
                max: *max,
            },
            Error::InvalidConsumerName { name } => {
                Error::InvalidConsumerName { name: name.clone() }
            }
            Error::CorruptConsumerOffset { path, reason } => Error::CorruptConsumerOffset {
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::InvalidOption { name, reason } => Error::InvalidOption {
                name,
                reason: reason.clone(),
            },
            Error::Closed { path } => Error::Closed { path: path.clone() },
            Error::Locked { path } => Error::Locked { path: path.clone() },
        }
    }
}
