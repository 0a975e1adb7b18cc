//! A queue group's queue: plain (any member takes the next event) or keyed
//! (every event of a key goes to one member, in publish order).

use std::collections::VecDeque;
use std::sync::Arc;

use smallvec::SmallVec;

use super::keyed::Keyed;
use crate::envelope::Envelope;

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
            GroupQueue::Keyed(k) => k.clear(),
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Envelope;
    use crate::event_id::EventId;
    use crate::queue::keyed::mix;
    use crate::topic::Topic;
    use ahash::AHashMap;

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
