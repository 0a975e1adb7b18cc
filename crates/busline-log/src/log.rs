//! The log handle, its options, and the writer thread that group-commits.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::{watch, Notify};

use crate::error::{Error, Result};
use crate::reader::Reader;
use crate::recovery::{recover, Mode, RecoverOptions, Recovery};
use crate::segment::{
    decode_segment_header, encode_record, encode_segment_header, parse_record_header, segment_path,
    RecordCursor, SegmentInfo, Step, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::storage::{read_full_at, StdStorage, Storage, WriteFile};

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
    /// [`Log::sync`] forces an fsync.
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
    /// [`Persist::Fsync`] mode can be shortly before the writer acknowledges
    /// them.
    pub fn open_read_only(dir: impl AsRef<Path>, options: Options) -> Result<Log> {
        Self::open_mode(dir.as_ref(), options, Mode::ReadOnly)
    }

    fn open_mode(dir: &Path, options: Options, mode: Mode) -> Result<Log> {
        let dir = dir.to_owned();
        check_options(&options)?;
        let storage = options.storage.clone();
        let lock = if mode == Mode::Repair {
            let is_new = storage.list(&dir).is_err();
            storage
                .create_dir_all(&dir)
                .map_err(|e| Error::io("create directory", &dir, e))?;
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
            let lock = storage.lock(&dir.join("LOCK")).map_err(|e| {
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    Error::Locked { path: dir.clone() }
                } else {
                    Error::io("lock", dir.join("LOCK"), e)
                }
            })?;
            Some(lock)
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
        let active: Option<Box<dyn WriteFile>> = match (mode, segments.last()) {
            (Mode::ReadOnly, _) => None,
            (_, Some(seg)) => Some(
                storage
                    .open_append(&seg.path)
                    .map_err(|e| Error::io("open", &seg.path, e))?,
            ),
            (_, None) => {
                let (file, info) = create_segment(&*storage, &dir, rec.start)
                    .map_err(|(op, path, e)| Error::io(op, path, e))?;
                segments.push(info);
                Some(file)
            }
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
            Some(active) => {
                let writer = Writer {
                    shared: shared.clone(),
                    active,
                    max_ts: rec.max_ts,
                };
                let handle = std::thread::Builder::new()
                    .name("busline-log-writer".into())
                    .spawn(move || writer.run())
                    .map_err(|e| Error::io("spawn writer thread", &shared.dir, e))?;
                Some(handle)
            }
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

    /// Appends one record stamped with the current time; resolves to its
    /// offset once it is acknowledged (see [`Persist`]).
    pub async fn append(&self, payload: impl AsRef<[u8]>) -> Result<u64> {
        self.append_batch_at(now_millis(), [payload])
            .await
            .map(|r| r.start)
    }

    /// Appends one record with the given timestamp (unix milliseconds).
    pub async fn append_at(&self, timestamp: u64, payload: impl AsRef<[u8]>) -> Result<u64> {
        self.append_batch_at(timestamp, [payload])
            .await
            .map(|r| r.start)
    }

    /// Appends records with consecutive offsets, all stamped with the current
    /// time; resolves to their offsets once all are acknowledged. Either all
    /// of them are accepted or none.
    pub async fn append_batch<I>(&self, payloads: I) -> Result<Range<u64>>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        self.append_batch_at(now_millis(), payloads).await
    }

    /// Like [`Log::append_batch`] with the given timestamp for every record.
    pub async fn append_batch_at<I>(&self, timestamp: u64, payloads: I) -> Result<Range<u64>>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let range = self.submit(timestamp, payloads).await?;
        self.wait_acked(range.end).await?;
        Ok(range)
    }

    /// Queues records for the writer without waiting for them to be
    /// acknowledged: the offsets are fixed at once, and the returned
    /// [`AppendTicket`] resolves when they are acknowledged. Lets one task
    /// keep many batches in flight (pipelining); waits only while the
    /// pending batch is full (backpressure).
    pub async fn submit_batch<I>(&self, timestamp: u64, payloads: I) -> Result<AppendTicket>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let offsets = self.submit(timestamp, payloads).await?;
        Ok(AppendTicket {
            log: self.clone(),
            offsets,
        })
    }

    /// Queues records for the writer; returns their offsets.
    async fn submit<I>(&self, timestamp: u64, payloads: I) -> Result<Range<u64>>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let shared = &self.inner.shared;
        let max_len = shared.opts.max_record_bytes;
        let mut payloads = payloads.into_iter().peekable();
        loop {
            let notified = shared.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut p = shared.pending.lock();
                if let Some(e) = &p.failed {
                    return Err(e.clone());
                }
                if p.closed {
                    return Err(Error::Closed {
                        path: shared.dir.clone(),
                    });
                }
                let has_room = p.buf.len() < shared.opts.max_batch_bytes
                    && p.records < shared.opts.max_batch_records;
                if p.buf.is_empty() || has_room {
                    let start_len = p.buf.len();
                    let start = p.next_offset;
                    let mut offset = start;
                    for payload in payloads.by_ref() {
                        let payload = payload.as_ref();
                        if payload.len() > max_len {
                            p.buf.truncate(start_len);
                            return Err(Error::RecordTooLarge {
                                len: payload.len(),
                                max: max_len,
                            });
                        }
                        encode_record(&mut p.buf, offset, timestamp, payload);
                        offset += 1;
                    }
                    p.records += (offset - start) as usize;
                    p.next_offset = offset;
                    drop(p);
                    shared.writer_cv.notify_one();
                    return Ok(start..offset);
                }
            }
            notified.await;
        }
    }

    async fn wait_acked(&self, end: u64) -> Result<()> {
        let mut rx = self.inner.shared.status.subscribe();
        let status = rx
            .wait_for(|s| s.acked >= end || s.failed.is_some() || s.closed)
            .await
            .map(|s| s.clone())
            .map_err(|_| Error::Closed {
                path: self.inner.shared.dir.clone(),
            })?;
        if status.acked >= end {
            Ok(())
        } else if let Some(e) = status.failed {
            Err(e)
        } else {
            Err(Error::Closed {
                path: self.inner.shared.dir.clone(),
            })
        }
    }

    /// Fsyncs everything acknowledged so far (useful in
    /// [`Persist::Buffered`] mode; in [`Persist::Fsync`] mode it returns as
    /// soon as pending appends are acknowledged).
    pub async fn sync(&self) -> Result<()> {
        let shared = &self.inner.shared;
        let end = {
            let mut p = shared.pending.lock();
            if let Some(e) = &p.failed {
                return Err(e.clone());
            }
            p.sync_wanted = true;
            p.next_offset
        };
        shared.writer_cv.notify_one();
        let mut rx = shared.status.subscribe();
        let status = rx
            .wait_for(|s| s.synced >= end || s.failed.is_some() || s.closed)
            .await
            .map(|s| s.clone())
            .map_err(|_| Error::Closed {
                path: shared.dir.clone(),
            })?;
        match status.failed {
            Some(e) if status.synced < end => Err(e),
            _ => Ok(()),
        }
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

    /// Applies the retention options now: deletes the oldest whole segments
    /// (never the active one) while the log is larger than
    /// [`Options::retention_bytes`] or their newest record is older than
    /// [`Options::retention_age`]. Returns the paths removed. The writer
    /// also does this each time it starts a new segment.
    /// A read-only view removes nothing: it fails with [`Error::ReadOnly`].
    pub fn apply_retention(&self) -> Result<Vec<PathBuf>> {
        let shared = &self.inner.shared;
        if shared.read_only {
            return Err(Error::ReadOnly {
                op: "apply retention",
                path: shared.dir.clone(),
                kind: std::io::ErrorKind::PermissionDenied,
                message: "the log was opened read-only".into(),
            });
        }
        shared.apply_retention(now_millis())
    }
}

/// Records queued by [`Log::submit_batch`], not yet known to be acknowledged.
#[derive(Debug)]
#[must_use = "the records are only known to be durable once `acknowledged` resolves"]
pub struct AppendTicket {
    log: Log,
    offsets: Range<u64>,
}

impl AppendTicket {
    /// The offsets the records got.
    pub fn offsets(&self) -> Range<u64> {
        self.offsets.clone()
    }

    /// Waits until the records are acknowledged (see [`Persist`]).
    pub async fn acknowledged(self) -> Result<Range<u64>> {
        self.log.wait_acked(self.offsets.end).await?;
        Ok(self.offsets)
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

fn check_options(o: &Options) -> Result<()> {
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

type OpError = (&'static str, PathBuf, std::io::Error);

/// Creates a segment file with its header, fsyncs it and its directory.
fn create_segment(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
) -> Result<(Box<dyn WriteFile>, SegmentInfo), OpError> {
    let path = segment_path(dir, base);
    let mut file = storage
        .create(&path)
        .map_err(|e| ("create segment", path.clone(), e))?;
    file.append(&encode_segment_header(base))
        .map_err(|e| ("write", path.clone(), e))?;
    file.sync().map_err(|e| ("fsync", path.clone(), e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| ("fsync directory", dir.to_owned(), e))?;
    Ok((file, SegmentInfo::new(base, path)))
}

impl Shared {
    pub(crate) fn apply_retention(&self, now: u64) -> Result<Vec<PathBuf>> {
        let _guard = self.retention_lock.lock();
        let mut removed = Vec::new();
        loop {
            let victim = {
                let mut segs = self.segments.write();
                if segs.len() <= 1 {
                    break;
                }
                let total: u64 = segs.iter().map(|s| s.size).sum();
                let too_big = self.opts.retention_bytes.is_some_and(|max| total > max);
                let too_old = self
                    .opts
                    .retention_age
                    .is_some_and(|age| segs[0].max_ts.saturating_add(age.as_millis() as u64) < now);
                if !(too_big || too_old) {
                    break;
                }
                segs.remove(0)
            };
            self.opts
                .storage
                .remove(&victim.path)
                .map_err(|e| Error::io("remove", &victim.path, e))?;
            removed.push(victim.path);
        }
        if !removed.is_empty() {
            self.opts
                .storage
                .sync_dir(&self.dir)
                .map_err(|e| Error::io("fsync directory", &self.dir, e))?;
        }
        Ok(removed)
    }
}

/// The writer thread: takes the pending batch, writes it, fsyncs once,
/// acknowledges every record in it.
struct Writer {
    shared: Arc<Shared>,
    active: Box<dyn WriteFile>,
    max_ts: u64,
}

impl Writer {
    fn run(mut self) {
        let shared = self.shared.clone();
        let opts = &shared.opts;
        let mut spare: Vec<u8> = Vec::new();
        loop {
            let (end, sync_wanted, closing) = {
                let mut p = shared.pending.lock();
                while p.buf.is_empty() && !p.sync_wanted && !p.closed {
                    shared.writer_cv.wait(&mut p);
                }
                if !opts.max_delay.is_zero() && !p.closed {
                    let deadline = Instant::now() + opts.max_delay;
                    while p.buf.len() < opts.max_batch_bytes
                        && p.records < opts.max_batch_records
                        && !p.closed
                    {
                        if shared.writer_cv.wait_until(&mut p, deadline).timed_out() {
                            break;
                        }
                    }
                }
                std::mem::swap(&mut p.buf, &mut spare);
                p.records = 0;
                let sync_wanted = std::mem::take(&mut p.sync_wanted);
                (p.next_offset, sync_wanted, p.closed && p.buf.is_empty())
            };
            shared.space.notify_waiters();
            let must_sync = opts.persist == Persist::Fsync || sync_wanted || closing;
            let result = self.write_batch(&spare, must_sync);
            spare.clear();
            match result {
                Ok(()) => {
                    // `committed` first: whoever saw `status.acked` move
                    // (appenders, readers) then finds `committed` there too.
                    shared.committed.send_replace(end);
                    shared.status.send_modify(|s| {
                        s.acked = end;
                        if must_sync {
                            s.synced = end;
                        }
                    });
                }
                Err((op, path, e)) => {
                    let err = Error::ReadOnly {
                        op,
                        path,
                        kind: e.kind(),
                        message: e.to_string(),
                    };
                    {
                        let mut p = shared.pending.lock();
                        p.failed = Some(err.clone());
                        p.buf = Vec::new();
                        p.records = 0;
                    }
                    shared.status.send_modify(|s| s.failed = Some(err));
                    shared.space.notify_waiters();
                    return;
                }
            }
            if closing {
                return;
            }
        }
    }

    /// Writes `buf` (whole encoded records), starting new segments as needed.
    fn write_batch(&mut self, buf: &[u8], sync: bool) -> Result<(), OpError> {
        let segment_bytes = self.shared.opts.segment_bytes;
        let mut notes = Vec::new();
        let mut chunk_start = 0;
        let mut i = 0;
        let mut size = self.active.len();
        let mut max_ts = self.max_ts;
        while i < buf.len() {
            let h = parse_record_header(&buf[i..]);
            let rec_len = h.record_len() as u64;
            if size > SEGMENT_HEADER_LEN as u64 && size + rec_len > segment_bytes {
                self.write_chunk(&buf[chunk_start..i], &mut notes)?;
                self.roll(h.offset)?;
                chunk_start = i;
                size = self.active.len();
            }
            notes.push((h, size, max_ts));
            max_ts = max_ts.max(h.timestamp);
            size += rec_len;
            i += rec_len as usize;
        }
        self.write_chunk(&buf[chunk_start..], &mut notes)?;
        if sync {
            let path = self.active_path();
            self.active.sync().map_err(|e| ("fsync", path, e))?;
        }
        self.max_ts = max_ts;
        Ok(())
    }

    fn active_path(&self) -> PathBuf {
        self.shared
            .segments
            .read()
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_default()
    }

    fn write_chunk(
        &mut self,
        chunk: &[u8],
        notes: &mut Vec<(crate::segment::RecordHeader, u64, u64)>,
    ) -> Result<(), OpError> {
        if !chunk.is_empty() {
            if let Err(e) = self.active.append(chunk) {
                return Err(("write", self.active_path(), e));
            }
        }
        let interval = self.shared.opts.index_interval_bytes;
        let mut segs = self.shared.segments.write();
        let seg = segs.last_mut().expect("an active segment");
        for (h, pos, max_ts_before) in notes.drain(..) {
            seg.note_record(&h, pos, max_ts_before, interval);
        }
        Ok(())
    }

    /// Closes the active segment (fsync) and starts a new one at `base`.
    fn roll(&mut self, base: u64) -> Result<(), OpError> {
        let path = self.active_path();
        self.active.sync().map_err(|e| ("fsync", path, e))?;
        let storage = self.shared.opts.storage.clone();
        let (file, info) = create_segment(&*storage, &self.shared.dir, base)?;
        self.active = file;
        self.shared.segments.write().push(info);
        // Retention failures do not lose data; they are reported by
        // `Log::apply_retention` when called explicitly.
        let _ = self.shared.apply_retention(now_millis());
        Ok(())
    }
}
