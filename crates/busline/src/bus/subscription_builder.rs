//! [`SubscriptionBuilder`]: a subscription's options.

use std::sync::Arc;

use super::Bus;
use crate::envelope::Envelope;
use crate::error::SubscribeError;
use crate::queue::{Filter, Policy};
use crate::subscription::Subscription;

/// Options for a new subscription; made by [`Bus::subscriber`](crate::Bus::subscriber).
#[must_use = "call .subscribe() to subscribe"]
pub struct SubscriptionBuilder<'a, T> {
    pub(crate) bus: &'a Bus<T>,
    pub(crate) pattern: String,
    pub(crate) policy: Policy,
    pub(crate) capacity: Option<usize>,
    pub(crate) name: Option<String>,
    pub(crate) filter: Option<Filter<T>>,
    pub(crate) key: Option<crate::queue::KeyFn<T>>,
    pub(crate) watermarks: Option<(usize, usize)>,
    pub(crate) start: crate::store::StartAt,
    pub(crate) consumer: Option<String>,
    pub(crate) store: Option<Arc<dyn crate::store::EventStore<T>>>,
    pub(crate) include_own: bool,
}

impl<T> std::fmt::Debug for SubscriptionBuilder<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionBuilder")
            .field("pattern", &self.pattern)
            .field("policy", &self.policy)
            .field("capacity", &self.capacity)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
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

    /// Makes the queue group a **keyed** one: every event with the same
    /// `key` goes to the same member, in publish order, while different keys
    /// spread over the members. Every member of the group gives a key
    /// (the first member's function is the group's).
    ///
    /// Each key's events are handled one batch at a time, in publish order,
    /// each by exactly one member, whoever joins or leaves; see the crate
    /// docs' [keyed groups](crate#keyed-groups) for what a rebalance does
    /// and how a group resumes on persisted topics.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = busline::Bus::<(u32, u32)>::new();
    /// let member = || bus.subscriber("orders.>").queue("billing").key(|e| e.payload.0);
    /// let (mut a, mut b) = (member().subscribe()?, member().subscribe()?);
    /// for step in 0..3 {
    ///     for order in 0..4 {
    ///         bus.publish_to("orders.step", (order, step)).await.unwrap();
    ///     }
    /// }
    /// // Each order's three steps went to one member, in order.
    /// let mut seen = Vec::new();
    /// while let Ok(Some(e)) = a.try_recv() { seen.push(e.payload) }
    /// while let Ok(Some(e)) = b.try_recv() { seen.push(e.payload) }
    /// for order in 0..4 {
    ///     let steps: Vec<u32> = seen.iter().filter(|p| p.0 == order).map(|p| p.1).collect();
    ///     assert_eq!(steps, [0, 1, 2]);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn key<K: std::hash::Hash>(
        mut self,
        key: impl Fn(&Envelope<T>) -> K + Send + Sync + 'static,
    ) -> Self {
        self.key = Some(crate::queue::key_fn(key));
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
    /// on live with no gap and no duplicate (see [`EventStore`](crate::EventStore)).
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

    #[cfg_attr(
        feature = "runtime",
        doc = "On a module's handle ([`Context`](crate::Context)): whether to receive the
module's own events too (default: no; queue group members always do, see
[Own events](crate::Context#own-events)). No effect on a plain bus handle."
    )]
    #[cfg_attr(
        not(feature = "runtime"),
        doc = "On a module's handle (`Context`, feature `runtime`): whether to receive
the module's own events too (default: no; queue group members always do).
No effect on a plain bus handle."
    )]
    pub fn include_own(mut self, yes: bool) -> Self {
        self.include_own = yes;
        self
    }

    /// Subscribes. Events published from now on that match are delivered.
    pub fn subscribe(self) -> Result<Subscription<T>, SubscribeError> {
        self.bus.subscribe_with(self)
    }
}
