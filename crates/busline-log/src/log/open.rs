//! Opening a log (writable or as a read-only view) and refreshing a view.

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::{watch, Notify};

use super::options::check_options;
use super::writer::{create_segment, Writer};
use super::{Inner, Log, Options, Pending, Shared, Status};
use crate::error::{Error, Result};
use crate::recovery::{recover, Mode, RecoverOptions};
use crate::segment::{
    decode_segment_header, segment_path, RecordCursor, SegmentInfo, Step, SEGMENT_HEADER_LEN,
};
use crate::storage::{read_full_at, Storage, WriteFile};

impl Log {
    /// Opens (or creates) the log in `dir`, running [recovery](crate::recovery).
    ///
    /// This blocks while every segment is read and checked; from async code
    /// call it in `tokio::task::spawn_blocking` if the log is large.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Log> {
        Self::open_mode(dir.as_ref(), options, Mode::Repair)
    }

    /// Opens the log in `dir` to read only, without taking the writer's
    /// lock and without changing any file: a torn tail is left alone and
    /// reading stops before it. Another process may be appending;
    /// [`Log::refresh`] picks up what it wrote since. Appends fail with
    /// [`Error::ReadOnly`].
    ///
    /// Such a view sees records once they are written and whole, which in
    /// [`Persist::Fsync`](crate::Persist::Fsync) mode can be shortly before the writer acknowledges
    /// them.
    pub fn open_read_only(dir: impl AsRef<Path>, options: Options) -> Result<Log> {
        Self::open_mode(dir.as_ref(), options, Mode::ReadOnly)
    }

    fn open_mode(dir: &Path, options: Options, mode: Mode) -> Result<Log> {
        let dir = dir.to_owned();
        check_options(&options)?;
        let storage = options.storage.clone();
        let lock = if mode == Mode::Repair {
            Some(lock_dir(&*storage, &dir)?)
        } else {
            None
        };
        let rec = recover(
            &*storage,
            &dir,
            &RecoverOptions {
                max_payload: options.max_record_bytes as u32,
                index_interval: options.index_interval_bytes,
                mode,
            },
        )?;
        let mut segments = rec.segments;
        let active = if mode == Mode::ReadOnly {
            None
        } else {
            Some(open_active(&*storage, &dir, &mut segments, rec.start)?)
        };
        let end = segments.last().map(|s| s.end).unwrap_or(0);
        let failed = active.is_none().then(|| Error::ReadOnly {
            op: "append",
            path: dir.clone(),
            kind: std::io::ErrorKind::PermissionDenied,
            message: "the log was opened read-only".into(),
        });
        let shared = Arc::new(Shared {
            dir,
            pending: Mutex::new(Pending {
                buf: Vec::new(),
                records: 0,
                next_offset: end,
                sync_wanted: false,
                failed,
                closed: false,
            }),
            writer_cv: Condvar::new(),
            space: Notify::new(),
            status: watch::Sender::new(Status {
                acked: end,
                synced: end,
                failed: None,
                closed: false,
            }),
            committed: watch::Sender::new(end),
            segments: RwLock::new(segments),
            retention_lock: Mutex::new(()),
            offsets_lock: Mutex::new(()),
            read_only: mode == Mode::ReadOnly,
            opts: options,
        });
        let writer = match active {
            Some(active) => Some(spawn_writer(&shared, active, rec.max_ts)?),
            None => None,
        };
        Ok(Log {
            inner: Arc::new(Inner {
                shared,
                writer,
                recovery: rec.recovery,
                _lock: lock,
            }),
        })
    }

    /// For a log opened with [`Log::open_read_only`]: reads what was
    /// appended since (by another process) and makes it visible to readers.
    /// Returns the new committed end. Does nothing on a writable log.
    pub fn refresh(&self) -> Result<u64> {
        let shared = &self.inner.shared;
        if self.inner.writer.is_some() {
            return Ok(self.committed_end());
        }
        let storage = &*shared.opts.storage;
        let max = shared.opts.max_record_bytes as u32;
        let interval = shared.opts.index_interval_bytes;
        let mut segs = shared.segments.write();
        let mut max_ts = segs.iter().map(|s| s.max_ts).max().unwrap_or(0);
        loop {
            if let Some(seg) = segs.last_mut() {
                let file = storage
                    .open_read(&seg.path)
                    .map_err(|e| Error::io("open", &seg.path, e))?;
                let mut cursor = RecordCursor::new(file, seg.size, max);
                while let Step::Record(h, pos) =
                    cursor.next().map_err(|e| Error::io("read", &seg.path, e))?
                {
                    if h.offset != seg.end {
                        break;
                    }
                    seg.note_record(&h, pos, max_ts, interval);
                    max_ts = max_ts.max(h.timestamp);
                }
            }
            // A segment that starts where the last one ends?
            let next = segs.last().map_or(0, |s| s.end);
            let path = segment_path(&shared.dir, next);
            let Ok(file) = storage.open_read(&path) else {
                break;
            };
            let mut header = [0u8; SEGMENT_HEADER_LEN];
            let n =
                read_full_at(&*file, 0, &mut header).map_err(|e| Error::io("read", &path, e))?;
            if decode_segment_header(&header[..n]) != Ok(next) {
                break;
            }
            if segs.last().is_some_and(|s| s.base == next) {
                break;
            }
            segs.push(SegmentInfo::new(next, path));
        }
        let end = segs.last().map_or(0, |s| s.end);
        drop(segs);
        shared.committed.send_replace(end);
        shared.status.send_modify(|s| {
            s.acked = end;
            s.synced = end;
        });
        Ok(end)
    }
}

/// Creates `dir` if needed (making its entry durable) and takes its `LOCK`:
/// one writer per directory.
fn lock_dir(storage: &dyn Storage, dir: &Path) -> Result<Box<dyn std::any::Any + Send + Sync>> {
    let is_new = storage.list(dir).is_err();
    storage
        .create_dir_all(dir)
        .map_err(|e| Error::io("create directory", dir, e))?;
    if is_new {
        // Make the new directory's own entry durable too.
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        storage
            .sync_dir(parent)
            .map_err(|e| Error::io("fsync directory", parent, e))?;
    }
    storage.lock(&dir.join("LOCK")).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Error::Locked {
                path: dir.to_owned(),
            }
        } else {
            Error::io("lock", dir.join("LOCK"), e)
        }
    })
}

/// The segment the writer appends to: the last one, or a new one at `start`
/// when the log is empty.
fn open_active(
    storage: &dyn Storage,
    dir: &Path,
    segments: &mut Vec<SegmentInfo>,
    start: u64,
) -> Result<Box<dyn WriteFile>> {
    match segments.last() {
        Some(seg) => storage
            .open_append(&seg.path)
            .map_err(|e| Error::io("open", &seg.path, e)),
        None => {
            let (file, info) = create_segment(storage, dir, start)
                .map_err(|(op, path, e)| Error::io(op, path, e))?;
            segments.push(info);
            Ok(file)
        }
    }
}

/// Starts the writer thread on `active`.
fn spawn_writer(
    shared: &Arc<Shared>,
    active: Box<dyn WriteFile>,
    max_ts: u64,
) -> Result<JoinHandle<()>> {
    let writer = Writer {
        shared: shared.clone(),
        active,
        max_ts,
    };
    std::thread::Builder::new()
        .name("busline-log-writer".into())
        .spawn(move || writer.run())
        .map_err(|e| Error::io("spawn writer thread", &shared.dir, e))
}
