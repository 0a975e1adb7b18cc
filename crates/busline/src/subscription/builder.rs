//! [`SubscriptionBuilder`]: a subscription's options.

use std::sync::Arc;

use super::{Filter, Policy, Subscription};
use crate::envelope::Envelope;
use crate::error::SubscribeError;

/// Options for a new subscription; made by [`Bus::subscriber`](crate::Bus::subscriber).
#[must_use = "call .subscribe() to subscribe"]
pub struct SubscriptionBuilder<'a, T> {
    pub(crate) bus: &'a crate::Bus<T>,
    pub(crate) pattern: String,
    pub(crate) policy: Policy,
    pub(crate) capacity: Option<usize>,
    pub(crate) name: Option<String>,
    pub(crate) filter: Option<Filter<T>>,
    pub(crate) watermarks: Option<(usize, usize)>,
    pub(crate) start: crate::store::StartAt,
    pub(crate) consumer: Option<String>,
    pub(crate) store: Option<Arc<dyn crate::store::EventStore<T>>>,
}

impl<T: Send + Sync + 'static> SubscriptionBuilder<'_, T> {
    /// Lossless delivery (the default) with a queue of `capacity` events.
    pub fn lossless(mut self, capacity: usize) -> Self {
        self.policy = Policy::Lossless;
        self.capacity = Some(capacity);
        self
    }

    /// Lossy delivery with a queue of `capacity` events.
    pub fn lossy(mut self, capacity: usize) -> Self {
        self.policy = Policy::Lossy;
        self.capacity = Some(capacity);
        self
    }

    /// Only the newest event per topic.
    pub fn latest(mut self) -> Self {
        self.policy = Policy::Latest;
        self
    }

    /// Joins (or creates) the queue group `group` on this pattern.
    pub fn queue(mut self, group: impl Into<String>) -> Self {
        self.policy = Policy::Queue(group.into());
        self
    }

    /// Sets the policy.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Queue capacity (lossless, lossy, queue groups).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Names the subscriber (in stats, metrics and errors). Default: `sub-<id>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Only events for which `f` returns true are delivered (on top of the pattern).
    pub fn filter(mut self, f: impl Fn(&Envelope<T>) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Arc::new(f));
        self
    }

    /// High and low watermarks (lossless and queue groups): when the queue
    /// reaches `high` the bus's backpressure signal is raised; it is cleared
    /// when the queue drains to `low` or below. Default: 3/4 and 1/4 of capacity.
    pub fn watermarks(mut self, high: usize, low: usize) -> Self {
        self.watermarks = Some((high, low));
        self
    }

    /// Starts in the past: replays the durable store from `start`, then goes
    /// on live with no gap and no duplicate (see [`store`](crate::store)).
    pub fn from(mut self, start: crate::store::StartAt) -> Self {
        self.start = start;
        self
    }

    /// Makes this a named consumer whose position the store keeps
    /// ([`Subscription::commit`], [`StartAt::Committed`](crate::store::StartAt::Committed)).
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        self.consumer = Some(name.into());
        self
    }

    /// The store to replay from (default: the first store the bus persists to).
    pub fn store(mut self, store: Arc<dyn crate::store::EventStore<T>>) -> Self {
        self.store = Some(store);
        self
    }

    /// Subscribes. Events published from now on that match are delivered.
    pub fn subscribe(self) -> Result<Subscription<T>, SubscribeError> {
        self.bus.subscribe_with(self)
    }
}
