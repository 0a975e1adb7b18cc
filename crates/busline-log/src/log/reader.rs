//! Reading records: replay from an offset, then follow the log live.

use std::sync::Arc;

use tokio::sync::watch;

use super::{Shared, Status};
use crate::error::{Error, Result};
use crate::segment::{DecodeError, RecordCursor, Step};

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its offset.
    pub offset: u64,
    /// Its timestamp, unix milliseconds.
    pub timestamp: u64,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Reads records in offset order, from [`Log::read_from`](crate::Log::read_from).
///
/// It only returns acknowledged records. As an [`Iterator`] (or with
/// [`Reader::try_next`]) it stops at the current end of the log;
/// [`Reader::recv`] instead waits for new records: replay, then live, with
/// no gap and no duplicate.
pub struct Reader {
    shared: Arc<Shared>,
    next: u64,
    /// Base offset of the cursor's segment and the cursor.
    cursor: Option<(u64, RecordCursor)>,
    status: watch::Receiver<Status>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("next", &self.next).finish()
    }
}

impl Reader {
    pub(crate) fn new(shared: Arc<Shared>, offset: u64) -> Self {
        let status = shared.status.subscribe();
        Reader {
            shared,
            next: offset,
            cursor: None,
            status,
        }
    }

    /// The offset of the next record this reader returns.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The next record if one is acknowledged, `None` at the end of the log.
    pub fn try_next(&mut self) -> Result<Option<Record>> {
        let acked = *self.shared.committed.borrow();
        if self.next >= acked {
            return Ok(None);
        }
        let mut reopened = false;
        loop {
            if self.cursor.is_none() {
                self.open_cursor()?;
            }
            let (base, cursor) = self.cursor.as_mut().expect("cursor just opened");
            let base = *base;
            let path = || {
                self.shared
                    .segments
                    .read()
                    .iter()
                    .find(|s| s.base == base)
                    .map(|s| s.path.clone())
                    .unwrap_or_else(|| crate::segment::segment_path(&self.shared.dir, base))
            };
            match cursor.next().map_err(|e| Error::io("read", path(), e))? {
                Step::Record(h, _) if h.offset < self.next => continue,
                Step::Record(h, pos) if h.offset > self.next => {
                    return Err(Error::Corrupt {
                        segment: path(),
                        position: pos,
                        offset: self.next,
                        reason: format!("record has offset {}, expected {}", h.offset, self.next),
                    })
                }
                Step::Record(h, _) => {
                    self.next += 1;
                    return Ok(Some(Record {
                        offset: h.offset,
                        timestamp: h.timestamp,
                        payload: cursor.payload().to_vec(),
                    }));
                }
                Step::End | Step::Incomplete(_) => {
                    // The record is acknowledged, so it is in a later segment.
                    let pos = cursor.pos();
                    self.cursor = None;
                    if reopened {
                        return Err(Error::Corrupt {
                            segment: path(),
                            position: pos,
                            offset: self.next,
                            reason: "acknowledged record not found".into(),
                        });
                    }
                    reopened = true;
                }
                Step::Bad(
                    DecodeError::BadCrc {
                        expected, found, ..
                    },
                    pos,
                ) => {
                    return Err(Error::CorruptRecord {
                        segment: path(),
                        position: pos,
                        offset: self.next,
                        expected,
                        found,
                    })
                }
                Step::Bad(DecodeError::TooLong { len, .. }, pos) => {
                    return Err(Error::Corrupt {
                        segment: path(),
                        position: pos,
                        offset: self.next,
                        reason: format!("length field {len} exceeds the maximum record size"),
                    })
                }
            }
        }
    }

    fn open_cursor(&mut self) -> Result<()> {
        let (base, path, pos) = {
            let segs = self.shared.segments.read();
            let first = segs.first().map(|s| s.base).unwrap_or(0);
            if self.next < first {
                return Err(Error::OffsetRemoved {
                    offset: self.next,
                    first,
                });
            }
            let i = segs.partition_point(|s| s.base <= self.next);
            let seg = &segs[i.saturating_sub(1)];
            (seg.base, seg.path.clone(), seg.seek_pos(self.next))
        };
        let file = self.shared.opts.storage.open_read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::OffsetRemoved {
                    offset: self.next,
                    first: self.shared.segments.read().first().map_or(0, |s| s.base),
                }
            } else {
                Error::io("open", &path, e)
            }
        })?;
        let max = self.shared.opts.max_record_bytes as u32;
        self.cursor = Some((base, RecordCursor::new(file, pos, max)));
        Ok(())
    }

    /// The next record, waiting for it to be appended and acknowledged if the
    /// reader is at the end. `None` once the log is closed (or read-only
    /// after a failure) and every acknowledged record was read.
    pub async fn recv(&mut self) -> Result<Option<Record>> {
        loop {
            if let Some(r) = self.try_next()? {
                return Ok(Some(r));
            }
            let target = self.next;
            let status = self
                .status
                .wait_for(|s| s.acked > target || s.closed || s.failed.is_some())
                .await
                .map(|s| s.clone());
            match status {
                Ok(s) if s.acked > target => {}
                _ => return Ok(None),
            }
        }
    }
}

impl Iterator for Reader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        self.try_next().transpose()
    }
}
