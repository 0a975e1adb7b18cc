//! The log handle: what it shares with its writer thread and readers, and
//! the views it gives of the log (offsets, readers, segments).
//!
//! Opening lives in [`open`], appending in [`append`], the writer thread
//! that group-commits in [`writer`], segment removal in [`retention`], and
//! the options in [`options`].

mod append;
mod open;
mod options;
mod reader;
mod retention;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::{watch, Notify};

use crate::error::{Error, Result};
use crate::recovery::Recovery;
use crate::segment::SegmentInfo;
pub use reader::{Reader, Record};

pub use self::append::AppendTicket;
pub use self::options::{Options, Persist};

/// Progress of the writer, published to appenders and readers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Status {
    /// One past the last acknowledged record.
    pub(crate) acked: u64,
    /// One past the last fsynced record.
    pub(crate) synced: u64,
    /// Set once a write or fsync failed.
    pub(crate) failed: Option<Error>,
    /// Set when the log is closed.
    pub(crate) closed: bool,
}

struct Pending {
    buf: Vec<u8>,
    records: usize,
    next_offset: u64,
    sync_wanted: bool,
    failed: Option<Error>,
    closed: bool,
}

/// State shared by the handle, the writer and readers.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) opts: Options,
    pending: Mutex<Pending>,
    writer_cv: Condvar,
    space: Notify,
    pub(crate) status: watch::Sender<Status>,
    pub(crate) committed: watch::Sender<u64>,
    pub(crate) segments: RwLock<Vec<SegmentInfo>>,
    retention_lock: Mutex<()>,
    pub(crate) offsets_lock: Mutex<()>,
    /// Opened with [`Log::open_read_only`]: it changes no file.
    read_only: bool,
}

/// A durable append-only log of records in a directory.
///
/// Cloning gives another handle to the same log. When the last handle is
/// dropped, the writer writes what is pending, fsyncs and stops; the drop
/// blocks until it has (one batch at most). Readers keep working after that
/// and end at the last acknowledged record.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
    recovery: Option<Recovery>,
    _lock: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.pending.lock().closed = true;
        self.shared.writer_cv.notify_all();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        self.shared.status.send_modify(|s| s.closed = true);
        self.shared.space.notify_waiters();
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.shared.dir)
            .field("committed", &self.committed_end())
            .finish()
    }
}

/// The current time in unix milliseconds.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Log {
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// The torn tail that was cut when the log was opened, if any.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.inner.recovery.as_ref()
    }

    /// One past the offset of the last acknowledged record: records below it
    /// can be read.
    pub fn committed_end(&self) -> u64 {
        *self.inner.shared.committed.borrow()
    }

    /// The offset the next append will get (counts records submitted but not
    /// yet acknowledged).
    pub fn next_offset(&self) -> u64 {
        self.inner.shared.pending.lock().next_offset
    }

    /// The first offset still in the log (retention removes older ones).
    pub fn first_offset(&self) -> u64 {
        self.inner
            .shared
            .segments
            .read()
            .first()
            .map(|s| s.base)
            .unwrap_or(0)
    }

    /// A watch of [`Log::committed_end`]: it changes every time records are
    /// acknowledged. Readers that follow the log use it to wait for new
    /// records; [`Reader::recv`] does this for you.
    pub fn subscribe_committed(&self) -> watch::Receiver<u64> {
        self.inner.shared.committed.subscribe()
    }

    /// The error that made the log read-only, if any.
    pub fn failure(&self) -> Option<Error> {
        self.inner.shared.pending.lock().failed.clone()
    }

    /// A reader starting at `offset` (which may be
    /// [`Log::committed_end`] or later, to read only new records).
    pub fn read_from(&self, offset: u64) -> Result<Reader> {
        let first = self.first_offset();
        if offset < first {
            return Err(Error::OffsetRemoved { offset, first });
        }
        Ok(Reader::new(self.inner.shared.clone(), offset))
    }

    /// The offset of the first record with a timestamp at or after
    /// `timestamp`, or `None` if every acknowledged record is older.
    ///
    /// Timestamps need not be monotone; the answer is then the first record,
    /// in offset order, whose timestamp reaches `timestamp`.
    pub fn offset_for_time(&self, timestamp: u64) -> Result<Option<u64>> {
        let start = {
            let segs = self.inner.shared.segments.read();
            let mut start = segs.first().map(|s| s.base).unwrap_or(0);
            'outer: for seg in segs.iter() {
                for e in &seg.index {
                    if e.max_ts_before >= timestamp {
                        break 'outer;
                    }
                    start = e.offset;
                }
            }
            start
        };
        let mut reader = self.read_from(start)?;
        while let Some(rec) = reader.try_next()? {
            if rec.timestamp >= timestamp {
                return Ok(Some(rec.offset));
            }
        }
        Ok(None)
    }

    /// Facts about each segment: base offset, end offset, size, path.
    pub fn segments(&self) -> Vec<SegmentSummary> {
        self.inner
            .shared
            .segments
            .read()
            .iter()
            .map(|s| SegmentSummary {
                path: s.path.clone(),
                base: s.base,
                end: s.end,
                bytes: s.size,
                max_timestamp: s.max_ts,
            })
            .collect()
    }
}

/// Facts about one segment, from [`Log::segments`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The segment file.
    pub path: PathBuf,
    /// Offset of its first record.
    pub base: u64,
    /// One past the offset of its last record.
    pub end: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// Largest timestamp in it.
    pub max_timestamp: u64,
}
