//! The writer thread that group-commits: it takes the pending batch, writes
//! it, fsyncs once and acknowledges every record in it, starting new
//! segments as the active one fills.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::{now_millis, Persist, Shared};
use crate::error::Error;
use crate::segment::{
    encode_segment_header, parse_record_header, segment_path, SegmentInfo, SEGMENT_HEADER_LEN,
};
use crate::storage::{Storage, WriteFile};

/// A failed file operation: its name, the file, the error.
type OpError = (&'static str, PathBuf, std::io::Error);

/// Creates a segment file with its header, fsyncs it and its directory.
pub(super) fn create_segment(
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

/// The writer thread: takes the pending batch, writes it, fsyncs once,
/// acknowledges every record in it.
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    /// The segment being appended to (the last one).
    pub(super) active: Box<dyn WriteFile>,
    /// The largest timestamp written so far.
    pub(super) max_ts: u64,
}

impl Writer {
    /// Runs until the log is closed or a write or fsync fails.
    pub(super) fn run(mut self) {
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
