//! Appending: queueing records for the writer, waiting for their
//! acknowledgement, and [`AppendTicket`] for appends kept in flight.

use std::ops::Range;

use super::{now_millis, Log};
use crate::error::{Error, Result};
use crate::segment::encode_record;

impl Log {
    /// Appends one record stamped with the current time; resolves to its
    /// offset once it is acknowledged (see [`Persist`](crate::Persist)).
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
    /// [`Persist::Buffered`](crate::Persist::Buffered) mode; in [`Persist::Fsync`](crate::Persist::Fsync) mode it returns as
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

    /// Waits until the records are acknowledged (see [`Persist`](crate::Persist)).
    pub async fn acknowledged(self) -> Result<Range<u64>> {
        self.log.wait_acked(self.offsets.end).await?;
        Ok(self.offsets)
    }
}
