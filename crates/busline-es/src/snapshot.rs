//! Snapshots: an aggregate's state at a version, one checksummed file per
//! aggregate.
//!
//! # Byte layout
//!
//! ```text
//! <dir>/<hex of the aggregate id>.snap
//! 0        8         12         16
//! +--------+---------+----------+---------------------------------------------+
//! | magic  | crc32c  | length   | JSON {"t": type, "id": id, "v": version,    |
//! | 8 B    | u32 LE  | u32 LE   |       "s": state}      (`length` bytes)     |
//! +--------+---------+----------+---------------------------------------------+
//! magic = "BLSNAP01", crc32c (Castagnoli) over the JSON bytes
//! ```
//!
//! A snapshot is written to `<name>.tmp`, fsynced, renamed over the old one,
//! and the directory is fsynced: a crash leaves the old snapshot or the new
//! one, never a mix.
//!
//! ## Fallback
//!
//! A snapshot that is missing, truncated, fails its checksum, names another
//! aggregate, is newer than the aggregate's stream, or no longer decodes into
//! the state type is ignored with a `tracing::warn!`, and the aggregate is
//! rebuilt by a full replay. A snapshot is an optimisation: it can make a load
//! faster, never wrong.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"BLSNAP01";
const HEADER: usize = 16;

#[derive(Serialize, Deserialize)]
struct Body {
    t: String,
    id: String,
    v: u64,
    s: Value,
}

/// The snapshot files of one event store.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
}

impl SnapshotStore {
    /// Snapshots in `dir` (created if missing).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        Ok(SnapshotStore { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding the snapshot of `id`.
    pub fn path(&self, id: &str) -> PathBuf {
        let mut name = String::with_capacity(id.len() * 2 + 5);
        for b in id.bytes() {
            name.push_str(&format!("{b:02x}"));
        }
        name.push_str(".snap");
        self.dir.join(name)
    }

    /// Durably replaces the snapshot of `id` with `state` at `version`.
    pub fn write<S: Serialize>(
        &self,
        aggregate_type: &str,
        id: &str,
        version: u64,
        state: &S,
    ) -> Result<()> {
        let body = Body {
            t: aggregate_type.to_owned(),
            id: id.to_owned(),
            v: version,
            s: serde_json::to_value(state).map_err(|source| Error::Encode {
                what: "snapshot state",
                source,
            })?,
        };
        let json = serde_json::to_vec(&body).map_err(|source| Error::Encode {
            what: "snapshot",
            source,
        })?;
        let path = self.path(id);
        write_atomic(&path, &frame(MAGIC, &json))
    }

    /// Reads the snapshot of `id`: `Ok(None)` if there is none;
    /// `Err(reason)` if it is damaged or belongs to something else.
    pub fn read<S: DeserializeOwned>(
        &self,
        aggregate_type: &str,
        id: &str,
    ) -> std::result::Result<Option<(u64, S)>, String> {
        let path = self.path(id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let json = unframe(MAGIC, &bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let body: Body = serde_json::from_slice(json)
            .map_err(|e| format!("{}: bad json: {e}", path.display()))?;
        if body.t != aggregate_type || body.id != id {
            return Err(format!(
                "{}: belongs to {} {:?}, not {} {:?}",
                path.display(),
                body.t,
                body.id,
                aggregate_type,
                id
            ));
        }
        let state = serde_json::from_value(body.s)
            .map_err(|e| format!("{}: state does not decode: {e}", path.display()))?;
        Ok(Some((body.v, state)))
    }
}

/// Frames `json` as `magic | crc32c | length | json` (the layout in the module docs).
pub(crate) fn frame(magic: &[u8; 8], json: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + json.len());
    bytes.extend_from_slice(magic);
    bytes.extend_from_slice(&crc32c::crc32c(json).to_le_bytes());
    bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
    bytes.extend_from_slice(json);
    bytes
}

/// Checks a [`frame`]d file and returns its JSON, or says what is wrong with it.
pub(crate) fn unframe<'a>(
    magic: &[u8; 8],
    bytes: &'a [u8],
) -> std::result::Result<&'a [u8], String> {
    if bytes.len() < HEADER || &bytes[..8] != magic {
        return Err("bad header".into());
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    let json = &bytes[HEADER..];
    if json.len() != len {
        return Err(format!(
            "length {len} in header, {} bytes present",
            json.len()
        ));
    }
    let found = crc32c::crc32c(json);
    if found != crc {
        return Err(format!("crc expected {crc:#010x}, found {found:#010x}"));
    }
    Ok(json)
}

/// Writes `bytes` to `path` atomically and durably: temp file, fsync,
/// rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))?;
    Ok(())
}
