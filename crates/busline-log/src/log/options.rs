//! How a log is opened: [`Options`], [`Persist`], and their checks.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::segment::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::storage::{StdStorage, Storage};

/// When an append counts as acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Persist {
    /// Acknowledged once an fsync covering the record returned: it survives
    /// a crash of the process and of the machine. Concurrent appends share
    /// one fsync (group commit).
    #[default]
    Fsync,
    /// Acknowledged once the record was handed to the operating system
    /// (`write` returned): it survives a crash of the process, not a power
    /// loss. Segments are still fsynced when they are closed, and
    /// [`Log::sync`](crate::Log::sync) forces an fsync.
    Buffered,
}

/// How a log is opened.
#[derive(Debug, Clone)]
pub struct Options {
    /// When appends are acknowledged.
    pub persist: Persist,
    /// A new segment is started once the active one holds this many bytes.
    pub segment_bytes: u64,
    /// The largest payload accepted. Opening a log that holds a larger
    /// record (written with a larger limit) fails with
    /// [`Error::InvalidOption`] naming the size it needs; nothing is cut.
    pub max_record_bytes: usize,
    /// A batch (one write, one fsync) holds at most this many records ...
    pub max_batch_records: usize,
    /// ... and at most this many bytes (a single larger append is still
    /// accepted, alone). Appenders wait while the pending batch is full.
    pub max_batch_bytes: usize,
    /// How long the writer may wait for a batch to fill before writing it.
    /// Zero (the default) writes at once: batches then form naturally from
    /// the appends that arrive while the previous fsync runs.
    pub max_delay: Duration,
    /// One sparse index entry per this many bytes of segment.
    pub index_interval_bytes: u64,
    /// Delete the oldest segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this.
    pub retention_age: Option<Duration>,
    /// The file system.
    pub storage: Arc<dyn Storage>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            persist: Persist::Fsync,
            segment_bytes: 64 << 20,
            max_record_bytes: 16 << 20,
            max_batch_records: 64 * 1024,
            max_batch_bytes: 8 << 20,
            max_delay: Duration::ZERO,
            index_interval_bytes: 4096,
            retention_bytes: None,
            retention_age: None,
            storage: Arc::new(StdStorage),
        }
    }
}

/// Rejects options the log cannot work with.
pub(super) fn check_options(o: &Options) -> Result<()> {
    let bad = |name, reason: &str| {
        Err(Error::InvalidOption {
            name,
            reason: reason.to_owned(),
        })
    };
    if o.max_record_bytes > (u32::MAX as usize) - RECORD_HEADER_LEN {
        return bad("max_record_bytes", "must fit in 32 bits");
    }
    if o.segment_bytes <= SEGMENT_HEADER_LEN as u64 {
        return bad("segment_bytes", "must be larger than the segment header");
    }
    if o.max_batch_records == 0 || o.max_batch_bytes == 0 {
        return bad("max_batch_records/max_batch_bytes", "must not be zero");
    }
    if o.index_interval_bytes == 0 {
        return bad("index_interval_bytes", "must not be zero");
    }
    Ok(())
}
