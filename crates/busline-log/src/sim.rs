//! A simulated file system for tests: keeps only what was fsynced across a
//! simulated power loss, and injects `ENOSPC` and `EIO`.
//!
//! The model of a power loss ([`SimStorage::crash_image`]):
//!
//! - a file keeps the bytes it had at its last successful fsync; of the bytes
//!   appended after it, a random prefix may survive, and the end of that
//!   prefix may be garbled (a torn write);
//! - a directory entry (created, renamed or removed file) survives only if
//!   its directory was fsynced after the change;
//! - directories themselves are durable at once.
//!
//! [`SimStorage::crash_at`] makes the `n`-th I/O step fail and every later
//! one too, as if the machine stopped there.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::storage::{ReadFile, Storage, WriteFile};

#[derive(Debug, Clone, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    inodes: Vec<Inode>,
    entries: BTreeMap<PathBuf, usize>,
    durable_entries: BTreeMap<PathBuf, usize>,
    dirs: BTreeSet<PathBuf>,
    steps: u64,
    crash_at: Option<u64>,
    crashed: bool,
    write_budget: Option<u64>,
    fail_sync: bool,
}

impl State {
    fn step(&mut self) -> io::Result<()> {
        if self.crashed {
            return Err(io::Error::other("simulated crash: the machine is down"));
        }
        self.steps += 1;
        if self.crash_at == Some(self.steps) {
            self.crashed = true;
            return Err(io::Error::other("simulated crash"));
        }
        Ok(())
    }
}

/// An in-memory [`Storage`] that simulates power loss and disk faults.
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
}

/// A tiny deterministic random generator (xorshift64*): busline's.
pub use busline::test_util::Rng as SimRng;

impl SimStorage {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many I/O steps were performed so far.
    pub fn steps(&self) -> u64 {
        self.state.lock().steps
    }

    /// Makes the `step`-th I/O step (counting from 1 since creation) fail,
    /// and every step after it.
    pub fn crash_at(&self, step: u64) {
        self.state.lock().crash_at = Some(step);
    }

    /// Whether the simulated crash happened.
    pub fn crashed(&self) -> bool {
        self.state.lock().crashed
    }

    /// Lets only `bytes` more bytes be appended; further appends fail with
    /// `StorageFull` (ENOSPC) after writing what fits.
    pub fn set_write_budget(&self, bytes: Option<u64>) {
        self.state.lock().write_budget = bytes;
    }

    /// Makes every fsync fail with EIO.
    pub fn set_fail_sync(&self, fail: bool) {
        self.state.lock().fail_sync = fail;
    }

    /// The file system as it would be found after a power loss now.
    /// `seed` picks how much of the unsynced data survives.
    pub fn crash_image(&self, seed: u64) -> SimStorage {
        let mut rng = SimRng::new(seed);
        let st = self.state.lock();
        let mut new = State {
            dirs: st.dirs.clone(),
            ..State::default()
        };
        let mut map = BTreeMap::new();
        for (path, &ino) in &st.durable_entries {
            let old = &st.inodes[ino];
            let new_ino = *map.entry(ino).or_insert_with(|| {
                let mut data = old.durable.clone();
                if old.data.len() > data.len() && old.data.starts_with(&data) {
                    let extra = &old.data[data.len()..];
                    match rng.below(3) {
                        0 => {}
                        1 => {
                            let keep = rng.below(extra.len() as u64 + 1) as usize;
                            data.extend_from_slice(&extra[..keep]);
                        }
                        _ => {
                            let keep = rng.below(extra.len() as u64 + 1) as usize;
                            let start = data.len();
                            data.extend_from_slice(&extra[..keep]);
                            let garble = rng.below(keep as u64 + 1) as usize;
                            for b in &mut data[start + keep - garble..] {
                                *b = rng.next_u64() as u8;
                            }
                        }
                    }
                }
                new.inodes.push(Inode {
                    durable: data.clone(),
                    data,
                });
                new.inodes.len() - 1
            });
            new.entries.insert(path.clone(), new_ino);
        }
        new.durable_entries = new.entries.clone();
        SimStorage {
            state: Arc::new(Mutex::new(new)),
        }
    }

    /// The current (not necessarily durable) bytes of a file.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state.lock();
        st.entries.get(path).map(|&i| st.inodes[i].data.clone())
    }

    /// Replaces a file's bytes, durably (creating it and its directory entry).
    pub fn set_file_bytes(&self, path: &Path, bytes: Vec<u8>) {
        let mut st = self.state.lock();
        if let Some(parent) = path.parent() {
            st.dirs.insert(parent.to_owned());
        }
        st.inodes.push(Inode {
            data: bytes.clone(),
            durable: bytes,
        });
        let ino = st.inodes.len() - 1;
        st.entries.insert(path.to_owned(), ino);
        st.durable_entries.insert(path.to_owned(), ino);
    }
}

struct SimFile {
    state: Arc<Mutex<State>>,
    ino: usize,
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

impl WriteFile for SimFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock();
        st.step()?;
        let (n, err) = match st.write_budget {
            Some(budget) if (buf.len() as u64) > budget => (
                budget as usize,
                Some(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "no space left on device (simulated)",
                )),
            ),
            _ => (buf.len(), None),
        };
        if let Some(b) = st.write_budget.as_mut() {
            *b -= n as u64;
        }
        st.inodes[self.ino].data.extend_from_slice(&buf[..n]);
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut st = self.state.lock();
        st.step()?;
        if st.fail_sync {
            return Err(eio());
        }
        let ino = &mut st.inodes[self.ino];
        ino.durable = ino.data.clone();
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        st.step()?;
        st.inodes[self.ino].data.truncate(len as usize);
        Ok(())
    }

    fn len(&self) -> u64 {
        self.state.lock().inodes[self.ino].data.len() as u64
    }
}

impl ReadFile for SimFile {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let st = self.state.lock();
        let data = &st.inodes[self.ino].data;
        if pos >= data.len() as u64 {
            return Ok(0);
        }
        let n = buf.len().min(data.len() - pos as usize);
        buf[..n].copy_from_slice(&data[pos as usize..pos as usize + n]);
        Ok(n)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.state.lock().inodes[self.ino].data.len() as u64)
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found (simulated)", path.display()),
    )
}

impl Storage for SimStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.step()?;
        for d in dir.ancestors() {
            st.dirs.insert(d.to_owned());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state.lock();
        if st.crashed {
            return Err(io::Error::other("simulated crash: the machine is down"));
        }
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let files = st.entries.keys();
        let dirs = st.dirs.iter();
        Ok(files
            .chain(dirs)
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let mut st = self.state.lock();
        st.step()?;
        if !path.parent().is_some_and(|d| st.dirs.contains(d)) {
            return Err(not_found(path));
        }
        st.inodes.push(Inode::default());
        let ino = st.inodes.len() - 1;
        st.entries.insert(path.to_owned(), ino);
        Ok(Box::new(SimFile {
            state: self.state.clone(),
            ino,
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let st = self.state.lock();
        let ino = *st.entries.get(path).ok_or_else(|| not_found(path))?;
        Ok(Box::new(SimFile {
            state: self.state.clone(),
            ino,
        }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        let st = self.state.lock();
        let ino = *st.entries.get(path).ok_or_else(|| not_found(path))?;
        Ok(Box::new(SimFile {
            state: self.state.clone(),
            ino,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.step()?;
        let ino = st.entries.remove(from).ok_or_else(|| not_found(from))?;
        st.entries.insert(to.to_owned(), ino);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.step()?;
        st.entries.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.step()?;
        if st.fail_sync {
            return Err(eio());
        }
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        st.durable_entries.retain(|p, _| !in_dir(p));
        let now: Vec<(PathBuf, usize)> = st
            .entries
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        st.durable_entries.extend(now);
        Ok(())
    }

    fn lock(&self, _path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        Ok(Box::new(()))
    }
}
