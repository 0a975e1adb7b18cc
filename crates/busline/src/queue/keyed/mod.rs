//! A keyed queue group: every event of a key goes to one member, in
//! publish order.
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

use crate::envelope::Envelope;

mod log;

pub(crate) use log::GroupLog;

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

/// A keyed group's members, their queues, and who owns which key.
pub(crate) struct Keyed<T> {
    pub(super) members: SmallVec<[Slot<T>; 4]>,
    /// Keys with events queued or being handled: their member, and how many.
    owners: AHashMap<u64, Owner>,
    pub(super) len: usize,
    /// On persisted topics: the replay and the group's position.
    pub(crate) log: Option<GroupLog<T>>,
}

pub(super) struct Slot<T> {
    pub(super) id: u64,
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

    /// Drops every queued event, the key owners and the log.
    pub(super) fn clear(&mut self) {
        self.members.iter_mut().for_each(|m| m.queue.clear());
        self.owners.clear();
        self.len = 0;
        self.log = None;
    }

    pub(super) fn join(&mut self, id: u64) {
        self.members.push(Slot {
            id,
            queue: VecDeque::new(),
            handling: Vec::new(),
        });
    }

    /// The member `key` hashes to among the current members (rendezvous:
    /// the highest score of key and member wins).
    pub(super) fn hashed(&self, key: u64) -> usize {
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

    pub(super) fn take(
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

    pub(super) fn leave(
        &mut self,
        id: u64,
        unreceived: VecDeque<Arc<Envelope<T>>>,
    ) -> SmallVec<[u64; 4]> {
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
pub(super) fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
