//! Who subscribes to what: the pattern index, the subscribers by id, and
//! which of them share a queue (queue groups, and rings with the same
//! settings).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ahash::AHashMap;
use hashbrown::HashTable;

use super::SubscriptionBuilder;
use super::{Bus, BusInner};
use crate::error::SubscribeError;
use crate::queue::{Left, Policy, Retired, Ring, State, SubShared};
use crate::router::Trie;
use crate::stats::SubscriberStats;
use crate::subscription::{Registrar, Subscription};
use crate::sync::{AtomicU64, Mutex};
use crate::topic::Pattern;

pub(crate) struct Registry<T> {
    pub(super) trie: Trie,
    pub(crate) subs: AHashMap<u64, Arc<SubShared<T>>>,
    /// Queue groups and rings that new subscribers can join, by id: each
    /// one's [`ShareKey`] is computed from the subscriber in `subs` (which
    /// holds every id here), so the table keeps 8 bytes per entry.
    shared: HashTable<u64>,
    /// Hashes [`ShareKey`]s for `shared`.
    hasher: ahash::RandomState,
    /// Counters of subscribers that are gone, so bus totals never go backwards.
    retired: Retired,
}

impl<T> Registry<T> {
    pub(super) fn new() -> Self {
        Registry {
            trie: Trie::default(),
            subs: AHashMap::new(),
            shared: HashTable::new(),
            hasher: ahash::RandomState::new(),
            retired: Retired::default(),
        }
    }

    /// Keeps a gone subscriber's counters in the bus's totals.
    pub(crate) fn retire(&mut self, counters: Retired) {
        self.retired.delivered += counters.delivered;
        self.retired.dropped += counters.dropped;
        self.retired.discarded += counters.discarded;
    }

    /// The counters of subscribers that are gone.
    pub(super) fn retired(&self) -> Retired {
        self.retired
    }
}

/// What makes a new subscriber join an existing queue rather than get its own.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum ShareKey<'a> {
    /// A queue group: (pattern, group).
    Group(&'a str, &'a str),
    /// A ring: unfiltered lossless or lossy subscribers with the same settings.
    Ring {
        pattern: &'a str,
        lossy: bool,
        capacity: usize,
        high: usize,
        low: usize,
    },
}

impl<'a> ShareKey<'a> {
    fn of(
        pattern: &'a Pattern,
        policy: &'a Policy,
        filtered: bool,
        capacity: usize,
        high: usize,
        low: usize,
    ) -> Option<Self> {
        match policy {
            Policy::Queue(group) => Some(ShareKey::Group(pattern.as_str(), group)),
            Policy::Lossless | Policy::Lossy if !filtered => Some(ShareKey::Ring {
                pattern: pattern.as_str(),
                lossy: *policy == Policy::Lossy,
                capacity,
                high,
                low,
            }),
            _ => None,
        }
    }

    /// The key of the queue `sub` reads, if others can join it.
    fn of_sub<T>(sub: &'a SubShared<T>) -> Option<Self> {
        let filtered = sub.filter.is_some();
        ShareKey::of(
            &sub.pattern,
            &sub.policy,
            filtered,
            sub.capacity,
            sub.high,
            sub.low,
        )
    }
}

impl<T> Registry<T> {
    /// The queue a subscriber with `key` joins, if there is one.
    fn find_shared(&self, key: &ShareKey<'_>) -> Option<&Arc<SubShared<T>>> {
        let subs = &self.subs;
        let id = self.shared.find(self.hasher.hash_one(key), |id| {
            key_of(subs, *id) == Some(*key)
        })?;
        subs.get(id)
    }

    /// Makes `sub` (in `subs` already) the queue new subscribers with its
    /// key join, in place of any other with that key.
    fn add_shared(&mut self, sub: &SubShared<T>) {
        let Some(key) = ShareKey::of_sub(sub) else {
            return;
        };
        let (subs, hasher) = (&self.subs, &self.hasher);
        let hash = hasher.hash_one(key);
        match self
            .shared
            .find_mut(hash, |id| key_of(subs, *id) == Some(key))
        {
            Some(id) => *id = sub.id,
            None => {
                let rehash = |id: &u64| hasher.hash_one(key_of(subs, *id));
                self.shared.insert_unique(hash, sub.id, rehash);
            }
        }
    }

    /// Removes `sub` from the queues new subscribers can join (if it is
    /// there; under its key, another may have taken its place).
    fn remove_shared(&mut self, sub: &SubShared<T>) {
        let Some(key) = ShareKey::of_sub(sub) else {
            return;
        };
        let hash = self.hasher.hash_one(key);
        if let Ok(entry) = self.shared.find_entry(hash, |id| *id == sub.id) {
            entry.remove();
        }
    }
}

/// The share key of subscriber `id` (every id in `Registry::shared` is in `subs`).
fn key_of<T>(subs: &AHashMap<u64, Arc<SubShared<T>>>, id: u64) -> Option<ShareKey<'_>> {
    subs.get(&id).and_then(|s| ShareKey::of_sub(s))
}

impl<T: Send + Sync + 'static> Bus<T> {
    pub(super) fn register(
        &self,
        b: SubscriptionBuilder<'_, T>,
        pattern: Pattern,
        stored: bool,
    ) -> Result<Subscription<T>, SubscribeError> {
        let inner = &self.inner;
        let (capacity, high, low) = match settings(&b, inner.default_capacity) {
            Ok(s) => s,
            Err(reason) => {
                return Err(SubscribeError::Options {
                    pattern: b.pattern.clone(),
                    reason,
                })
            }
        };
        let bad = |reason: String| {
            Err(SubscribeError::Options {
                pattern: b.pattern.clone(),
                reason,
            })
        };
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let name: Arc<str> = match (&b.name, &b.policy) {
            (Some(n), _) => n.as_str().into(),
            (None, Policy::Queue(g)) => g.as_str().into(),
            (None, _) => format!("sub-{id}").into(),
        };
        let handle = |shared: Arc<SubShared<T>>, name: Arc<str>, reader| {
            Subscription::new(shared, Arc::downgrade(inner) as _, reader, id, name)
        };
        let mut reg = inner.registry.write();
        if inner.closed.load(Ordering::Acquire) {
            return Err(SubscribeError::Closed);
        }
        // Joining an existing queue group, or a ring with the same settings.
        let key = ShareKey::of(&pattern, &b.policy, b.filter.is_some(), capacity, high, low);
        if let Some(key) = &key {
            if let Some(shared) = reg.find_shared(key).cloned() {
                let given = b.capacity.is_some() || b.watermarks.is_some();
                let settings = given.then_some((capacity, high, low));
                let keyed = b.key.is_some();
                match shared.join_shared(id, name.clone(), b.filter.is_some(), keyed, settings) {
                    Some(Ok(reader)) => {
                        drop(reg);
                        return Ok(handle(shared, name, reader));
                    }
                    Some(Err(reason)) => return bad(reason),
                    None => {}
                }
            }
        }
        let shared = self.new_queue(b, id, &name, &pattern, (capacity, high, low), stored);
        let reader = shared
            .ring
            .is_some()
            .then(|| shared.state.lock().join(&shared, id, name.clone()));
        reg.trie.insert(&pattern, id);
        reg.subs.insert(id, shared.clone());
        reg.add_shared(&shared);
        inner.epoch.fetch_add(1, Ordering::Release);
        inner.cache.write().clear();
        drop(reg);
        Ok(handle(shared, name, reader))
    }
}

impl<T: Send + Sync + 'static> Bus<T> {
    /// A new queue for subscriber `id` (its first member, for a shared one).
    fn new_queue(
        &self,
        b: SubscriptionBuilder<'_, T>,
        id: u64,
        name: &Arc<str>,
        pattern: &Pattern,
        (capacity, high, low): (usize, usize, usize),
        stored: bool,
    ) -> Arc<SubShared<T>> {
        Arc::new(SubShared {
            id,
            // A queue group is named after the group (in stats, metrics and
            // `Full` errors), not after whichever member came first.
            name: match &b.policy {
                Policy::Queue(g) => g.as_str().into(),
                _ => name.clone(),
            },
            pattern: pattern.clone(),
            policy: b.policy.clone(),
            capacity,
            high,
            low,
            filter: b.filter.map(Box::new),
            state: Mutex::new(State::new(
                &b.policy,
                b.key.is_some().then_some((id, stored)),
            )),
            key: b.key.map(Box::new),
            pressure: self.inner.pressure.clone(),
            ring: matches!(b.policy, Policy::Lossless | Policy::Lossy)
                .then(|| Box::new(Ring::new(capacity, b.policy == Policy::Lossless))),
            filtered: AtomicU64::new(0),
            blocked_ns: AtomicU64::new(0),
        })
    }
}

/// The capacity and watermarks (high, low) `b` asks for, or why they
/// cannot be.
fn settings<T>(
    b: &SubscriptionBuilder<'_, T>,
    default_capacity: usize,
) -> Result<(usize, usize, usize), String> {
    let capacity = b.capacity.unwrap_or(default_capacity);
    if capacity == 0 {
        return Err("capacity must be at least 1".into());
    }
    if b.key.is_some() && !matches!(b.policy, Policy::Queue(_)) {
        return Err(format!(
            "a key spreads a queue group's events by key: it needs .queue(group), not {}",
            b.policy
        ));
    }
    let (high, low) = b
        .watermarks
        .unwrap_or(((capacity * 3 / 4).max(1), capacity / 4));
    if low >= high || high > capacity {
        return Err(format!(
            "watermarks need low < high <= capacity; got low {low}, high {high}, capacity {capacity}"
        ));
    }
    Ok((capacity, high, low))
}

impl<T> BusInner<T> {
    /// Removes a subscriber (or an emptied queue group) from the index.
    pub(crate) fn unregister(&self, reg: &mut Registry<T>, sub: &Arc<SubShared<T>>) {
        if reg.subs.remove(&sub.id).is_none() {
            return;
        }
        reg.trie.remove(&sub.pattern, sub.id);
        reg.remove_shared(sub);
        for s in SubscriberStats::of(sub) {
            reg.retire(Retired {
                delivered: s.delivered,
                dropped: s.dropped,
                discarded: s.discarded,
            });
        }
        self.routes_changed();
    }
}

impl<T: Send + Sync> Registrar<T> for BusInner<T> {
    fn leave(&self, shared: &Arc<SubShared<T>>, leave: &mut dyn FnMut() -> Left) -> Left {
        // Lock order everywhere: registry, then subscriber state.
        let mut reg = self.registry.write();
        let left = leave();
        if let Some(retired) = left.retired {
            reg.retire(retired);
        }
        if left.last {
            self.unregister(&mut reg, shared);
        }
        left
    }
}
