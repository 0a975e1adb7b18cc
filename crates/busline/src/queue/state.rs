//! What a subscriber's lock guards: one [`Queue`] by kind (the ring's
//! members, a queue group's queue, a `latest` subscriber's values, with
//! their receivers' wakers), and the publishers waiting for room.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Waker;

use ahash::AHashMap;
use smallvec::SmallVec;

use super::group::{For, GroupQueue};
use super::keyed::Keyed;
use super::members::{Member, Reader, RingMembers};
use super::policy::Policy;
use super::ring::{CellRef, MemberCell, PRESSURED, WAITING};
use super::SubShared;
use crate::envelope::Envelope;
use crate::sync::fence;
use crate::topic::Topic;

/// What a subscriber's lock guards.
pub(crate) struct State<T> {
    /// The queue, by kind.
    pub(crate) queue: Queue<T>,
    /// Publishers waiting for room (a `Vec`: it takes no room in the
    /// subscriber's block until a publisher first waits).
    pub(crate) tx_wakers: Vec<Waker>,
    pub(crate) closed: bool,
    pub(crate) pressured: bool,
    pub(crate) discarded: u64,
}

/// A subscriber's queue: one kind per [`Policy`].
pub(crate) enum Queue<T> {
    /// Lossless and lossy: the members of the ring (the ring itself is read
    /// without the lock: [`SubShared::ring`]).
    Ring(RingMembers),
    /// A queue group's events not taken yet.
    Group(Box<Group<T>>),
    /// `latest`: the newest event per topic.
    Latest(Box<Latest<T>>),
}

/// A queue group: its queue and its members.
pub(crate) struct Group<T> {
    pub(crate) queue: GroupQueue<T>,
    /// Members currently joined.
    pub(crate) members: usize,
    pub(crate) rx: Receivers,
}

/// A `latest` subscriber's values.
pub(crate) struct Latest<T> {
    /// The newest event per topic.
    values: AHashMap<Topic, Arc<Envelope<T>>>,
    /// The order topics became pending.
    order: VecDeque<Topic>,
    pub(crate) rx: Receivers,
}

/// Queue groups and `latest`: receivers waiting, and the counters (a ring
/// keeps them per member).
#[derive(Default)]
pub(crate) struct Receivers {
    /// Receivers waiting for an event, by member id.
    pub(crate) wakers: SmallVec<[(u64, Waker); 1]>,
    pub(crate) delivered: u64,
    pub(crate) received: u64,
    pub(crate) superseded: u64,
    pub(crate) peak: usize,
}

impl Receivers {
    /// Takes back the waker of receiver `member`, if it waits.
    pub(crate) fn take(&mut self, member: u64) -> Option<Waker> {
        let i = self.wakers.iter().position(|(m, _)| *m == member)?;
        Some(self.wakers.remove(i).1)
    }

    /// The first waiting receiver's waker.
    pub(crate) fn take_first(&mut self) -> Option<Waker> {
        (!self.wakers.is_empty()).then(|| self.wakers.remove(0).1)
    }
}

impl<T> Latest<T> {
    /// The oldest pending topic's newest event.
    pub(crate) fn take(&mut self) -> Option<Arc<Envelope<T>>> {
        let t = self.order.pop_front()?;
        Some(
            self.values
                .remove(&t)
                .expect("every pending topic has a latest value"),
        )
    }
}

impl<T> State<T> {
    /// A new queue's state for `policy`; `keyed_by` is a keyed group's first
    /// member, and whether the group is on persisted topics (see `keyed::log`).
    pub(crate) fn new(policy: &Policy, keyed_by: Option<(u64, bool)>) -> Self {
        let queue = match policy {
            Policy::Lossless | Policy::Lossy => Queue::Ring(RingMembers {
                readers: SmallVec::new(),
                parked: 0,
                slowest: 0,
                slowest_id: 0,
            }),
            Policy::Queue(_) => Queue::Group(Box::new(Group {
                queue: match keyed_by {
                    Some((id, logged)) => GroupQueue::Keyed(Box::new(Keyed::new(id, logged))),
                    None => GroupQueue::Plain(VecDeque::new()),
                },
                members: 1,
                rx: Receivers::default(),
            })),
            Policy::Latest => Queue::Latest(Box::new(Latest {
                values: AHashMap::new(),
                order: VecDeque::new(),
                rx: Receivers::default(),
            })),
        };
        State {
            queue,
            tx_wakers: Vec::new(),
            closed: false,
            pressured: false,
            discarded: 0,
        }
    }

    /// A ring's members (none for the other kinds).
    pub(crate) fn readers(&self) -> &[Member] {
        match &self.queue {
            Queue::Ring(r) => &r.readers,
            _ => &[],
        }
    }

    /// Ring member `id`, if it still reads.
    pub(crate) fn reader_mut(&mut self, id: u64) -> Option<&mut Member> {
        match &mut self.queue {
            Queue::Ring(r) => r.readers.iter_mut().find(|m| m.id == id),
            _ => None,
        }
    }

    /// A queue group's or a `latest` subscriber's receivers.
    pub(crate) fn receivers(&self) -> Option<&Receivers> {
        match &self.queue {
            Queue::Ring(_) => None,
            Queue::Group(g) => Some(&g.rx),
            Queue::Latest(l) => Some(&l.rx),
        }
    }

    /// See [`receivers`](Self::receivers).
    pub(crate) fn receivers_mut(&mut self) -> Option<&mut Receivers> {
        match &mut self.queue {
            Queue::Ring(_) => None,
            Queue::Group(g) => Some(&mut g.rx),
            Queue::Latest(l) => Some(&mut l.rx),
        }
    }

    /// Subscribers reading the queue: a group's members, or one.
    pub(crate) fn members(&self) -> usize {
        match &self.queue {
            Queue::Group(g) => g.members,
            _ => 1,
        }
    }

    /// A queue group's queue.
    pub(crate) fn group_mut(&mut self) -> Option<&mut Group<T>> {
        match &mut self.queue {
            Queue::Group(g) => Some(g),
            _ => None,
        }
    }

    /// A keyed group's log, if it has one.
    pub(crate) fn log_mut(&mut self) -> Option<&mut Keyed<T>> {
        self.group_mut()?.queue.log_mut()
    }

    /// How many subscribers an event put in this queue is delivered to.
    pub(crate) fn audience(&self) -> usize {
        match &self.queue {
            Queue::Ring(r) => r.readers.len(),
            _ => 1,
        }
    }

    /// The member a lossless publisher that found the queue full waits on:
    /// a ring's slowest member, otherwise the subscriber itself (`sub`).
    pub(crate) fn waits_on(&self, sub: u64) -> u64 {
        match &self.queue {
            Queue::Ring(r) => r.slowest_id,
            _ => sub,
        }
    }

    /// A ring's members (the queue of a lossless or lossy subscriber).
    fn ring_members(&mut self) -> &mut RingMembers {
        match &mut self.queue {
            Queue::Ring(r) => r,
            _ => unreachable!("lossless and lossy subscribers have a ring"),
        }
    }

    /// Events waiting: for a ring, the most any member has waiting.
    pub(crate) fn depth(&self, sub: &SubShared<T>) -> usize {
        match &self.queue {
            Queue::Ring(r) => {
                let ring = sub.ring();
                r.readers.iter().map(|m| m.depth(ring)).max().unwrap_or(0)
            }
            Queue::Group(g) => g.queue.len(),
            Queue::Latest(l) => l.order.len(),
        }
    }

    /// Puts `env` in the queue (room was checked for lossless queues);
    /// receivers to wake go to `wake`. Returns the event a ring wrote over
    /// and adds those it let go of after every member read them to `spent`
    /// (see `queue::ring`), for the caller to drop once it has let the lock
    /// go: what a payload's `Drop` does never runs under it.
    #[must_use = "the event a ring let go of is dropped after the lock"]
    #[inline]
    pub(crate) fn push(
        &mut self,
        sub: &SubShared<T>,
        env: Arc<Envelope<T>>,
        wake: &mut SmallVec<[Waker; 8]>,
        spent: &mut Vec<Arc<Envelope<T>>>,
    ) -> Option<Arc<Envelope<T>>> {
        match &mut self.queue {
            Queue::Ring(r) => {
                let ring = sub.ring();
                if !ring.lossless() {
                    r.make_way(ring);
                }
                // What the slot held goes (a lossy ring's oldest event even
                // if a member had not read it).
                let old = ring.push(env, r.readers.len() as u32);
                if sub.reclaim_due(ring.tail()) && !r.readers.is_empty() {
                    r.reclaim(ring, spent);
                }
                // Members' entries are written by their readers only when
                // they park: look at them only when one of them waits.
                if r.parked > 0 {
                    r.wake_parked(wake);
                }
                if ring.lossless() && !self.pressured && ring.tail() - r.slowest >= sub.high as u64
                {
                    self.check_pressure(sub);
                }
                old
            }
            _ => self.push_queued(sub, env, wake),
        }
    }

    /// A lossless ring's backlog looked as high as its high watermark:
    /// raises backpressure if it is.
    #[cold]
    #[inline(never)]
    fn check_pressure(&mut self, sub: &SubShared<T>) {
        let ring = sub.ring();
        let r = self.ring_members();
        let tail = ring.tail();
        // Flag first, then look: a reader moving on at the same time
        // either is seen or sees the flag.
        ring.flags.fetch_or(PRESSURED, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if tail - r.refresh_slowest(ring) >= sub.high as u64 {
            self.pressured = true;
            sub.pressure.raise();
        } else {
            ring.flags.fetch_and(!PRESSURED, Ordering::Relaxed);
        }
    }

    /// [`push`](Self::push) to a queue group or a `latest` subscriber.
    #[inline(never)]
    fn push_queued(
        &mut self,
        sub: &SubShared<T>,
        env: Arc<Envelope<T>>,
        wake: &mut SmallVec<[Waker; 8]>,
    ) -> Option<Arc<Envelope<T>>> {
        match &mut self.queue {
            Queue::Ring(_) => unreachable!("rings are pushed to by `push`"),
            Queue::Group(g) => {
                g.rx.delivered += 1;
                let key = sub.key.as_deref().map(|k| k(&env));
                let to = g.queue.push(env, key);
                let depth = g.queue.len();
                g.rx.peak = g.rx.peak.max(depth);
                if !self.pressured && depth >= sub.high {
                    self.pressured = true;
                    sub.pressure.raise();
                }
                wake.extend(match to {
                    // A keyed group's event waits for its one member.
                    For::Member(m) => g.rx.take(m),
                    For::Nobody => None,
                    // A plain group wakes one waiting member.
                    For::Any => g.rx.take_first(),
                });
                None
            }
            Queue::Latest(l) => {
                l.rx.delivered += 1;
                let old = if let Some(old) = l.values.get_mut(&env.topic) {
                    l.rx.superseded += 1;
                    Some(std::mem::replace(old, env))
                } else {
                    l.order.push_back(env.topic.clone());
                    l.values.insert(env.topic.clone(), env);
                    None
                };
                l.rx.peak = l.rx.peak.max(l.order.len());
                wake.extend(l.rx.take_first());
                old
            }
        }
    }

    /// Whether the queue can take one more event now (only a lossless ring
    /// and a queue group can be full).
    #[inline]
    pub(crate) fn has_room(&mut self, sub: &SubShared<T>) -> bool {
        match &mut self.queue {
            Queue::Ring(r) => {
                let ring = sub.ring();
                if !ring.lossless() {
                    return true;
                }
                let tail = ring.tail();
                let cap = ring.capacity();
                tail - r.slowest < cap || tail - r.refresh_slowest(ring) < cap
            }
            Queue::Group(g) => g.queue.len() < sub.capacity,
            Queue::Latest(_) => true,
        }
    }

    /// No room (see [`has_room`](Self::has_room)): registers `waker` to be
    /// woken when there is, unless room appeared meanwhile (then `true`).
    pub(crate) fn wait_for_room(&mut self, sub: &SubShared<T>, waker: Option<&Waker>) -> bool {
        let Some(w) = waker else {
            return false;
        };
        if let Queue::Ring(_) = self.queue {
            // (A lossless ring: a lossy one always has room.) Flag first,
            // then look again: the reader that makes room either is seen
            // here or sees the flag and wakes us.
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
        if self.pressured {
            self.pressured = false;
            sub.pressure.lower();
        }
        let mut w: SmallVec<[Waker; 4]> = self.tx_wakers.drain(..).collect();
        match &mut self.queue {
            Queue::Ring(r) => {
                if discard {
                    // (A ring is discarded only once its last member left.)
                    debug_assert!(r.readers.is_empty());
                    sub.ring().clear();
                }
                w.extend(r.readers.iter_mut().filter_map(|m| m.waker.take()));
                r.parked = 0;
            }
            Queue::Group(g) => {
                if discard {
                    self.discarded += g.queue.clear() as u64;
                }
                w.extend(g.rx.wakers.drain(..).map(|(_, w)| w));
            }
            Queue::Latest(l) => {
                if discard {
                    self.discarded += l.order.len() as u64;
                    l.values.clear();
                    l.order.clear();
                }
                w.extend(l.rx.wakers.drain(..).map(|(_, w)| w));
            }
        }
        w
    }

    /// After a ring member read or left: clears backpressure if the ring
    /// drained to its low watermark, and wakes waiting publishers once the
    /// slowest member is down to
    /// [`wake_publishers_at`](SubShared::wake_publishers_at).
    pub(crate) fn settle(&mut self, sub: &SubShared<T>) -> SmallVec<[Waker; 2]> {
        let ring = sub.ring();
        let tail = ring.tail();
        let slowest = self.ring_members().refresh_slowest(ring);
        if self.pressured && tail - slowest <= sub.low as u64 {
            self.pressured = false;
            sub.pressure.lower();
            ring.flags.fetch_and(!PRESSURED, Ordering::Relaxed);
        }
        let mut wake = SmallVec::new();
        if !self.tx_wakers.is_empty()
            && (!ring.lossless() || tail - slowest <= sub.wake_publishers_at())
        {
            wake.extend(self.tx_wakers.drain(..));
        }
        if self.tx_wakers.is_empty() {
            ring.flags.fetch_and(!WAITING, Ordering::Relaxed);
        }
        wake
    }

    /// Adds a ring member reading from now on. The member that makes the
    /// ring (its id is the queue's) uses the ring's own cell, which nobody
    /// else has used; one that joins later gets a cell of its own.
    pub(crate) fn join(&mut self, sub: &SubShared<T>, id: u64, name: Arc<str>) -> Reader {
        let ring = sub.ring();
        let tail = ring.tail();
        let (cell, mine) = if id == sub.id {
            // It joins as the ring is made, before a publisher can find it:
            // at position 0, where the ring's cell starts.
            debug_assert_eq!(tail, 0);
            (CellRef::Ring, CellRef::Ring)
        } else {
            let cell = Arc::new(MemberCell::new(tail));
            (CellRef::Own(cell.clone()), CellRef::Own(cell))
        };
        let readers = &mut self.ring_members().readers;
        readers.push(Member {
            id,
            name,
            cell: mine,
            joined: tail,
            discarded: 0,
            blocked_ns: 0,
            peak: 0,
            waker: None,
        });
        ring.set_members(readers.len());
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
        let r = self.ring_members();
        let Some(i) = r.readers.iter().position(|m| m.id == id) else {
            return (None, SmallVec::new());
        };
        let mut m = r.readers.swap_remove(i);
        if m.waker.take().is_some() {
            r.parked = r.parked.saturating_sub(1);
        }
        let ring = sub.ring();
        ring.set_members(r.readers.len());
        let tail = ring.tail();
        // (Never behind a lossy ring's oldest event: see `make_way`.)
        let cursor = m.cursor(ring);
        m.discarded += tail - cursor;
        m.cell(ring).cursor.store(tail, Ordering::Release);
        let wake = self.settle(sub);
        (Some(m), wake)
    }
}
