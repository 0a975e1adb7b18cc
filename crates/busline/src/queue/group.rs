//! A queue group's queue: plain (any member takes the next event) or keyed
//! (every event of a key goes to one member, in publish order).
//!
//! # Keyed groups
//!
//! Each member has its own queue. An event goes to the member that *owns*
//! its key: the member holding events of that key (queued, or the one it is
//! handling), else the member the key hashes to among the current members
//! (rendezvous hashing: a member joining takes about 1/n of the idle keys,
//! one leaving gives away only its own). So at any time every event of a key
//! not yet handled is with one member, in publish order, and a key moves to
//! another member only once its owner has handled all it held: the handoff
//! waits for the old member, and no event is in two queues.
//!
//! A member takes what its queue holds (up to a batch) in one go, and
//! *handles* those events until it comes back for more (or leaves): while
//! it does, their keys' later events wait for it. A member that leaves
//! hands the events it had not received, in order, to the members their
//! keys now hash to.

use std::collections::VecDeque;
use std::hash::Hash;
use std::sync::Arc;

use ahash::AHashMap;
use smallvec::SmallVec;

use super::keyed_log::GroupLog;
use crate::envelope::Envelope;

/// A keyed group's key of an event, hashed (events whose keys hash alike
/// are ordered together, which keeps each key's order).
pub(crate) type KeyFn<T> = Arc<dyn Fn(&Envelope<T>) -> u64 + Send + Sync>;

/// Makes a [`KeyFn`] from a key function: the same key gives the same hash
/// in every process (fixed seeds), so members agree across restarts.
pub(crate) fn key_fn<T, K: Hash>(
    f: impl Fn(&Envelope<T>) -> K + Send + Sync + 'static,
) -> KeyFn<T> {
    let state = ahash::RandomState::with_seeds(0x6b65_7965, 0x6475_6f72, 0x6275_736c, 0x696e_6521);
    Arc::new(move |env| state.hash_one(f(env)))
}

/// Who a pushed event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum For {
    /// Any member (a plain group): wake one that waits.
    Any,
    /// This member (a keyed group): wake it.
    Member(u64),
    /// Nobody yet: it waits behind a keyed group's replay (or the replay
    /// had it already).
    Nobody,
}

/// A queue group's events.
pub(crate) enum GroupQueue<T> {
    Plain(VecDeque<Arc<Envelope<T>>>),
    Keyed(Box<Keyed<T>>),
}

impl<T> GroupQueue<T> {
    /// Events queued and not taken.
    pub(crate) fn len(&self) -> usize {
        match self {
            GroupQueue::Plain(q) => q.len(),
            GroupQueue::Keyed(k) => k.len + k.log.as_ref().map_or(0, |l| l.held()),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `env` (`key` is the keyed group's hash of it).
    pub(crate) fn push(&mut self, env: Arc<Envelope<T>>, key: Option<u64>) -> For {
        match (self, key) {
            (GroupQueue::Keyed(k), Some(key)) => match k.admit_live(key, &env) {
                true => For::Member(k.push(key, env)),
                false => For::Nobody,
            },
            (GroupQueue::Keyed(_), None) => unreachable!("a keyed group has a key function"),
            (GroupQueue::Plain(q), _) => {
                q.push_back(env);
                For::Any
            }
        }
    }

    /// The next event for `member`; a keyed group's member takes up to
    /// `batch` more of its own into `more` (it has handled all it took before).
    pub(crate) fn take(
        &mut self,
        member: u64,
        more: &mut VecDeque<Arc<Envelope<T>>>,
        batch: usize,
    ) -> Option<Arc<Envelope<T>>> {
        match self {
            GroupQueue::Plain(q) => q.pop_front(),
            GroupQueue::Keyed(k) => k.take(member, more, batch),
        }
    }

    /// A keyed group's log, if it has one.
    pub(crate) fn log_mut(&mut self) -> Option<&mut Keyed<T>> {
        match self {
            GroupQueue::Keyed(k) if k.log.is_some() => Some(k),
            _ => None,
        }
    }

    /// Member `id` joins.
    pub(crate) fn join(&mut self, id: u64) {
        if let GroupQueue::Keyed(k) = self {
            k.join(id);
        }
    }

    /// Member `id` leaves with `unreceived` (taken, not received): a keyed
    /// group hands those and what it had not taken to the members their keys
    /// now hash to, who are returned (to wake).
    pub(crate) fn leave(
        &mut self,
        id: u64,
        unreceived: VecDeque<Arc<Envelope<T>>>,
    ) -> SmallVec<[u64; 4]> {
        match self {
            GroupQueue::Plain(q) => {
                // (A plain member takes one at a time: nothing unreceived.)
                unreceived.into_iter().rev().for_each(|e| q.push_front(e));
                SmallVec::new()
            }
            GroupQueue::Keyed(k) => k.leave(id, unreceived),
        }
    }

    /// Empties the queue; returns how many events it held.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.len();
        match self {
            GroupQueue::Plain(q) => q.clear(),
            GroupQueue::Keyed(k) => {
                k.members.iter_mut().for_each(|m| m.queue.clear());
                k.owners.clear();
                k.len = 0;
                k.log = None;
            }
        }
        n
    }
}

/// A keyed group's members, their queues, and who owns which key.
pub(crate) struct Keyed<T> {
    members: SmallVec<[Slot<T>; 4]>,
    /// Keys with events queued or being handled: their member, and how many.
    owners: AHashMap<u64, Owner>,
    pub(super) len: usize,
    /// On persisted topics: the replay and the group's position.
    pub(crate) log: Option<GroupLog<T>>,
}

struct Slot<T> {
    id: u64,
    queue: VecDeque<(u64, Arc<Envelope<T>>)>,
    /// The keys of the events it took last and is handling.
    handling: Vec<u64>,
}

/// A key's member while it has events pending (queued or being handled);
/// with none pending, the key goes where it hashes.
struct Owner {
    member: u64,
    pending: u64,
}

/// Keys with nothing pending kept before they are swept (see `Keyed::handled`).
const IDLE_KEYS: usize = 4096;

impl<T> Keyed<T> {
    /// A keyed group whose first member is `id`; `logged`: on persisted
    /// topics, replaying before it goes live.
    pub(crate) fn new(id: u64, logged: bool) -> Self {
        let mut k = Keyed {
            members: SmallVec::new(),
            owners: AHashMap::new(),
            len: 0,
            log: logged.then(GroupLog::new),
        };
        k.join(id);
        k
    }

    fn join(&mut self, id: u64) {
        self.members.push(Slot {
            id,
            queue: VecDeque::new(),
            handling: Vec::new(),
        });
    }

    /// The member `key` hashes to among the current members (rendezvous:
    /// the highest score of key and member wins).
    fn hashed(&self, key: u64) -> usize {
        let score = |id: u64| mix(key ^ mix(id));
        (0..self.members.len())
            .max_by_key(|&i| score(self.members[i].id))
            .expect("a keyed group with events has a member")
    }

    /// Whether `member` has events queued.
    pub(super) fn has_queued(&self, member: u64) -> bool {
        !self.members[self.slot(member)].queue.is_empty()
    }

    pub(super) fn push(&mut self, key: u64, env: Arc<Envelope<T>>) -> u64 {
        let held = self
            .owners
            .get(&key)
            .filter(|o| o.pending > 0)
            .map(|o| o.member);
        // Hashed only when no member holds the key.
        let i = match held {
            Some(member) => self.slot(member),
            None => self.hashed(key),
        };
        let member = self.members[i].id;
        let owner = self
            .owners
            .entry(key)
            .or_insert(Owner { member, pending: 0 });
        owner.member = member;
        owner.pending += 1;
        self.members[i].queue.push_back((key, env));
        self.len += 1;
        member
    }

    fn take(
        &mut self,
        member: u64,
        more: &mut VecDeque<Arc<Envelope<T>>>,
        batch: usize,
    ) -> Option<Arc<Envelope<T>>> {
        let i = self.slot(member);
        self.handled(i);
        let slot = &mut self.members[i];
        let n = slot.queue.len().min(batch.max(1));
        let mut taken = slot.queue.drain(..n);
        let (key, first) = taken.next()?;
        slot.handling.push(key);
        for (key, env) in taken {
            slot.handling.push(key);
            more.push_back(env);
        }
        self.len -= n;
        Some(first)
    }

    /// Member `i` is done with the events it was handling. Keys with
    /// nothing pending keep their entry (a key often comes again soon)
    /// until there are many more of them than events pending.
    fn handled(&mut self, i: usize) {
        for key in self.members[i].handling.drain(..) {
            let owner = self
                .owners
                .get_mut(&key)
                .expect("a key being handled has an owner");
            owner.pending -= 1;
        }
        if self.owners.len() > IDLE_KEYS + 2 * self.len {
            self.owners.retain(|_, o| o.pending > 0);
        }
    }

    fn leave(&mut self, id: u64, unreceived: VecDeque<Arc<Envelope<T>>>) -> SmallVec<[u64; 4]> {
        let Some(i) = self.members.iter().position(|m| m.id == id) else {
            return SmallVec::new();
        };
        let mut slot = self.members.remove(i);
        // What it took and did not receive comes first, with the keys it
        // took them under (in the order taken: the last ones).
        let keys = slot
            .handling
            .split_off(slot.handling.len() - unreceived.len());
        for (key, env) in keys.into_iter().zip(unreceived).rev() {
            slot.queue.push_front((key, env));
            self.len += 1;
        }
        self.members.insert(i, slot);
        self.handled(i);
        if self.members.len() == 1 {
            // The last member: the group closes and discards the rest.
            return SmallVec::new();
        }
        let slot = self.members.remove(i);
        self.len -= slot.queue.len();
        // Its keys are free: every event of them not handled is here.
        self.owners.retain(|_, o| o.member != id);
        self.push_all(slot.queue)
    }

    /// Pushes `events` in order; returns the members given some.
    pub(super) fn push_all(
        &mut self,
        events: impl IntoIterator<Item = (u64, Arc<Envelope<T>>)>,
    ) -> SmallVec<[u64; 4]> {
        let mut woken = SmallVec::new();
        for (key, env) in events {
            let to = self.push(key, env);
            if !woken.contains(&to) {
                woken.push(to);
            }
        }
        woken
    }

    fn slot(&self, member: u64) -> usize {
        self.members
            .iter()
            .position(|m| m.id == member)
            .expect("a keyed group's member has a slot")
    }
}

/// A 64-bit mix (splitmix64's finalizer): rendezvous scores that differ for
/// nearby ids and keys.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Envelope, EventId};
    use crate::topic::Topic;

    fn env(n: u64) -> Arc<Envelope<u64>> {
        let id = EventId::from_u128(n.into());
        let topic = Topic::new("t").unwrap();
        let now = std::time::SystemTime::now();
        let e = Envelope::from_parts(n, id, topic, now, None, id, None, None, vec![], n);
        Arc::new(e)
    }

    /// Takes from `member` one at a time until it has nothing, returning the payloads.
    fn drain(g: &mut GroupQueue<u64>, member: u64) -> Vec<u64> {
        std::iter::from_fn(|| take(g, member)).collect()
    }

    fn take(g: &mut GroupQueue<u64>, member: u64) -> Option<u64> {
        g.take(member, &mut VecDeque::new(), 1).map(|e| e.payload)
    }

    #[test]
    fn one_key_goes_to_one_member_in_order() {
        let mut g = GroupQueue::Keyed(Box::new(Keyed::new(1, false)));
        g.join(2);
        g.join(3);
        let to: Vec<For> = (0..10).map(|n| g.push(env(n), Some(7))).collect();
        assert!(to.windows(2).all(|w| w[0] == w[1]), "{to:?}");
        let For::Member(m) = to[0] else { panic!() };
        assert_eq!(drain(&mut g, m), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn keys_spread_over_members() {
        let mut g = GroupQueue::Keyed(Box::new(Keyed::new(1, false)));
        (2..=4).for_each(|m| g.join(m));
        let mut per = AHashMap::new();
        for key in 0..4000u64 {
            if let For::Member(m) = g.push(env(key), Some(mix(key))) {
                *per.entry(m).or_insert(0) += 1;
            }
        }
        assert_eq!(per.len(), 4, "{per:?}");
        assert!(per.values().all(|&n| n > 700), "{per:?}");
    }

    #[test]
    fn a_key_stays_while_its_owner_holds_it_then_moves() {
        let mut g = GroupQueue::Keyed(Box::new(Keyed::new(1, false)));
        g.push(env(0), Some(42));
        g.push(env(1), Some(42));
        assert_eq!(take(&mut g, 1), Some(0));
        // Member 2 joins; whatever 42 hashes to now, 1 still holds it.
        g.join(2);
        assert_eq!(g.push(env(2), Some(42)), For::Member(1));
        assert_eq!(drain(&mut g, 1), vec![1, 2]);
        // All handled: the key goes where it hashes.
        let to = g.push(env(3), Some(42));
        let GroupQueue::Keyed(k) = &g else { panic!() };
        assert_eq!(to, For::Member(k.members[k.hashed(42)].id));
    }

    #[test]
    fn a_leaving_member_hands_its_queue_on_in_order() {
        let mut g = GroupQueue::Keyed(Box::new(Keyed::new(1, false)));
        g.join(2);
        let keys: Vec<u64> = (0..50).map(mix).collect();
        for n in 0..500u64 {
            g.push(env(n), Some(keys[(n % 50) as usize]));
        }
        // Member 1 takes a batch, receives its first, and leaves.
        let mut batch = VecDeque::new();
        let first = g.take(1, &mut batch, 8).map(|e| e.payload);
        assert_eq!(batch.len(), 7);
        let woken = g.leave(1, batch);
        assert!(woken.iter().all(|&m| m == 2), "{woken:?}");
        let rest = drain(&mut g, 2);
        assert_eq!(g.len(), 0);
        // Per key, publish order (member 1 had taken only event 0).
        for k in 0..50 {
            let seen: Vec<u64> = rest.iter().copied().filter(|n| n % 50 == k).collect();
            let from = if k == 0 && first == Some(0) { 1 } else { 0 };
            let want: Vec<u64> = (from..10).map(|i| i * 50 + k).collect();
            assert_eq!(seen, want, "key {k}");
        }
    }
}
