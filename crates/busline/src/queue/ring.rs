//! The ring that lossless and lossy subscribers read.
//!
//! A publisher appends each event once; each member reads it at its own
//! cursor, **without taking a lock**:
//!
//! - The publisher appends under the subscriber's lock (it orders publishers
//!   and wake-ups) and then moves `tail` on (`Release`); a reader learns what
//!   is new from `tail` (`Acquire`) and takes the lock only to park.
//! - Each member publishes its cursor in its own [`MemberCell`]. The
//!   publisher writes a slot only once every member's cursor is past the
//!   event it held before; it finds the slowest member from those cursors
//!   when the ring looks full.
//! - When a **lossless** ring is full, the publisher waits for room. A
//!   lossless reader that moved its cursor checks [`Ring::flags`] (both
//!   sides `SeqCst`, so one of them always sees the other): a publisher
//!   waiting for room, or backpressure to clear, makes the reader that can
//!   change that take the lock and settle it.
//! - When a **lossy** ring is full, the publisher moves the cursor of each
//!   member still at the oldest event past it (a compare-and-swap, counted
//!   as dropped for that member), then writes over it. A lossy reader claims
//!   the position it reads by setting [`BUSY`] on its cursor with a
//!   compare-and-swap: the claim fails if the publisher moved the cursor
//!   first (the member reports `Lagged`), and a publisher that finds the
//!   claim waits the few instructions until the reader moves on.
//! - Members only clone the event in a slot; the publisher lets go of the
//!   ring's own reference: every `capacity / 8` events (at least every
//!   event) it empties the slots every member has read since the last
//!   time, and it writes over a slot; the ring's last member leaving
//!   empties them all. So an event is mostly freed by the thread that
//!   allocated it, not by a reader on another core (a free across threads
//!   costs the allocator far more), and a ring keeps at most about an
//!   eighth of its capacity of read events alive.
//!
//! Slots are allocated in chunks as the ring first fills them (the table of
//! chunks with the first event), so a large capacity costs memory only once
//! it is used.

#![allow(unsafe_code)] // The lock-free read path: see `Slot`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::Waker;

use crate::envelope::Envelope;
use crate::sync::{spin_wait, AtomicU32, AtomicU64, Mutex, UnsafeCell};

/// [`Ring::mask`] of a ring whose capacity is not a power of two.
const NO_MASK: u64 = u64::MAX;

/// Slots per allocated chunk.
const CHUNK: usize = 1024;

/// A publisher waits for room (set by the publisher, cleared under the lock
/// when it is woken).
pub(crate) const WAITING: u32 = 1;
/// Backpressure is raised and waits for the ring to drain to its low watermark.
pub(crate) const PRESSURED: u32 = 2;

/// Set on a lossy member's cursor while it reads the slot there: the
/// publisher does not write over that slot until the member moves on.
pub(crate) const BUSY: u64 = 1 << 63;

/// One position of the ring.
///
/// Who touches `env`, and when (the safety argument of every `unsafe` block
/// below):
/// - The publisher writes a slot (under the subscriber's lock) only when
///   every member's cursor is past the event it held before. It learns that
///   from their cursors, published with `Release` after the member was done
///   with the slot (or it holds the subscriber's lock that a leaving member
///   released the slot under). A lossless publisher waits for that; a lossy
///   one moves the cursors that are not past it on itself, with a
///   compare-and-swap that fails while the member's [`BUSY`] claim is on it.
/// - A member reads a slot only between the ring's `tail` (`Acquire`,
///   published after the write) and its own cursor moving past it: a
///   lossless member's cursor moves only by itself; a lossy member reads
///   only under the claim it set with a compare-and-swap on the cursor it
///   expected, so the publisher had not moved that cursor on (and had not
///   written over the slot) first.
/// - Members only clone `env`; the publisher takes the ring's reference
///   when every member has read it (`empty`) or when it writes over the
///   slot, and `clear` when no member is left.
struct Slot<T> {
    env: UnsafeCell<Option<Arc<Envelope<T>>>>,
}

/// Slots allocated together, the first time the ring reaches them.
type Chunk<T> = Box<[Slot<T>]>;

/// The slots, the end and the flags of one ring, and its first member's
/// cell.
///
/// One block of three cache lines of its own (allocated apart from the
/// subscriber's other fields), split by who writes them:
/// - The first holds what every reader reads on every event: `flags`
///   (read after each read; it changes only when a publisher waits or
///   backpressure is raised or cleared) and fields that never change.
/// - The second, [`End`], holds `tail`, written by the publisher on every
///   event. Readers read it only when they catch up with the end they
///   knew; were `flags` on this line, every read would miss in the cache
///   while the publisher runs ahead (see docs/benchmarks.md).
/// - The third is the first member's [`MemberCell`], written by its reader:
///   the cell a ring with one member needs comes without an allocation of
///   its own. Members that join later have cells of their own, each on its
///   own line too.
#[repr(C, align(64))]
pub(crate) struct Ring<T> {
    /// [`WAITING`] and [`PRESSURED`].
    pub(crate) flags: AtomicU32,
    lossless: bool,
    capacity: u64,
    /// `capacity - 1` when the capacity is a power of two (the default):
    /// a position's index is then a mask, not a division; [`NO_MASK`]
    /// otherwise.
    mask: u64,
    /// The table of chunks, made when the first event is appended (an idle
    /// ring has none).
    chunks: OnceLock<Box<[OnceLock<Chunk<T>>]>>,
    /// It has exactly one member: set under the subscriber's lock as members
    /// join and leave, and read without it as a hint for how a publisher
    /// takes tokio's budget (`bus::budget::budget_due`) and whether a
    /// member that finds nothing yields before it parks
    /// (`subscription::receive`); nothing is synchronized by it.
    solo: std::sync::atomic::AtomicBool,
    /// What the publisher writes on every event, on the second line.
    pub(crate) end: End,
    /// The cell of the member that made the ring (see [`CellRef`]), on the
    /// third line.
    first: MemberCell,
}

/// The ring's end: the publisher's line.
#[repr(align(64))]
pub(crate) struct End {
    /// The position the next event gets: written under the subscriber's lock.
    tail: AtomicU64,
    /// Positions below this were read by every member and their slots
    /// emptied by the publisher ([`Ring::empty`]; under the subscriber's
    /// lock, hence `Relaxed`).
    pub(crate) reclaimed: std::sync::atomic::AtomicU64,
    /// A publisher that yielded to the ring's lone member
    /// ([`Ring::hand_off`]), for that member to wake when it parks. (On
    /// this line, which had room: a subscription takes no more memory.)
    handoff: Mutex<Option<Waker>>,
}

// The three lines as described on `Ring` (loom's atomics are larger).
#[cfg(not(busline_loom))]
const _: () = {
    assert!(std::mem::offset_of!(Ring<()>, end) == 64);
    assert!(std::mem::offset_of!(Ring<()>, first) == 128);
    assert!(std::mem::size_of::<Ring<()>>() == 192);
};

// SAFETY: the cells are shared by the rules on `Slot`; what they hold is
// `Arc<Envelope<T>>`, sent and shared between threads like the rest of the bus.
unsafe impl<T: Send + Sync> Sync for Ring<T> {}
unsafe impl<T: Send + Sync> Send for Ring<T> {}

/// What a member publishes for the publisher and for statistics; written
/// by the member's own [`Subscription`](crate::Subscription), except that a
/// lossy publisher moves the cursor past an event it writes over.
///
/// One cache line of its own (what the reader writes on every event does
/// not slow down what another core reads): the first member's is the
/// ring's second line; in the `Arc` of a member that joined later the
/// reference counts, written only when the cell is shared or let go, take
/// the line before it.
#[derive(Default)]
#[repr(align(64))]
pub(crate) struct MemberCell {
    /// The next position it reads: everything before it is read or lost
    /// ([`BUSY`] while a lossy member reads there).
    pub(crate) cursor: AtomicU64,
    /// Lost (lossy): counted as the publisher moves the cursor past, and
    /// reported as `Lagged` at the member's next receive.
    pub(crate) dropped: AtomicU64,
    /// The most events it has had waiting.
    pub(crate) peak: AtomicU64,
}

impl MemberCell {
    pub(crate) fn new(cursor: u64) -> MemberCell {
        MemberCell {
            cursor: AtomicU64::new(cursor),
            dropped: AtomicU64::new(0),
            peak: AtomicU64::new(0),
        }
    }
}

/// Where a member's [`MemberCell`] is: the ring's own for the member that
/// made the ring (the subscriber whose id is the queue's), an `Arc` of its
/// own (shared by its `Member` and its `Reader`) for one that joined later.
pub(crate) enum CellRef {
    Ring,
    Own(Arc<MemberCell>),
}

impl CellRef {
    /// The cell, in `ring` or apart.
    pub(crate) fn get<'a, T>(&'a self, ring: &'a Ring<T>) -> &'a MemberCell {
        match self {
            CellRef::Ring => &ring.first,
            CellRef::Own(cell) => cell,
        }
    }
}

impl<T> Ring<T> {
    pub(crate) fn new(capacity: usize, lossless: bool) -> Self {
        Ring {
            capacity: capacity as u64,
            mask: if capacity.is_power_of_two() {
                capacity as u64 - 1
            } else {
                NO_MASK
            },
            lossless,
            chunks: OnceLock::new(),
            solo: std::sync::atomic::AtomicBool::new(false),
            end: End {
                tail: AtomicU64::new(0),
                reclaimed: std::sync::atomic::AtomicU64::new(0),
                handoff: Mutex::new(None),
            },
            flags: AtomicU32::new(0),
            first: MemberCell::new(0),
        }
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// A lossless ring (publishers wait for room); otherwise lossy.
    pub(crate) fn lossless(&self) -> bool {
        self.lossless
    }

    /// Whether it had exactly one member when last looked at (a hint: see
    /// the field).
    pub(crate) fn solo(&self) -> bool {
        self.solo.load(Ordering::Relaxed)
    }

    /// Records how many members it has (under the subscriber's lock).
    pub(crate) fn set_members(&self, n: usize) {
        self.solo.store(n == 1, Ordering::Relaxed);
    }

    /// Leaves a yielding publisher's `waker` for the member that parks next
    /// to wake (see `bus::budget::take_budget`); it replaces one left
    /// before.
    pub(crate) fn hand_off(&self, waker: &Waker) {
        match &mut *self.end.handoff.lock() {
            Some(w) => w.clone_from(waker),
            w @ None => *w = Some(waker.clone()),
        }
    }

    /// The publisher that yielded to this ring's member, if one did since
    /// a member last parked: for a member about to park to wake.
    pub(crate) fn take_handoff(&self) -> Option<Waker> {
        self.end.handoff.lock().take()
    }

    /// The position the next event gets (`Acquire`: every slot before it is written).
    pub(crate) fn tail(&self) -> u64 {
        self.end.tail.load(Ordering::Acquire)
    }

    /// The oldest position a lossy ring still holds (a lossless ring never
    /// overwrites an unread slot, so for it this is only a lower bound).
    pub(crate) fn oldest(&self, tail: u64) -> u64 {
        tail.saturating_sub(self.capacity)
    }

    #[inline]
    fn chunk_of(&self, pos: u64) -> (usize, usize) {
        let i = if self.mask != NO_MASK {
            pos & self.mask
        } else {
            pos % self.capacity
        } as usize;
        (i / CHUNK, i % CHUNK)
    }

    /// The slot of `pos`, which was written (`pos < tail`).
    #[inline]
    fn slot(&self, pos: u64) -> &Slot<T> {
        let (c, i) = self.chunk_of(pos);
        let chunks = self.chunks.get().expect("a written ring has its table");
        &chunks[c].get().expect("a written position has its chunk")[i]
    }

    /// Appends `env` for `readers` members (under the subscriber's lock; a
    /// lossless ring was checked for room; with none it is not kept) and
    /// returns what the slot held before, every member past it (or moved
    /// past it by a lossy publisher), for the caller to drop.
    #[inline]
    pub(crate) fn push(&self, env: Arc<Envelope<T>>, readers: u32) -> Option<Arc<Envelope<T>>> {
        if readers == 0 {
            return Some(env);
        }
        let pos = self.end.tail.load(Ordering::Relaxed);
        let (c, i) = self.chunk_of(pos);
        let chunks = self.chunks.get_or_init(|| {
            let n = (self.capacity as usize).div_ceil(CHUNK);
            (0..n).map(|_| OnceLock::new()).collect()
        });
        let chunk = chunks[c].get_or_init(|| {
            (0..CHUNK.min(self.capacity as usize - c * CHUNK))
                .map(|_| Slot {
                    env: UnsafeCell::new(None),
                })
                .collect()
        });
        let slot = &chunk[i];
        // SAFETY: every member is past the event this slot held (see `Slot`).
        let old = slot.env.with_mut(|e| unsafe { (*e).replace(env) });
        self.end.tail.store(pos + 1, Ordering::Release);
        old
    }

    /// Empties the slots of positions `from..to`, which every member has
    /// read and the ring still holds (`oldest <= from`, `to <= tail`; under
    /// the subscriber's lock), adding their events to `spent`.
    pub(crate) fn empty(&self, from: u64, to: u64, spent: &mut Vec<Arc<Envelope<T>>>) {
        spent.reserve((to - from) as usize);
        let chunks = self.chunks.get().expect("a written ring has its table");
        let mut pos = from;
        // A run of positions within one chunk at a time: one lookup each.
        while pos < to {
            let (c, i) = self.chunk_of(pos);
            let chunk = chunks[c].get().expect("a written position has its chunk");
            let n = (chunk.len() - i).min((to - pos) as usize);
            for slot in &chunk[i..i + n] {
                // SAFETY: every member is past these positions (see
                // `Slot`); the lock keeps other publishers out.
                if let Some(env) = slot.env.with_mut(|e| unsafe { (*e).take() }) {
                    spent.push(env);
                }
            }
            pos += n as u64;
        }
    }

    /// Reads `pos` (`pos < tail`) for one member whose cursor is at it (a
    /// lossy member holding its claim): a clone of the event (see `Slot`).
    #[inline(always)]
    pub(crate) fn read(&self, pos: u64) -> Arc<Envelope<T>> {
        // SAFETY: members clone it side by side; writers are kept out.
        let env = self.slot(pos).env.with(|e| unsafe { (*e).clone() });
        env.expect("a written slot holds its event")
    }

    /// Drops every event the ring still holds: its last member left (under
    /// the subscriber's lock, which keeps publishers out).
    pub(crate) fn clear(&self) {
        let chunks = self.chunks.get().map_or(&[][..], |c| &c[..]);
        for chunk in chunks.iter().filter_map(|c| c.get()) {
            for slot in chunk.iter() {
                // SAFETY: no member is left to read and no publisher can write.
                drop(slot.env.with_mut(|e| unsafe { (*e).take() }));
            }
        }
    }

    /// A lossy ring about to write over `old` (under the subscriber's lock):
    /// moves `cell`'s cursor past it if it is still there (counted as
    /// dropped), waiting out a read in progress. Returns the cursor.
    pub(crate) fn move_past(&self, cell: &MemberCell, old: u64) -> u64 {
        let mut spins = 0;
        loop {
            let c = cell.cursor.load(Ordering::Acquire);
            if c & !BUSY > old {
                return c & !BUSY;
            }
            if c & BUSY != 0 {
                // Reading the slot now: it moves on within a few instructions.
                spin_wait(&mut spins);
                continue;
            }
            // A cursor is never behind the oldest event (this keeps it so).
            debug_assert_eq!(c, old, "a lossy cursor fell behind the ring");
            if cell
                .cursor
                .compare_exchange(c, old + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                cell.dropped.fetch_add(1, Ordering::Relaxed);
                return old + 1;
            }
        }
    }
}
