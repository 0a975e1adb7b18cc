//! Named consumer offsets, stored crash-safely.
//!
//! Each name is one file `consumers/<name>.offset` in the log directory
//! holding the offset (8 bytes) and a CRC32C of it (4 bytes). A commit writes
//! a temporary file, fsyncs it, renames it over the old one and fsyncs the
//! directory: after a crash the stored offset is the old or the new one,
//! never a mix.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::log::Log;
use crate::storage::read_full_at;

const DIR: &str = "consumers";

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConsumerName {
            name: name.to_owned(),
        })
    }
}

fn offsets_dir(log_dir: &Path) -> PathBuf {
    log_dir.join(DIR)
}

impl Log {
    /// Durably stores `offset` as the position of the consumer `name`
    /// (typically the next offset it wants to read). Resolves once the value
    /// is fsynced.
    pub async fn commit_offset(&self, name: &str, offset: u64) -> Result<()> {
        check_name(name)?;
        let shared = self.shared().clone();
        let name = name.to_owned();
        let task = move || {
            let _guard = shared.offsets_lock.lock();
            let storage = &*shared.opts.storage;
            let dir = offsets_dir(&shared.dir);
            storage
                .create_dir_all(&dir)
                .map_err(|e| Error::io("create directory", &dir, e))?;
            let tmp = dir.join(format!("{name}.tmp"));
            let dst = dir.join(format!("{name}.offset"));
            let mut bytes = offset.to_le_bytes().to_vec();
            bytes.extend_from_slice(&crc32c::crc32c(&offset.to_le_bytes()).to_le_bytes());
            let mut f = storage
                .create(&tmp)
                .map_err(|e| Error::io("create", &tmp, e))?;
            f.append(&bytes).map_err(|e| Error::io("write", &tmp, e))?;
            f.sync().map_err(|e| Error::io("fsync", &tmp, e))?;
            drop(f);
            storage
                .rename(&tmp, &dst)
                .map_err(|e| Error::io("rename", &tmp, e))?;
            storage
                .sync_dir(&dir)
                .map_err(|e| Error::io("fsync directory", &dir, e))?;
            // The first commit also created `consumers/` itself.
            storage
                .sync_dir(&shared.dir)
                .map_err(|e| Error::io("fsync directory", &shared.dir, e))
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt.spawn_blocking(task).await.map_err(|e| {
                Error::io(
                    "commit offset",
                    self.dir(),
                    std::io::Error::other(e.to_string()),
                )
            })?,
            Err(_) => task(),
        }
    }

    /// The offset last committed for the consumer `name`, if any.
    pub fn committed_offset(&self, name: &str) -> Result<Option<u64>> {
        check_name(name)?;
        let shared = self.shared();
        let path = offsets_dir(&shared.dir).join(format!("{name}.offset"));
        let file = match shared.opts.storage.open_read(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let mut buf = [0u8; 12];
        let n = read_full_at(&*file, 0, &mut buf).map_err(|e| Error::io("read", &path, e))?;
        if n != 12 {
            return Err(Error::CorruptConsumerOffset {
                path,
                reason: format!("{n} bytes, expected 12"),
            });
        }
        let offset = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
        let stored = u32::from_le_bytes(buf[8..].try_into().expect("4 bytes"));
        let found = crc32c::crc32c(&buf[..8]);
        if stored != found {
            return Err(Error::CorruptConsumerOffset {
                path,
                reason: format!("crc expected {stored:#010x}, found {found:#010x}"),
            });
        }
        Ok(Some(offset))
    }
}
