//! The embedded durable log of busline: an append-only sequence of records
//! (offset, timestamp, opaque payload bytes) in segment files, with group
//! commit, crash recovery, retention and named consumer offsets.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), busline_log::Error> {
//! # let tmp = tempfile::tempdir().unwrap();
//! use busline_log::{Log, Options};
//!
//! let log = Log::open(tmp.path(), Options::default())?;
//! let first = log.append(b"hello").await?; // resolves after its fsync
//! let more = log.append_batch([b"a", b"b"]).await?; // one fsync for both
//! assert_eq!((first, more), (0, 1..3));
//!
//! let mut reader = log.read_from(0)?;
//! let rec = reader.try_next()?.unwrap();
//! assert_eq!((rec.offset, rec.payload.as_slice()), (0, &b"hello"[..]));
//! # Ok(()) }
//! ```
//!
//! # Acknowledged
//!
//! An append's future resolves ("the record is acknowledged") when:
//!
//! - [`Persist::Fsync`] (default): an fsync of the segment that holds the
//!   whole record has returned. The record survives a process crash and a
//!   power loss. Appends from many tasks are written by one writer thread as
//!   one batch and share one fsync (group commit); a batch is bounded by
//!   [`Options::max_batch_records`], [`Options::max_batch_bytes`] and
//!   [`Options::max_delay`].
//! - [`Persist::Buffered`]: the record was handed to the operating system
//!   (`write` returned). It survives a process crash, not a power loss;
//!   [`Log::sync`] forces an fsync.
//!
//! Readers only ever see acknowledged records, and
//! [`Log::subscribe_committed`] announces each new committed end. A write or
//! fsync that fails is fatal: the log turns read-only and every later append
//! gets [`Error::ReadOnly`] naming the file and the failed operation.
//! Creating a segment fsyncs the new file and its directory.
//!
//! ## Replay, then live
//!
//! A [`Reader`] reads from any retained offset; [`Reader::recv`] waits for
//! new records when it reaches the end, so "replay the log, then continue
//! live" is one loop with no gap and no duplicate:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), busline_log::Error> {
//! # let tmp = tempfile::tempdir().unwrap();
//! # let log = busline_log::Log::open(tmp.path(), Default::default())?;
//! log.append(b"old").await?;
//! let mut reader = log.read_from(0)?;
//! let writer = log.clone();
//! tokio::spawn(async move { writer.append(b"new").await });
//! assert_eq!(reader.recv().await?.unwrap().payload, b"old");
//! assert_eq!(reader.recv().await?.unwrap().payload, b"new"); // waited for it
//! # Ok(()) }
//! ```
//!
//! # Recovery
//!
//! Opening a log reads and checks every record (see [`recovery`]): a torn
//! tail of the last segment is cut and reported by [`Log::recovery`]; a bad
//! record anywhere else is an error naming the file, position, offset and
//! CRCs; a segment of a newer format version is
//! [`Error::UnsupportedVersion`].
//!
//! # Byte layout
//!
//! A log is a directory of segment files named by the offset of their first
//! record, `00000000000000000000.seg`, plus `consumers/<name>.offset` files
//! and a `LOCK` file: one writer per directory ([`Error::Locked`] for a
//! second one); [`Log::open_read_only`] gives other processes a view that
//! follows the writer with [`Log::refresh`]. All integers are little-endian.
//!
//! ```text
//! segment file
//! +----------------+----------+----------+-----
//! | segment header | record 0 | record 1 | ...
//! +----------------+----------+----------+-----
//!
//! segment header (32 bytes)
//!  0        8          10       12         16            24       28         32
//!  +--------+----------+--------+----------+-------------+--------+----------+
//!  | magic  | version  | flags  | reserved | base offset | crc32c | reserved |
//!  | 8 B    | u16      | u16 =0 | u32 = 0  | u64         | u32    | u32 = 0  |
//!  +--------+----------+--------+----------+-------------+--------+----------+
//!  magic = "BUSLNLOG", version = 1, crc32c over bytes 0..24
//!
//! record (24-byte header + payload)
//!  0        4          8          16          24
//!  +--------+----------+----------+-----------+------------------+
//!  | crc32c | length   | offset   | timestamp | payload          |
//!  | u32    | u32      | u64      | u64 (ms)  | `length` bytes   |
//!  +--------+----------+----------+-----------+------------------+
//!  crc32c (Castagnoli) over bytes 4..24 of the header and the payload
//!
//! consumer offset file (12 bytes): offset u64 | crc32c(offset) u32
//! ```
//!
//! Offsets are dense: the first record of the log is 0 and each record's
//! offset is one more than the one before, across segments. The sparse index
//! (offset → file position, time → offset) lives in memory and is rebuilt by
//! recovery on open.
//!
//! # Storage seam
//!
//! Every file operation goes through [`storage::Storage`];
//! `sim::SimStorage` (with the `test-util` feature) simulates power loss
//! and disk faults for tests.

#![warn(unreachable_pub, missing_debug_implementations)]

pub mod error;
pub mod event_store;
mod log;
mod offsets;
pub mod recovery;
pub mod segment;
#[cfg(feature = "test-util")]
pub mod sim;
pub mod storage;

pub use crate::error::{Error, Result};
pub use crate::event_store::LogStore;
pub use crate::log::{now_millis, AppendTicket, Log, Options, Persist, SegmentSummary};
pub use crate::log::{Reader, Record};
pub use crate::recovery::Recovery;

/// Checks every record of the log in `dir` without changing anything.
///
/// Unlike [`Log::open`], a torn tail is reported as an error instead of being
/// cut. Returns the number of records and segments checked.
pub fn verify(dir: &std::path::Path, options: &Options) -> Result<VerifyReport> {
    let rec = recovery::recover(
        &*options.storage,
        dir,
        &recovery::RecoverOptions {
            max_payload: options.max_record_bytes as u32,
            index_interval: options.index_interval_bytes,
            mode: recovery::Mode::Check,
        },
    )?;
    Ok(VerifyReport {
        segments: rec.segments.len(),
        first_offset: rec.segments.first().map_or(0, |s| s.base),
        end_offset: rec.segments.last().map_or(0, |s| s.end),
        bytes: rec.segments.iter().map(|s| s.size).sum(),
    })
}

/// What [`verify`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of segments.
    pub segments: usize,
    /// Offset of the first record.
    pub first_offset: u64,
    /// One past the offset of the last record.
    pub end_offset: u64,
    /// Total bytes of the segments.
    pub bytes: u64,
}
