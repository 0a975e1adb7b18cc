//! The delivery protocol: the queues publishers put events in and
//! subscribers take them from.
//!
//! A subscriber's queue is one of three kinds, chosen by its [`Policy`]:
//!
//! - **Ring** (lossless and lossy): the publisher appends an event once and
//!   each member reads it at its own cursor, without the queue's lock
//!   (`ring.rs`, the only `unsafe` code of the crate). Unfiltered
//!   subscribers with the same pattern, policy, capacity and watermarks
//!   share one ring, so publishing costs the same with one of them or
//!   sixteen. A lossless ring that is full makes the publisher wait; a lossy
//!   one writes over its oldest event, moving members that had not read it
//!   past it (they see `Lagged`).
//! - **Group queue** (`queue(group)`): one queue its members take from one
//!   event at a time; an event wakes one waiting member.
//! - **Latest**: the newest event per topic, replacing the older one.
//!
//! # Who guards what
//!
//! Each subscriber's queue ([`SubShared`]) has one lock over its [`State`]:
//! the ring's members and their wakers, a group's queue, a `latest` map, and
//! the publishers waiting for room. Publishers take it to deliver
//! ([`commit`]: every target locked in id order, then the event put in all of
//! them or none); ring readers take it only to park, and to wake a publisher
//! waiting for room or to clear backpressure (`settle`). What a ring reader
//! moves without the lock (its cursor, its lost events) lives in its
//! [`MemberCell`](ring::MemberCell), one cache line each.
//!
//! # Waking
//!
//! A publisher that finds a lossless queue full registers its waker on the
//! queue and sets the ring's `WAITING` flag, then looks again; a reader that
//! moves its cursor looks at the flags after it (both sides `SeqCst`), so
//! one of them always sees the other. A reader that sees `WAITING` settles
//! the ring on the read that brings its backlog down to
//! `wake_publishers_at` (an eighth of the capacity free), which wakes the
//! publishers when no reader is further behind: a publisher paced by a
//! slow reader wakes once per run of events, not once per event, and
//! readers already past that mark never take the lock for it. The same
//! handshake (`PRESSURED`) clears backpressure when the slowest reader
//! drains to its low watermark.
//!
//! # Checked with loom
//!
//! `tests/loom/` runs publishers, receivers, closing and dropping through
//! every interleaving up to a preemption bound, with the locks and atomics of
//! `crate::sync` swapped for loom's (`RUSTFLAGS="--cfg busline_loom"`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Waker;

use smallvec::SmallVec;

use crate::envelope::Envelope;
use crate::sync::{AtomicU64, Mutex};
use crate::topic::Pattern;

mod commit;
mod group;
mod keyed;
mod members;
mod policy;
mod pressure;
pub(crate) mod ring;
mod state;

pub(crate) use commit::{add_blocked, commit, member_name, Full, Targets};
pub(crate) use keyed::{key_fn, KeyFn};
pub(crate) use members::{Member, Reader};
pub use policy::{Filter, Policy};
pub(crate) use pressure::Pressure;
pub(crate) use ring::Ring;
pub(crate) use state::{Queue, Receivers, State};

/// What the router delivers to: one subscriber's queue, or a queue shared by
/// several subscribers.
///
/// - Lossless and lossy subscribers read a **ring**: the publisher appends an
///   event once, and each member reads it at its own cursor. Unfiltered
///   subscribers with the same pattern, policy, capacity and watermarks share
///   one ring, so publishing costs the same with one of them or sixteen.
/// - A queue group shares one queue that members take from one at a time.
/// - A `latest` subscriber keeps a map of the newest event per topic.
pub(crate) struct SubShared<T> {
    pub(crate) id: u64,
    /// The subscriber's name (queue groups: the group's; rings: the first member's).
    pub(crate) name: Arc<str>,
    pub(crate) pattern: Pattern,
    pub(crate) policy: Policy,
    pub(crate) capacity: usize,
    pub(crate) high: usize,
    pub(crate) low: usize,
    /// (Boxed, as `key`: a thin pointer, for most subscribers have none.)
    pub(crate) filter: Option<Box<Filter<T>>>,
    /// A keyed queue group's key of an event (hashed).
    pub(crate) key: Option<Box<KeyFn<T>>>,
    pub(crate) pressure: Arc<Pressure>,
    pub(crate) state: Mutex<State<T>>,
    /// Lossless and lossy: the ring its members read (boxed: a cache line
    /// of its own, and the other kinds do without it).
    pub(crate) ring: Option<Box<Ring<T>>>,
    pub(crate) filtered: AtomicU64,
    pub(crate) blocked_ns: AtomicU64,
}

impl<T> SubShared<T> {
    /// A new subscriber `id` joins this shared queue (a queue group, or a
    /// ring with the same settings). `None` if the queue has closed
    /// meanwhile; `Err` with the reason a group refuses it (a filter of its
    /// own, or `settings` (capacity, high, low) it asked for that differ from
    /// the group's); otherwise the ring reader it reads with (none for a
    /// group member, which takes from the group's queue). A member of a
    /// keyed group must give a key (`keyed`), and only such a member.
    pub(crate) fn join_shared(
        &self,
        id: u64,
        name: Arc<str>,
        own_filter: bool,
        keyed: bool,
        settings: Option<(usize, usize, usize)>,
    ) -> Option<Result<Option<Reader>, String>> {
        let mut st = self.state.lock();
        if st.closed {
            return None;
        }
        if !self.is_group() {
            return Some(Ok(Some(st.join(self, id, name))));
        }
        // One queue for the group: its first member's settings.
        let group = self.policy.to_string();
        if own_filter {
            return Some(Err(format!(
                "{group} shares one queue: a member joining it cannot have a filter of its own (the group's first member sets it)"
            )));
        }
        if settings.is_some_and(|s| s != (self.capacity, self.high, self.low)) {
            return Some(Err(format!(
                "{group} already has capacity {} and watermarks {}/{}; a member joining it cannot change them",
                self.capacity, self.high, self.low
            )));
        }
        match (self.key.is_some(), keyed) {
            (true, false) => return Some(Err(format!(
                "{group} is keyed: a member joining it must give a key too (.key(..))"
            ))),
            (false, true) => return Some(Err(format!(
                "{group} is not keyed (its first member gave no key): a member joining it cannot give one"
            ))),
            _ => {}
        }
        let group = st.group_mut().expect("a queue group's queue");
        group.members += 1;
        group.queue.join(id);
        Some(Ok(None))
    }

    /// Counts an event its filter refused.
    pub(crate) fn count_filtered(&self) {
        self.filtered.fetch_add(1, Ordering::Relaxed);
    }

    /// Puts `env` in the queue if it has room now, without waiting (the
    /// runtime's system events): `None` if the queue is closed, `Some(false)`
    /// if it is full.
    #[cfg(feature = "runtime")]
    pub(crate) fn offer(&self, env: &Arc<Envelope<T>>) -> Option<bool> {
        let mut st = self.state.lock();
        if st.closed {
            return None;
        }
        if !st.has_room(self) {
            return Some(false);
        }
        let mut wake: SmallVec<[Waker; 8]> = SmallVec::new();
        let mut spent = Vec::new();
        let old = st.push(self, env.clone(), &mut wake, &mut spent);
        drop(st);
        wake.into_iter().for_each(Waker::wake);
        drop((old, spent));
        Some(true)
    }

    /// Subscriber `member` leaves (its subscription is dropped): a ring
    /// member's unread events, or the whole queue when it was the last one
    /// reading it, are discarded and counted.
    pub(crate) fn leave(
        &self,
        member: u64,
        unreceived: std::collections::VecDeque<Arc<Envelope<T>>>,
    ) -> Left {
        let mut st = self.state.lock();
        let mut left = Left {
            retired: None,
            lost: 0,
            last: true,
            wake: SmallVec::new(),
        };
        match &mut st.queue {
            Queue::Ring(_) => {
                // Events handed to this subscriber and never received: counted, not silent.
                let (gone, w) = st.leave(self, member);
                left.wake.extend(w);
                left.lost = gone.as_ref().map_or(0, |m| m.discarded);
                // Its counters stay in the bus totals.
                left.retired = gone.map(|m| Retired {
                    delivered: self.ring().tail() - m.joined,
                    dropped: m.dropped(self.ring()),
                    discarded: m.discarded,
                });
                // The others read on; the last one takes the ring with it.
                left.last = st.readers().is_empty();
            }
            Queue::Group(g) => {
                g.rx.wakers.retain(|(m, _)| *m != member);
                g.members -= 1;
                // A keyed group hands what it had not taken to others.
                let handed = g.queue.leave(member, unreceived);
                if g.members > 0 {
                    left.last = false;
                    if self.key.is_some() {
                        for m in handed {
                            left.wake.extend(g.rx.take(m));
                        }
                    } else if !g.queue.is_empty() {
                        // What this member had not taken stays with the group.
                        left.wake.extend(g.rx.take_first());
                    }
                }
            }
            Queue::Latest(_) => {}
        }
        if left.last {
            let before = st.discarded;
            left.wake.extend(st.close(self, true));
            left.lost += st.discarded - before;
        }
        left
    }

    /// Whether its filter (if any) takes `env`. Counted as `filtered` only
    /// once the event is delivered to the others (see `count_filtered`).
    pub(crate) fn accepts(&self, env: &Envelope<T>) -> bool {
        self.filter.as_deref().is_none_or(|f| f(env))
    }

    pub(crate) fn is_group(&self) -> bool {
        matches!(self.policy, Policy::Queue(_))
    }

    /// Its ring, if that has one member (as last recorded: a hint, see
    /// `Ring::solo`).
    pub(crate) fn lone_reader_ring(&self) -> Option<&Ring<T>> {
        self.ring.as_deref().filter(|r| r.solo())
    }

    /// A queue group without a key: any member takes the next event.
    pub(crate) fn is_plain_group(&self) -> bool {
        self.is_group() && self.key.is_none()
    }

    /// A lossless ring wakes the publishers waiting for room once its
    /// slowest member has at most this many events left: an eighth of the
    /// capacity free (at least one slot), so that a publisher kept waiting
    /// by a slow reader is woken for a run of events, not for each one.
    pub(crate) fn wake_publishers_at(&self) -> u64 {
        let cap = self.capacity as u64;
        cap - (cap / 8).max(1)
    }

    /// A ring's publisher empties the slots every member has read once
    /// every this many events (see `queue::ring`).
    pub(crate) fn reclaim_every(&self) -> u64 {
        (self.capacity as u64 / 8).max(1)
    }

    /// Whether the publish that moved a ring's end to `tail` empties the
    /// read slots ([`reclaim_every`](Self::reclaim_every); a mask, not a
    /// division, for the usual power-of-two capacity).
    #[inline]
    pub(crate) fn reclaim_due(&self, tail: u64) -> bool {
        let every = self.reclaim_every();
        if every.is_power_of_two() {
            tail & (every - 1) == 0
        } else {
            tail % every == 0
        }
    }

    pub(crate) fn ring(&self) -> &Ring<T> {
        self.ring
            .as_ref()
            .expect("lossless and lossy subscribers have a ring")
    }
}

/// Counters of subscribers that are gone, kept so bus totals never go backwards.
#[derive(Default, Clone, Copy)]
pub(crate) struct Retired {
    pub(crate) delivered: u64,
    pub(crate) dropped: u64,
    pub(crate) discarded: u64,
}

/// What a subscriber leaving did (see [`SubShared::leave`]).
pub(crate) struct Left {
    /// A ring member's counters, to keep in the bus's totals.
    pub(crate) retired: Option<Retired>,
    /// Events it had been handed and never received.
    pub(crate) lost: u64,
    /// It was the last one reading the queue: the queue is gone.
    pub(crate) last: bool,
    /// Publishers and receivers to wake.
    pub(crate) wake: SmallVec<[Waker; 4]>,
}
