//! The ring that lossless and lossy subscribers read.
//!
//! A publisher appends each event once; each member reads it at its own
//! cursor, **without taking the subscriber's lock**:
//!
//! - Slots are locked one by one (a read lock per reader, the write lock for
//!   the publisher), as `tokio::sync::broadcast` does, so a reader and the
//!   publisher meet only on the slot they both touch.
//! - The publisher appends under the subscriber's lock (it orders publishers
//!   and wake-ups) and then moves `tail` on (`Release`); a reader learns what
//!   is new from `tail` (`Acquire`) and takes the lock only to park.
//! - Each member publishes its cursor in its own [`MemberCell`]. A lossless
//!   publisher finds the slowest member from those when the ring looks full.
//! - A lossless reader that moved its cursor checks [`Ring::flags`] (both
//!   sides `SeqCst`, so one of them always sees the other): a publisher
//!   waiting for room, or backpressure to clear, makes the reader that can
//!   change that take the lock and settle it.
//! - Each slot counts the members still to read it; the last one drops the
//!   slot's reference, so a read event is not kept alive by the ring.
//!
//! Slots are allocated in chunks as the ring first fills them, so a large
//! capacity costs memory only once it is used.

#![allow(unsafe_code)] // The lossless read path: see `Slot` and the README's benchmark.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use crate::envelope::Envelope;
use crate::sync::{AtomicU32, AtomicU64, RwLock, UnsafeCell};

/// Slots per allocated chunk.
const CHUNK: usize = 1024;

/// A publisher waits for room (set by the publisher, cleared under the lock
/// when it is woken).
pub(crate) const WAITING: u32 = 1;
/// Backpressure is raised and waits for the ring to drain to its low watermark.
pub(crate) const PRESSURED: u32 = 2;

/// Keeps a value on a cache line of its own (what one core writes often
/// does not slow down what another reads).
#[repr(align(128))]
pub(crate) struct Padded<V>(pub(crate) V);

impl<V> std::ops::Deref for Padded<V> {
    type Target = V;
    fn deref(&self) -> &V {
        &self.0
    }
}

/// One position of the ring.
///
/// Who touches `pos` and `env`, and when (the safety argument of every
/// `unsafe` block below):
/// - **Lossless rings** take no lock. The publisher writes a slot only when
///   every member's cursor is past the event it held before (it checks
///   their cursors, published with `Release` after the member was done with
///   the slot, or it holds the subscriber's lock that a leaving member
///   released the slot under). Members read it only between the ring's
///   `tail` (`Acquire`, published after the write) and their own cursor
///   moving past it; each clones, then decrements `rem`, and the one that
///   brings it to 0 (after every other member's clone, by the `AcqRel`
///   chain on `rem`) takes the ring's reference. Nobody reads `pos`.
/// - **Lossy rings** write over events members may not have read, so every
///   access is under `lock`: the publisher writes under the exclusive lock;
///   members read `pos` under the shared one and, when it is theirs, clone
///   and take as on a lossless ring (a member whose `pos` is not the slot's
///   looks at nothing else, so `rem` alone orders the members).
/// - Either way, the only member still to read a slot (it sees `rem` at 1)
///   moves the event out instead of cloning it.
struct Slot<T> {
    lock: RwLock<()>,
    /// The position written here last (`u64::MAX`: never written).
    pos: UnsafeCell<u64>,
    env: UnsafeCell<Option<Arc<Envelope<T>>>>,
    /// Members present when it was written that have not read it yet.
    rem: AtomicU32,
}

/// Slots allocated together, the first time the ring reaches them.
type Chunk<T> = Box<[Slot<T>]>;

/// The slots, the end and the flags of one ring.
pub(crate) struct Ring<T> {
    capacity: u64,
    lossless: bool,
    chunks: Box<[OnceLock<Chunk<T>>]>,
    /// The position the next event gets: written under the subscriber's lock.
    tail: Padded<AtomicU64>,
    /// [`WAITING`] and [`PRESSURED`].
    pub(crate) flags: Padded<AtomicU32>,
}

// SAFETY: the cells are shared by the rules on `Slot`; what they hold is
// `Arc<Envelope<T>>`, sent and shared between threads like the rest of the bus.
unsafe impl<T: Send + Sync> Sync for Ring<T> {}
unsafe impl<T: Send + Sync> Send for Ring<T> {}

/// What a member publishes for the publisher and for statistics; written
/// only by the member's own [`Subscription`](crate::Subscription).
#[derive(Default)]
pub(crate) struct MemberCell {
    /// The next position it reads: everything before it is read or lost.
    pub(crate) cursor: AtomicU64,
    pub(crate) received: AtomicU64,
    /// Lost (lossy) and reported as `Lagged`.
    pub(crate) dropped: AtomicU64,
    /// The most events it has had waiting.
    pub(crate) peak: AtomicU64,
}

impl MemberCell {
    pub(crate) fn new(cursor: u64) -> Padded<MemberCell> {
        Padded(MemberCell {
            cursor: AtomicU64::new(cursor),
            received: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            peak: AtomicU64::new(0),
        })
    }
}

impl<T> Ring<T> {
    pub(crate) fn new(capacity: usize, lossless: bool) -> Self {
        let chunks = capacity.div_ceil(CHUNK);
        Ring {
            capacity: capacity as u64,
            lossless,
            chunks: (0..chunks).map(|_| OnceLock::new()).collect(),
            tail: Padded(AtomicU64::new(0)),
            flags: Padded(AtomicU32::new(0)),
        }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The position the next event gets (`Acquire`: every slot before it is written).
    pub(crate) fn tail(&self) -> u64 {
        self.tail.load(Ordering::Acquire)
    }

    /// The oldest position a lossy ring still holds (a lossless ring never
    /// overwrites an unread slot, so for it this is only a lower bound).
    pub(crate) fn oldest(&self, tail: u64) -> u64 {
        tail.saturating_sub(self.capacity)
    }

    fn chunk_of(&self, pos: u64) -> (usize, usize) {
        let i = (pos % self.capacity) as usize;
        (i / CHUNK, i % CHUNK)
    }

    /// The slot of `pos`, which was written (`pos < tail`).
    fn slot(&self, pos: u64) -> &Slot<T> {
        let (c, i) = self.chunk_of(pos);
        &self.chunks[c]
            .get()
            .expect("a written position has its chunk")[i]
    }

    /// Appends `env` for `readers` members (under the subscriber's lock; a
    /// lossless ring was checked for room) and returns what the slot held
    /// before: a lossy ring's oldest event, which members that had not read
    /// it will report as lag.
    pub(crate) fn push(&self, env: Arc<Envelope<T>>, readers: u32) -> Option<Arc<Envelope<T>>> {
        if readers == 0 {
            return Some(env);
        }
        let pos = self.tail.load(Ordering::Relaxed);
        let (c, i) = self.chunk_of(pos);
        let len = CHUNK.min(self.capacity as usize - c * CHUNK);
        let chunk = self.chunks[c].get_or_init(|| {
            (0..len)
                .map(|_| Slot {
                    lock: RwLock::new(()),
                    pos: UnsafeCell::new(u64::MAX),
                    env: UnsafeCell::new(None),
                    rem: AtomicU32::new(0),
                })
                .collect()
        });
        let slot = &chunk[i];
        if self.lossless {
            slot.rem.store(readers, Ordering::Relaxed);
            // SAFETY: every member is past the event this slot held (see `Slot`).
            let old = slot.env.with_mut(|e| unsafe { (*e).replace(env) });
            debug_assert!(
                old.is_none(),
                "a lossless slot is written over only once read"
            );
            self.tail.store(pos + 1, Ordering::Release);
            return old;
        }
        let w = slot.lock.write();
        slot.rem.store(readers, Ordering::Relaxed);
        // SAFETY: under the slot's exclusive lock.
        let old = unsafe {
            slot.pos.with_mut(|p| *p = pos);
            slot.env.with_mut(|e| (*e).replace(env))
        };
        // Still under the slot's lock: a reader that finds this slot
        // written over also finds the ring's end past it.
        self.tail.store(pos + 1, Ordering::Release);
        drop(w);
        old
    }

    /// Reads `pos` (`pos < tail`) for one member: the event, or, if a lossy
    /// ring wrote over it already, `Err` with the oldest position it holds
    /// now. The last member to read a slot drops the ring's reference.
    pub(crate) fn read(&self, pos: u64) -> Result<Arc<Envelope<T>>, u64> {
        let slot = self.slot(pos);
        if self.lossless {
            let (env, left) = self.hand_out(slot);
            drop(left);
            return Ok(env);
        }
        let r = slot.lock.read();
        // SAFETY: under the slot's shared lock.
        let written = slot.pos.with(|p| unsafe { *p });
        if written != pos {
            // Written over, and the end moved past it before the slot's
            // lock was released (see `push`).
            debug_assert!(written > pos && written != u64::MAX);
            return Err(self.oldest(self.tail()).max(written + 1 - self.capacity));
        }
        let (env, left) = self.hand_out(slot);
        drop(r);
        drop(left);
        Ok(env)
    }

    /// A member leaves without reading `pos` (`pos < tail`; under the
    /// subscriber's lock): one reader fewer for it.
    pub(crate) fn release(&self, pos: u64) {
        let slot = self.slot(pos);
        if self.lossless {
            drop(self.forgo(slot));
            return;
        }
        let r = slot.lock.read();
        // SAFETY: under the slot's shared lock.
        if slot.pos.with(|p| unsafe { *p }) != pos {
            return;
        }
        let left = self.forgo(slot);
        drop(r);
        drop(left);
    }

    /// Hands the slot's event to one member that has not read it (the
    /// caller keeps the publisher out: by the rules on `Slot`, or under the
    /// slot's shared lock, where other readers only look at `pos`). The only
    /// member left moves it out instead of cloning it (one shared-count
    /// update fewer, none with a single subscriber); otherwise the last to
    /// clone it takes the ring's reference, returned for the caller to drop
    /// once it lets the slot go.
    fn hand_out(&self, slot: &Slot<T>) -> (Arc<Envelope<T>>, Option<Arc<Envelope<T>>>) {
        if slot.rem.load(Ordering::Acquire) == 1 {
            // SAFETY: every other member is done with it (its `AcqRel`
            // decrement came after its clone), and writers are kept out.
            let env = slot.env.with_mut(|e| unsafe { (*e).take() });
            slot.rem.store(0, Ordering::Relaxed);
            return (env.expect("an unread slot holds its event"), None);
        }
        // SAFETY: members clone it side by side; writers are kept out.
        let env = slot.env.with(|e| unsafe { (*e).clone() });
        let env = env.expect("an unread slot holds its event");
        (env, self.forgo(slot))
    }

    /// One member fewer still to read the slot (it read or left): the last
    /// one takes the ring's reference (the caller drops it).
    fn forgo(&self, slot: &Slot<T>) -> Option<Arc<Envelope<T>>> {
        if slot.rem.fetch_sub(1, Ordering::AcqRel) != 1 {
            return None;
        }
        // SAFETY: the last member: every other one is done with it, and
        // writers are kept out.
        slot.env.with_mut(|e| unsafe { (*e).take() })
    }

    /// Drops every event the ring still holds: its last member left (under
    /// the subscriber's lock, which keeps publishers out).
    pub(crate) fn clear(&self) {
        for chunk in self.chunks.iter().filter_map(|c| c.get()) {
            for slot in chunk.iter() {
                let w = slot.lock.write();
                // SAFETY: no member is left to read, no publisher can write,
                // and the slot's exclusive lock is held.
                let old = slot.env.with_mut(|e| unsafe { (*e).take() });
                drop(w);
                drop(old);
            }
        }
    }
}
