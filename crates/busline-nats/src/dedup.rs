//! [`Dedup`]: a bounded memory of recently seen keys, oldest forgotten
//! first. The imports keep the ids of the events they delivered (to drop
//! redeliveries); request/reply keeps the reply inboxes of imported requests.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use busline::EventId;

/// Ids an import delivered recently, to drop redelivered duplicates.
pub(crate) struct Dedup<K = EventId> {
    set: HashSet<K>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: std::hash::Hash + Eq + Clone> Dedup<K> {
    pub(crate) fn new(cap: usize) -> Self {
        Dedup {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }
    pub(crate) fn contains<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.set.contains(key)
    }
    pub(crate) fn insert(&mut self, key: K) {
        self.claim(key);
    }
    /// Remembers `key` unless it is known: whether it was new (always true
    /// with no window).
    pub(crate) fn claim(&mut self, key: K) -> bool {
        if self.cap == 0 {
            return true;
        }
        if !self.set.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
    /// Forgets a claimed `key` whose delivery failed (rare: a linear scan).
    pub(crate) fn release(&mut self, key: &K) {
        if self.set.remove(key) {
            self.order.retain(|k| k != key);
        }
    }
}

/// Ids delivered by all of a transport's imports: a message two patterns
/// both match (`a.*` and `*.b`) arrives on each, and goes to the bus once.
pub(crate) type SharedDedup = Arc<std::sync::Mutex<Dedup>>;

/// Locks a shared dedup (a panic elsewhere while it was held leaves it usable).
pub(crate) fn lock_dedup(d: &std::sync::Mutex<Dedup>) -> std::sync::MutexGuard<'_, Dedup> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}
