//! Retention: removing the oldest whole segments by size or age.

use std::path::PathBuf;

use super::{now_millis, Log, Shared};
use crate::error::{Error, Result};

impl Log {
    /// Applies the retention options now: deletes the oldest whole segments
    /// (never the active one) while the log is larger than
    /// [`Options::retention_bytes`](crate::Options::retention_bytes) or their newest record is older than
    /// [`Options::retention_age`](crate::Options::retention_age). Returns the paths removed. The writer
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
