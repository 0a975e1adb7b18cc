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
//! - Each slot counts the members still to read it; the last one drops the
//!   slot's reference, so a read event is not kept alive by the ring.
//!
//! Slots are allocated in chunks as the ring first fills them (the table of
//! chunks with the first event), so a large capacity costs memory only once
//! it is used.

#![allow(unsafe_code)] // The lock-free read path: see `Slot`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use crate::envelope::Envelope;
use crate::sync::{spin_wait, AtomicU32, AtomicU64, UnsafeCell};

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
/// - Each reader clones, then decrements `rem`, and the one that brings it
///   to 0 (after every other member's clone, by the `AcqRel` chain on
///   `rem`) takes the ring's reference. The only member still to read a
///   slot (it sees `rem` at 1) moves the event out instead of cloning it.
///   A lossy member moved past a slot never decrements its `rem`, so `rem`
///   is never below the members that still read it; the publisher takes
///   what is left when it writes over the slot.
struct Slot<T> {
    env: UnsafeCell<Option<Arc<Envelope<T>>>>,
    /// Members present when it was written that have not read it yet.
    rem: AtomicU32,
}

/// Slots allocated together, the first time the ring reaches them.
type Chunk<T> = Box<[Slot<T>]>;

/// The slots, the end and the flags of one ring, and its first member's
/// cell.
///
/// One block of two cache lines of its own (allocated apart from the
/// subscriber's other fields). The first line holds `tail`, written by the
/// publisher on every event, and what every reader reads together with
/// `tail` anyway (`flags`, which changes only when a publisher waits or
/// backpressure is raised or cleared, and fields that never change). The
/// second is the first member's [`MemberCell`], written by its reader: the
/// cell a ring with one member needs comes without an allocation of its
/// own. Members that join later have cells of their own, each on its own
/// line too.
#[repr(C, align(128))]
pub(crate) struct Ring<T> {
    /// The position the next event gets: written under the subscriber's lock.
    tail: AtomicU64,
    /// [`WAITING`] and [`PRESSURED`].
    pub(crate) flags: AtomicU32,
    lossless: bool,
    capacity: u64,
    /// `capacity - 1` when the capacity is a power of two (the default):
    /// a position's index is then a mask, not a division.
    mask: Option<u64>,
    /// The table of chunks, made when the first event is appended (an idle
    /// ring has none).
    chunks: OnceLock<Box<[OnceLock<Chunk<T>>]>>,
    /// The cell of the member that made the ring (see [`CellRef`]); `repr(C)`
    /// keeps it after the fields above, on the second line.
    first: MemberCell,
}

// Both lines as described on `Ring` (loom's atomics are larger).
#[cfg(not(busline_loom))]
const _: () = {
    assert!(std::mem::offset_of!(Ring<()>, first) == 64);
    assert!(std::mem::size_of::<Ring<()>>() == 128);
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
            mask: capacity.is_power_of_two().then(|| capacity as u64 - 1),
            lossless,
            chunks: OnceLock::new(),
            tail: AtomicU64::new(0),
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

    /// The position the next event gets (`Acquire`: every slot before it is written).
    pub(crate) fn tail(&self) -> u64 {
        self.tail.load(Ordering::Acquire)
    }

    /// The oldest position a lossy ring still holds (a lossless ring never
    /// overwrites an unread slot, so for it this is only a lower bound).
    pub(crate) fn oldest(&self, tail: u64) -> u64 {
        tail.saturating_sub(self.capacity)
    }

    #[inline]
    fn chunk_of(&self, pos: u64) -> (usize, usize) {
        let i = match self.mask {
            Some(m) => pos & m,
            None => pos % self.capacity,
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
        let chunks = self.chunks.get_or_init(|| {
            let n = (self.capacity as usize).div_ceil(CHUNK);
            (0..n).map(|_| OnceLock::new()).collect()
        });
        let chunk = chunks[c].get_or_init(|| {
            (0..len)
                .map(|_| Slot {
                    env: UnsafeCell::new(None),
                    rem: AtomicU32::new(0),
                })
                .collect()
        });
        let slot = &chunk[i];
        slot.rem.store(readers, Ordering::Relaxed);
        // SAFETY: every member is past the event this slot held (see `Slot`).
        let old = slot.env.with_mut(|e| unsafe { (*e).replace(env) });
        debug_assert!(
            !self.lossless || old.is_none(),
            "a lossless slot is written over only once read"
        );
        self.tail.store(pos + 1, Ordering::Release);
        old
    }

    /// Reads `pos` (`pos < tail`) for one member whose cursor is at it (a
    /// lossy member holding its claim). The last member to read a slot drops
    /// the ring's reference.
    #[inline]
    pub(crate) fn read(&self, pos: u64) -> Arc<Envelope<T>> {
        let (env, left) = self.hand_out(self.slot(pos));
        drop(left);
        env
    }

    /// A member leaves without reading `pos` (`pos < tail`, and its cursor
    /// is at or before it; under the subscriber's lock): one reader fewer.
    pub(crate) fn release(&self, pos: u64) {
        drop(self.forgo(self.slot(pos)));
    }

    /// Hands the slot's event to one member that has not read it (the
    /// caller keeps the publisher out by the rules on `Slot`). The only
    /// member left moves it out instead of cloning it (one shared-count
    /// update fewer, none with a single subscriber); otherwise the last to
    /// clone it takes the ring's reference, returned for the caller to drop
    /// once it lets the slot go.
    #[inline]
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
