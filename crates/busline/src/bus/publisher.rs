//! [`Publisher`]: a handle that publishes to one topic, with the topic's
//! route looked up once rather than at every publish.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::deliver::{deliver_inline, Receipt};
use super::route::Route;
use super::Bus;
use crate::envelope::Envelope;
use crate::error::{PublishError, TopicError};

/// Publishes to one topic: made by [`Bus::publisher`].
///
/// [`Bus::publish_to`] finds the subscribers of its topic at every publish
/// (a per-thread cache of the last topic makes that cheap, not free); a
/// `Publisher` keeps them, and looks again only when a subscription, a
/// persisted topic or the bus itself has changed since. Events go out
/// exactly as with `publish_to`: the same envelope, ordering, backpressure
/// and errors.
///
/// It is a bus handle too: like a [`Bus`] clone it keeps the bus open. Its
/// methods take `&mut self` (the route it keeps is its own); clone it for
/// each task that publishes.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use busline::Bus;
///
/// let bus = Bus::<u64>::new();
/// let mut sub = bus.subscribe("ticks").unwrap();
/// let mut ticks = bus.publisher("ticks").unwrap();
/// for i in 0..3 {
///     ticks.publish(i).await.unwrap();
/// }
/// let got: Vec<u64> = sub.drain().iter().map(|e| e.payload).collect();
/// assert_eq!(got, [0, 1, 2]);
/// # }
/// ```
pub struct Publisher<T> {
    bus: Bus<T>,
    route: Arc<Route<T>>,
}

impl<T> Clone for Publisher<T> {
    fn clone(&self) -> Self {
        Publisher {
            bus: self.bus.clone(),
            route: self.route.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Publisher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topic", &self.route.topic.as_str())
            .finish()
    }
}

impl<T: Send + Sync + 'static> Bus<T> {
    /// A [`Publisher`] for `topic`, which must be a valid topic (no
    /// wildcards). A handle stamped for a module makes a publisher that
    /// stamps its events the same way.
    pub fn publisher(&self, topic: &str) -> Result<Publisher<T>, TopicError> {
        Ok(Publisher {
            bus: self.clone(),
            route: self.route(topic)?,
        })
    }
}

impl<T: Send + Sync + 'static> Publisher<T> {
    /// The topic it publishes to.
    pub fn topic(&self) -> &str {
        self.route.topic.as_str()
    }

    /// Publishes `event`, as [`Bus::publish_to`] does: waits while a
    /// lossless subscriber is full, and is cancel safe the same way.
    pub async fn publish(&mut self, event: T) -> Result<Receipt, PublishError<T>> {
        let env = self.wrap(event)?;
        if self.route.store.is_none() {
            return deliver_inline!(self.bus, &self.route, env);
        }
        self.bus.persist_and_deliver(self.route.clone(), env).await
    }

    /// Publishes without waiting, as [`Bus::try_publish_to`] does.
    pub fn try_publish(&mut self, event: T) -> Result<Receipt, PublishError<T>> {
        let env = self.wrap(event)?;
        self.bus.try_deliver(&self.route, env)
    }

    /// `event` in its envelope, with the route brought up to date; refused
    /// on a closed bus, as `publish_to` refuses it.
    ///
    /// The route is looked up again if the routes changed since it was (a
    /// subscription came or went, a topic was persisted): the bus's epoch,
    /// bumped by each such change (`Release`), is read here with `Acquire`,
    /// so a subscription made before this publish is in the route it uses.
    #[inline]
    fn wrap(&mut self, event: T) -> Result<Arc<Envelope<T>>, PublishError<T>> {
        let bus = &self.bus;
        if bus.inner.closed.load(Ordering::Acquire) {
            return Err(PublishError::Closed { event });
        }
        if self.route.epoch != bus.inner.epoch.load(Ordering::Acquire) {
            // (The topic was checked when the handle was made: the lookup
            // cannot refuse it.)
            if let Ok(r) = bus.route(self.route.topic.as_str()) {
                self.route = r;
            }
        }
        Ok(bus.event_envelope(self.route.topic.clone(), event))
    }
}
