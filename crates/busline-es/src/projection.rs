//! Projections (read models): state built from the log's events, resumable
//! from a checkpoint that holds the state and its offset together.
//!
//! ## Offset semantics
//!
//! A checkpoint holds the projection's state *and* the offset of the next
//! record to read, written together in one file (temp file, fsync, rename,
//! fsync of the directory). The state in a checkpoint is exactly the fold of
//! the records before its offset. A projection killed at any point restarts
//! from its last checkpoint: events applied after it are applied again to
//! the checkpointed state — which never contained them — so no event is
//! missed and none is applied twice, even though `apply` needs no
//! idempotence of its own.
//!
//! ## Catching up, then live
//!
//! A new projection (no checkpoint file) starts from the first offset of the
//! log, replays everything ([`ProjectionRunner::catch_up`]) and then follows
//! new records as the log acknowledges them ([`ProjectionRunner::run`]).
//! Records of other aggregate types move the offset on without being
//! applied. An event that cannot be decoded (unknown type, missing upcaster)
//! stops the projection with an error naming it; it is never skipped.
//!
//! ## Queries
//!
//! Queries go through a [`ProjectionHandle`], which reads the in-memory
//! state (which may be ahead of the last checkpoint, never behind it).
//! [`ProjectionHandle::wait_for`] waits until an offset was applied, which a
//! command side can use to read its own writes.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use busline_es::{Projection, ProjectionRunner, ProjectionOptions, Recorded, DomainEvent};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! enum Ev { Added { n: u64 } }
//! impl DomainEvent for Ev { const TYPES: &'static [&'static str] = &["Added"]; }
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Total { sum: u64 }
//! impl Projection for Total {
//!     const AGGREGATE_TYPE: &'static str = "counter";
//!     type Event = Ev;
//!     fn apply(&mut self, r: &Recorded<Ev>) { let Ev::Added { n } = r.event; self.sum += n; }
//! }
//!
//! # let tmp = tempfile::tempdir()?;
//! let log = busline_log::Log::open(tmp.path().join("log"), Default::default())?;
//! let ckpt = tmp.path().join("total.ckpt");
//! # let store = busline_es::AggregateStore::<doc::Counter>::open(log.clone(), Default::default())?;
//! # store.append("c1", 0, vec![doc::Ev::Added { n: 2 }, doc::Ev::Added { n: 3 }], Default::default()).await?;
//! // ... events of "counter" aggregates were appended to `log` ...
//! let mut p = ProjectionRunner::<Total>::open(log.clone(), &ckpt, ProjectionOptions::default())?;
//! p.catch_up()?;
//! assert_eq!(p.handle().query(|t| t.sum), 5);
//! drop(p);
//! // Restarting resumes from the checkpoint: nothing is applied twice.
//! let mut p = ProjectionRunner::<Total>::open(log, &ckpt, ProjectionOptions::default())?;
//! assert_eq!((p.catch_up()?, p.handle().query(|t| t.sum)), (0, 5));
//! # Ok(()) }
//! # mod doc {
//! #   use serde::{Deserialize, Serialize};
//! #   #[derive(Debug, Clone, Serialize, Deserialize)]
//! #   pub enum Ev { Added { n: u64 } }
//! #   impl busline_es::DomainEvent for Ev { const TYPES: &'static [&'static str] = &["Added"]; }
//! #   #[derive(Default, Serialize, Deserialize)]
//! #   pub struct Counter;
//! #   impl busline_es::Aggregate for Counter {
//! #     const TYPE: &'static str = "counter";
//! #     type Command = (); type Event = Ev; type Error = std::convert::Infallible;
//! #     fn handle(&self, _: ()) -> Result<Vec<Ev>, Self::Error> { Ok(vec![]) }
//! #     fn apply(&mut self, _: &Ev) {}
//! #   }
//! # }
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use busline_log::{Log, Reader};
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::event::{decode, DomainEvent, Recorded, Stored};
use crate::snapshot::write_atomic;
use crate::upcast::Upcasters;

const MAGIC: &[u8; 8] = b"BLPROJ01";

/// A read model folded from the events of one aggregate type.
pub trait Projection: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The aggregate type whose events it consumes.
    const AGGREGATE_TYPE: &'static str;
    /// Their event type.
    type Event: DomainEvent;
    /// Applies one event.
    fn apply(&mut self, event: &Recorded<Self::Event>);
}

/// Options of [`ProjectionRunner::open`].
#[derive(Debug, Clone)]
pub struct ProjectionOptions {
    /// Write a checkpoint after this many applied records (and whenever the
    /// projection reaches the end of the log). Default 100.
    pub commit_every: u64,
    /// Converters for old event schema versions.
    pub upcasters: Upcasters,
}

impl Default for ProjectionOptions {
    fn default() -> Self {
        ProjectionOptions {
            commit_every: 100,
            upcasters: Upcasters::new(),
        }
    }
}

impl ProjectionOptions {
    /// Checkpoint every `n` records (at least 1).
    pub fn commit_every(mut self, n: u64) -> Self {
        self.commit_every = n.max(1);
        self
    }

    /// Use these upcasters.
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }
}

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    next: u64,
    s: Value,
}

struct Shared<P> {
    state: RwLock<P>,
    position: watch::Sender<u64>,
}

/// Read access to a projection's state, for the query side. Cheap to clone.
pub struct ProjectionHandle<P> {
    shared: Arc<Shared<P>>,
}

impl<P> Clone for ProjectionHandle<P> {
    fn clone(&self) -> Self {
        ProjectionHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<P> std::fmt::Debug for ProjectionHandle<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionHandle")
            .field("position", &*self.shared.position.borrow())
            .finish()
    }
}

impl<P> ProjectionHandle<P> {
    /// Runs `f` on the current state.
    pub fn query<R>(&self, f: impl FnOnce(&P) -> R) -> R {
        f(&self.shared.state.read())
    }

    /// The offset of the next record the projection will read: every record
    /// below it has been applied.
    pub fn position(&self) -> u64 {
        *self.shared.position.borrow()
    }

    /// Waits until the record at `offset` has been applied (returns at once
    /// if it already was). Returns `false` if the runner went away first.
    pub async fn wait_for(&self, offset: u64) -> bool {
        let mut rx = self.shared.position.subscribe();
        let ok = rx.wait_for(|p| *p > offset).await.is_ok();
        ok
    }
}

/// Feeds a [`Projection`] from a log and checkpoints it.
pub struct ProjectionRunner<P: Projection> {
    log: Log,
    path: PathBuf,
    options: ProjectionOptions,
    reader: Reader,
    committed: u64,
    shared: Arc<Shared<P>>,
}

impl<P: Projection> std::fmt::Debug for ProjectionRunner<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("checkpoint", &self.path)
            .field("position", &self.reader.position())
            .field("committed", &self.committed)
            .finish()
    }
}

impl<P: Projection> ProjectionRunner<P> {
    /// Opens the projection whose checkpoint is `path` (it starts from the
    /// log's first offset with a default state if the file does not exist).
    /// A damaged checkpoint is [`Error::Checkpoint`].
    pub fn open(log: Log, path: impl AsRef<Path>, options: ProjectionOptions) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let (next, state) = match read_checkpoint::<P>(&path)? {
            Some(c) => c,
            None => (log.first_offset(), P::default()),
        };
        let reader = log.read_from(next)?;
        let (position, _) = watch::channel(next);
        Ok(ProjectionRunner {
            log,
            path,
            options,
            reader,
            committed: next,
            shared: Arc::new(Shared {
                state: RwLock::new(state),
                position,
            }),
        })
    }

    /// A handle for queries.
    pub fn handle(&self) -> ProjectionHandle<P> {
        ProjectionHandle {
            shared: self.shared.clone(),
        }
    }

    /// The offset of the next record to read.
    pub fn position(&self) -> u64 {
        self.reader.position()
    }

    /// The offset stored in the last checkpoint.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Applies every record acknowledged so far, checkpointing every
    /// `commit_every` records and at the end. Returns how many records it
    /// read (applied or skipped).
    pub fn catch_up(&mut self) -> Result<u64> {
        let mut n = 0;
        while let Some(rec) = self.reader.try_next()? {
            let applied = Stored::parse(rec.offset, &rec.payload).and_then(|stored| {
                if stored.aggregate_type == P::AGGREGATE_TYPE {
                    let r = decode::<P::Event>(rec.offset, stored, &self.options.upcasters)?;
                    self.shared.state.write().apply(&r);
                }
                Ok(())
            });
            if let Err(e) = applied {
                // Never skipped: the next catch-up starts at this record again.
                self.reader = self.log.read_from(rec.offset)?;
                return Err(e);
            }
            n += 1;
            self.shared.position.send_replace(rec.offset + 1);
            if self.reader.position() - self.committed >= self.options.commit_every {
                self.commit()?;
            }
        }
        if self.reader.position() != self.committed {
            self.commit()?;
        }
        Ok(n)
    }

    /// Writes a checkpoint of the current state and position now.
    pub fn commit(&mut self) -> Result<()> {
        let next = self.reader.position();
        let s =
            serde_json::to_value(&*self.shared.state.read()).map_err(|source| Error::Encode {
                what: "projection state",
                source,
            })?;
        let json = serde_json::to_vec(&Checkpoint { next, s }).map_err(|source| Error::Encode {
            what: "checkpoint",
            source,
        })?;
        write_atomic(&self.path, &crate::snapshot::frame(MAGIC, &json))?;
        self.committed = next;
        Ok(())
    }

    /// Catches up, then follows the log live until `shutdown` resolves or
    /// the log closes; checkpoints before returning.
    ///
    /// Reading records and writing checkpoints are blocking file operations
    /// done on the task's thread; spawn long catch-ups on a multi-thread
    /// runtime (or call [`catch_up`](Self::catch_up) in `spawn_blocking`).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<Self> {
        let mut committed = self.log.subscribe_committed();
        tokio::pin!(shutdown);
        loop {
            self.catch_up()?;
            tokio::select! {
                changed = committed.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = &mut shutdown => break,
            }
        }
        self.catch_up()?;
        Ok(self)
    }
}

/// Reads a checkpoint file: `None` if it does not exist.
fn read_checkpoint<P: DeserializeOwned>(path: &Path) -> Result<Option<(u64, P)>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let bad = |reason: String| Error::Checkpoint {
        path: path.to_owned(),
        reason,
    };
    let json = crate::snapshot::unframe(MAGIC, &bytes).map_err(bad)?;
    let c: Checkpoint = serde_json::from_slice(json).map_err(|e| bad(format!("bad json: {e}")))?;
    let state =
        serde_json::from_value(c.s).map_err(|e| bad(format!("state does not decode: {e}")))?;
    Ok(Some((c.next, state)))
}
