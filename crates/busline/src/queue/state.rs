//! What a subscriber's lock guards: the ring's members, a queue group's
//! queue, a `latest` subscriber's values, and the wakers of both sides.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Waker;

use ahash::AHashMap;
use smallvec::SmallVec;

use super::group::{For, GroupQueue, Keyed};
use super::ring::{MemberCell, Padded, Ring, BUSY, PRESSURED, WAITING};
use super::{Policy, SubShared};
use crate::envelope::Envelope;
use crate::sync::fence;
use crate::topic::Topic;

/// A subscriber reading a ring (kept under the subscriber's lock).
pub(crate) struct Member {
    pub(crate) id: u64,
    pub(crate) name: Arc<str>,
    /// What its subscription publishes as it reads.
    pub(crate) cell: Arc<Padded<MemberCell>>,
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
    /// The next position it reads.
    pub(crate) fn cursor(&self) -> u64 {
        self.cell.cursor.load(Ordering::Acquire) & !BUSY
    }

    /// Lost (lossy): reported as `Lagged`, or to be at its next receive.
    pub(crate) fn dropped(&self) -> u64 {
        self.cell.dropped.load(Ordering::Relaxed)
    }
}

/// A ring member's own side: its cursor, and the ring's end as it last read it.
pub(crate) struct Reader {
    pub(crate) cell: Arc<Padded<MemberCell>>,
    pub(crate) cursor: u64,
    /// While above `cursor`: positions before it are written (a ring's end
    /// it read). At `cursor`, it reads the ring's end again.
    pub(crate) known_tail: u64,
    pub(crate) peak: u64,
}

pub(crate) struct State<T> {
    /// Lossless and lossy: the ring's members.
    pub(crate) readers: SmallVec<[Member; 1]>,
    /// Ring members with a waker set (waiting for an event).
    pub(crate) parked: usize,
    /// Rings: a lower bound of the lowest member cursor (the oldest event
    /// some member has not read), refreshed from the members' cursors when
    /// the ring looks full.
    pub(crate) slowest: u64,
    /// The member whose cursor the last refresh found lowest: the one a
    /// lossless publisher that found the ring full waits on.
    pub(crate) slowest_id: u64,
    /// Queue groups: the events not taken yet.
    pub(crate) group: GroupQueue<T>,
    /// `Latest` only: newest event per topic, and the order topics became pending.
    pub(crate) latest: AHashMap<Topic, Arc<Envelope<T>>>,
    pub(crate) latest_order: VecDeque<Topic>,
    /// Queue groups and `latest`: receivers waiting for an event, by member id.
    pub(crate) rx_wakers: SmallVec<[(u64, Waker); 1]>,
    /// Publishers waiting for room.
    pub(crate) tx_wakers: SmallVec<[Waker; 2]>,
    pub(crate) closed: bool,
    /// Queue groups and `latest` (rings count per member).
    pub(crate) delivered: u64,
    pub(crate) received: u64,
    pub(crate) superseded: u64,
    pub(crate) discarded: u64,
    pub(crate) pressured: bool,
    pub(crate) peak: usize,
    /// Queue groups: members currently joined.
    pub(crate) members: usize,
}

impl<T> State<T> {
    /// A new queue's state; `keyed_by` is a keyed group's first member, and
    /// whether the group is on persisted topics (see `keyed_log`).
    pub(crate) fn new(keyed_by: Option<(u64, bool)>) -> Self {
        State {
            readers: SmallVec::new(),
            parked: 0,
            slowest: 0,
            slowest_id: 0,
            group: match keyed_by {
                Some((id, logged)) => GroupQueue::Keyed(Box::new(Keyed::new(id, logged))),
                None => GroupQueue::Plain(VecDeque::new()),
            },
            latest: AHashMap::new(),
            latest_order: VecDeque::new(),
            rx_wakers: SmallVec::new(),
            tx_wakers: SmallVec::new(),
            closed: false,
            delivered: 0,
            received: 0,
            superseded: 0,
            discarded: 0,
            pressured: false,
            peak: 0,
            members: 1,
        }
    }

    /// Events waiting for ring member `m` (a lossy ring holds at most its capacity).
    pub(crate) fn member_depth(&self, sub: &SubShared<T>, m: &Member) -> usize {
        let ring = sub.ring();
        let tail = ring.tail();
        (tail - m.cursor().max(ring.oldest(tail))) as usize
    }

    /// Refreshes [`slowest`](Self::slowest) and
    /// [`slowest_id`](Self::slowest_id) from the members' cursors, and their
    /// peaks from what each has waiting.
    fn refresh_slowest(&mut self, sub: &SubShared<T>) -> u64 {
        let ring = sub.ring();
        let tail = ring.tail();
        let oldest = ring.oldest(tail);
        let mut slowest = tail;
        for m in self.readers.iter_mut() {
            let c = m.cursor();
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

    /// Events waiting: for a ring, the most any member has waiting.
    pub(crate) fn depth(&self, sub: &SubShared<T>) -> usize {
        match sub.policy {
            Policy::Lossless | Policy::Lossy => self
                .readers
                .iter()
                .map(|m| self.member_depth(sub, m))
                .max()
                .unwrap_or(0),
            Policy::Latest => self.latest_order.len(),
            Policy::Queue(_) => self.group.len(),
        }
    }

    /// Puts `env` in the queue following `sub`'s policy (room was checked for
    /// lossless queues); receivers to wake go to `wake`.
    pub(crate) fn push(
        &mut self,
        sub: &SubShared<T>,
        env: Arc<Envelope<T>>,
        wake: &mut SmallVec<[Waker; 8]>,
    ) {
        match sub.policy {
            Policy::Latest => {
                self.delivered += 1;
                if let Some(old) = self.latest.get_mut(&env.topic) {
                    *old = env;
                    self.superseded += 1;
                } else {
                    self.latest_order.push_back(env.topic.clone());
                    self.latest.insert(env.topic.clone(), env);
                }
                self.peak = self.peak.max(self.latest_order.len());
            }
            Policy::Queue(_) => {
                self.delivered += 1;
                let key = sub.key.as_ref().map(|k| k(&env));
                let to = self.group.push(env, key);
                let depth = self.group.len();
                self.peak = self.peak.max(depth);
                if !self.pressured && depth >= sub.high {
                    self.pressured = true;
                    sub.pressure.raise();
                }
                match to {
                    // A keyed group's event waits for its one member.
                    For::Member(m) => return wake.extend(self.take_rx_waker(m)),
                    For::Nobody => return,
                    // A plain group wakes one waiting member (below).
                    For::Any => {}
                }
            }
            Policy::Lossless | Policy::Lossy => {
                let ring = sub.ring();
                if sub.policy == Policy::Lossy {
                    self.make_way(ring);
                }
                // A lossy ring's oldest event goes if a member had not read it.
                let old = ring.push(env, self.readers.len() as u32);
                if sub.policy == Policy::Lossless && !self.pressured {
                    let tail = ring.tail();
                    if tail - self.slowest >= sub.high as u64 {
                        // Flag first, then look: a reader moving on at the
                        // same time either is seen or sees the flag.
                        ring.flags.fetch_or(PRESSURED, Ordering::Relaxed);
                        fence(Ordering::SeqCst);
                        if tail - self.refresh_slowest(sub) >= sub.high as u64 {
                            self.pressured = true;
                            sub.pressure.raise();
                        } else {
                            ring.flags.fetch_and(!PRESSURED, Ordering::Relaxed);
                        }
                    }
                }
                // Members' entries are written by their readers only when
                // they park: look at them only when one of them waits.
                if self.parked > 0 {
                    self.parked = 0;
                    wake.extend(self.readers.iter_mut().filter_map(|m| m.waker.take()));
                }
                drop(old);
                return;
            }
        }
        if !self.rx_wakers.is_empty() {
            wake.push(self.rx_wakers.remove(0).1);
        }
    }

    /// Takes back the waker of receiver `member`, if it waits.
    pub(crate) fn take_rx_waker(&mut self, member: u64) -> Option<Waker> {
        let i = self.rx_wakers.iter().position(|(m, _)| *m == member)?;
        Some(self.rx_wakers.remove(i).1)
    }

    /// A full lossy ring is about to write over its oldest event: members
    /// that have not read it are moved past it (they find out from their
    /// cursor: `Lagged`).
    fn make_way(&mut self, ring: &Ring<T>) {
        let tail = ring.tail();
        let Some(old) = tail.checked_sub(ring.capacity()) else {
            return;
        };
        if self.slowest > old {
            return;
        }
        let mut slowest = tail;
        for m in &self.readers {
            slowest = slowest.min(ring.move_past(&m.cell, old));
        }
        self.slowest = slowest;
    }

    /// Whether a lossless queue can take one more event now.
    pub(crate) fn has_room(&mut self, sub: &SubShared<T>) -> bool {
        match sub.policy {
            Policy::Lossless => {
                let tail = sub.ring().tail();
                let cap = sub.capacity as u64;
                tail - self.slowest < cap || tail - self.refresh_slowest(sub) < cap
            }
            Policy::Queue(_) => self.group.len() < sub.capacity,
            Policy::Lossy | Policy::Latest => true,
        }
    }

    /// No room (see [`has_room`](Self::has_room)): registers `waker` to be
    /// woken when there is, unless room appeared meanwhile (then `true`).
    pub(crate) fn wait_for_room(&mut self, sub: &SubShared<T>, waker: Option<&Waker>) -> bool {
        let Some(w) = waker else {
            return false;
        };
        if sub.policy == Policy::Lossless {
            // Flag first, then look again: the reader that makes room
            // either is seen here or sees the flag and wakes us.
            sub.ring().flags.fetch_or(WAITING, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if self.has_room(sub) {
                return true;
            }
        }
        if !self.tx_wakers.iter().any(|x| x.will_wake(w)) {
            self.tx_wakers.push(w.clone());
        }
        false
    }

    /// Marks closed and discards what is queued; returns wakers to wake.
    pub(crate) fn close(&mut self, sub: &SubShared<T>, discard: bool) -> SmallVec<[Waker; 4]> {
        self.closed = true;
        if discard {
            // (A ring is discarded only once its last member left.)
            debug_assert!(self.readers.is_empty());
            if let Some(ring) = &sub.ring {
                ring.clear();
            }
            self.discarded += (self.group.clear() + self.latest_order.len()) as u64;
            self.latest.clear();
            self.latest_order.clear();
        }
        if self.pressured {
            self.pressured = false;
            sub.pressure.lower();
        }
        let mut w: SmallVec<[Waker; 4]> = self.tx_wakers.drain(..).collect();
        w.extend(self.rx_wakers.drain(..).map(|(_, w)| w));
        w.extend(self.readers.iter_mut().filter_map(|m| m.waker.take()));
        self.parked = 0;
        w
    }

    /// After a member read or left: clears backpressure if the ring drained
    /// to its low watermark, and wakes waiting publishers once the slowest
    /// member is down to [`wake_publishers_at`](SubShared::wake_publishers_at).
    pub(crate) fn settle(&mut self, sub: &SubShared<T>) -> SmallVec<[Waker; 2]> {
        let ring = sub.ring();
        let tail = ring.tail();
        let slowest = self.refresh_slowest(sub);
        if self.pressured && tail - slowest <= sub.low as u64 {
            self.pressured = false;
            sub.pressure.lower();
            ring.flags.fetch_and(!PRESSURED, Ordering::Relaxed);
        }
        let mut wake = SmallVec::new();
        if !self.tx_wakers.is_empty()
            && (sub.policy != Policy::Lossless || tail - slowest <= sub.wake_publishers_at())
        {
            wake.extend(self.tx_wakers.drain(..));
        }
        if self.tx_wakers.is_empty() {
            ring.flags.fetch_and(!WAITING, Ordering::Relaxed);
        }
        wake
    }

    /// Adds a ring member reading from now on.
    pub(crate) fn join(&mut self, sub: &SubShared<T>, id: u64, name: Arc<str>) -> Reader {
        let tail = sub.ring().tail();
        let cell = Arc::new(MemberCell::new(tail));
        self.readers.push(Member {
            id,
            name,
            cell: cell.clone(),
            joined: tail,
            discarded: 0,
            blocked_ns: 0,
            peak: 0,
            waker: None,
        });
        Reader {
            cell,
            cursor: tail,
            known_tail: tail,
            peak: 0,
        }
    }

    /// Removes ring member `id`: what it had not read is counted as
    /// discarded and released (what it lost stays counted as dropped).
    /// Returns the member (for its counters) and publishers to wake.
    pub(crate) fn leave(
        &mut self,
        sub: &SubShared<T>,
        id: u64,
    ) -> (Option<Member>, SmallVec<[Waker; 2]>) {
        let Some(i) = self.readers.iter().position(|m| m.id == id) else {
            return (None, SmallVec::new());
        };
        let mut m = self.readers.swap_remove(i);
        if m.waker.take().is_some() {
            self.parked = self.parked.saturating_sub(1);
        }
        let ring = sub.ring();
        let tail = ring.tail();
        // (Never behind a lossy ring's oldest event: see `make_way`.)
        let cursor = m.cursor();
        for p in cursor..tail {
            ring.release(p);
        }
        m.discarded += tail - cursor;
        m.cell.cursor.store(tail, Ordering::Release);
        let wake = self.settle(sub);
        (Some(m), wake)
    }
}
