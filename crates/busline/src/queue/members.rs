//! A ring's members as the subscriber's lock keeps them: each member's
//! entry ([`Member`]), what its own subscription keeps ([`Reader`]), and
//! what publishers learn of their cursors ([`RingMembers`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Waker;

use smallvec::SmallVec;

use super::ring::{CellRef, MemberCell, Ring, BUSY};
use crate::envelope::Envelope;

/// A subscriber reading a ring (kept under the subscriber's lock).
pub(crate) struct Member {
    pub(crate) id: u64,
    pub(crate) name: Arc<str>,
    /// What its subscription publishes as it reads.
    pub(crate) cell: CellRef,
    /// The ring's end when it joined: it is delivered everything after.
    pub(crate) joined: u64,
    pub(crate) discarded: u64,
    pub(crate) blocked_ns: u64,
    /// The most events a publisher found waiting for it (its reader keeps
    /// the most it found; the member's peak is the larger).
    pub(crate) peak: u64,
    pub(crate) waker: Option<Waker>,
}

impl Member {
    /// Its cell, in `ring` (the ring it reads) or apart.
    pub(crate) fn cell<'a, T>(&'a self, ring: &'a Ring<T>) -> &'a MemberCell {
        self.cell.get(ring)
    }

    /// The next position it reads.
    pub(crate) fn cursor<T>(&self, ring: &Ring<T>) -> u64 {
        self.cell(ring).cursor.load(Ordering::Acquire) & !BUSY
    }

    /// Lost (lossy): reported as `Lagged`, or to be at its next receive.
    pub(crate) fn dropped<T>(&self, ring: &Ring<T>) -> u64 {
        self.cell(ring).dropped.load(Ordering::Relaxed)
    }

    /// Events waiting for it (a lossy ring holds at most its capacity).
    pub(crate) fn depth<T>(&self, ring: &Ring<T>) -> usize {
        let tail = ring.tail();
        (tail - self.cursor(ring).max(ring.oldest(tail))) as usize
    }
}

/// A ring member's own side: its cursor, and the ring's end as it last read it.
pub(crate) struct Reader {
    pub(crate) cell: CellRef,
    pub(crate) cursor: u64,
    /// While above `cursor`: positions before it are written (a ring's end
    /// it read). At `cursor`, it reads the ring's end again.
    pub(crate) known_tail: u64,
    pub(crate) peak: u64,
}

/// A ring's members, and what publishers learnt of their cursors.
pub(crate) struct RingMembers {
    pub(crate) readers: SmallVec<[Member; 1]>,
    /// Members with a waker set (waiting for an event).
    pub(crate) parked: usize,
    /// A lower bound of the lowest member cursor (the oldest event some
    /// member has not read), refreshed from the members' cursors when the
    /// ring looks full.
    pub(crate) slowest: u64,
    /// The member whose cursor the last refresh found lowest: the one a
    /// lossless publisher that found the ring full waits on.
    pub(crate) slowest_id: u64,
}

impl RingMembers {
    /// Takes the wakers of the members waiting for an event, to be woken
    /// once the lock is let go.
    #[inline(never)]
    pub(super) fn wake_parked(&mut self, wake: &mut SmallVec<[Waker; 8]>) {
        self.parked = 0;
        wake.extend(self.readers.iter_mut().filter_map(|m| m.waker.take()));
    }

    /// Empties the slots every member has read since the last time (from
    /// the members' cursors as they are now), handing their events to
    /// `spent`: a ring holds read events only until the next of these.
    #[inline(never)]
    pub(super) fn reclaim<T>(&mut self, ring: &Ring<T>, spent: &mut Vec<Arc<Envelope<T>>>) {
        let slowest = self.refresh_slowest(ring);
        let reclaimed = ring.end.reclaimed.load(Ordering::Relaxed);
        let from = reclaimed.max(ring.oldest(ring.tail()));
        if from < slowest {
            ring.empty(from, slowest, spent);
        }
        ring.end
            .reclaimed
            .store(reclaimed.max(slowest), Ordering::Relaxed);
    }

    /// Refreshes [`slowest`](Self::slowest) and
    /// [`slowest_id`](Self::slowest_id) from the members' cursors, and their
    /// peaks from what each has waiting.
    pub(super) fn refresh_slowest<T>(&mut self, ring: &Ring<T>) -> u64 {
        let tail = ring.tail();
        let oldest = ring.oldest(tail);
        let mut slowest = tail;
        for m in self.readers.iter_mut() {
            let c = m.cursor(ring);
            if c < slowest {
                slowest = c;
                self.slowest_id = m.id;
            }
            // (A lossy member behind the oldest event has lost the rest.)
            m.peak = m.peak.max(tail - c.max(oldest));
        }
        self.slowest = slowest;
        slowest
    }

    /// A full lossy ring is about to write over its oldest event: members
    /// that have not read it are moved past it (they find out from their
    /// cursor: `Lagged`).
    pub(super) fn make_way<T>(&mut self, ring: &Ring<T>) {
        let tail = ring.tail();
        let Some(old) = tail.checked_sub(ring.capacity()) else {
            return;
        };
        if self.slowest > old {
            return;
        }
        let mut slowest = tail;
        for m in &self.readers {
            slowest = slowest.min(ring.move_past(m.cell(ring), old));
        }
        self.slowest = slowest;
    }
}
