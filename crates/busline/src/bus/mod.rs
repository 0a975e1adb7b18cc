//! The bus: the handle publishers and subscribers share.
//!
//! One concept per file:
//!
//! - [`Bus`] and [`WeakBus`], the handles, and the bus's shared state (this file);
//! - `builder`: [`BusBuilder`];
//! - `registry`: who subscribes to what, and which subscribers share a queue;
//! - `subscribe`: subscription options checked and replay set up;
//! - `route`: the subscribers a topic goes to, and the cache of them;
//! - `publish`: the publish paths (waiting, not waiting, and the runtime's offers);
//! - `deliver`: an event to every target of its route or none, waiting for room;
//! - `budget`: how publishes take tokio's budget, and yield to a lone reader;
//! - `publisher`: [`Publisher`], a handle that keeps its topic's route;
//! - `persist`: topics stored before they are delivered;
//! - `request`: request/reply;
//! - `pending`: requests waiting for their reply, and their timeouts;
//! - `waiting`: those requests by reply inbox number;
//! - `stamp`: a handle stamped for a module (name, lineage, own events);
//! - `backpressure`: the [`Backpressure`] signal.
//!
//! The delivery itself (locking the subscribers' queues, room, wake-ups) is
//! the `queue` module's.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use ahash::AHashMap;

use crate::queue::Pressure;
use crate::stats::{BusStats, SubscriberStats};
use crate::sync::{AtomicBool, AtomicU64, Mutex, RwLock};

mod backpressure;
mod budget;
mod builder;
mod deliver;
#[cfg(test)]
mod hand_off_tests;
mod pending;
mod persist;
mod publish;
mod publisher;
mod registry;
mod request;
mod route;
mod stamp;
mod subscribe;
mod subscription_builder;
mod waiting;

pub use backpressure::Backpressure;
pub use builder::BusBuilder;
pub use deliver::Receipt;
pub use publisher::Publisher;
pub(crate) use registry::Registry;
pub(crate) use stamp::Stamp;
pub use subscription_builder::SubscriptionBuilder;

use persist::PersistRule;
use route::Route;

/// Queue capacity of a subscription that does not set one.
pub const DEFAULT_CAPACITY: usize = 1024;

/// A typed event bus. Cheap to clone: clones share one bus.
///
/// When the last `Bus` handle is dropped (or [`close`](Bus::close) is called)
/// subscribers receive what is already queued for them, then
/// [`RecvError::Closed`](crate::RecvError::Closed).
pub struct Bus<T> {
    pub(crate) inner: Arc<BusInner<T>>,
    /// A module's handle: who it publishes and subscribes as.
    stamp: Option<Arc<Stamp>>,
}

impl<T> Clone for Bus<T> {
    fn clone(&self) -> Self {
        Bus {
            inner: self.inner.clone(),
            stamp: self.stamp.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Bus<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("subscribers", &self.inner.registry.read().subs.len())
            .field("published", &self.inner.seq.load(Ordering::Relaxed))
            .finish()
    }
}

pub(crate) struct BusInner<T> {
    pub(crate) registry: RwLock<Registry<T>>,
    epoch: AtomicU64,
    cache: RwLock<AHashMap<Box<str>, Arc<Route<T>>>>,
    seq: AtomicU64,
    node: u64,
    next_id: AtomicU64,
    closed: AtomicBool,
    unrouted: AtomicU64,
    cancelled: AtomicU64,
    default_capacity: usize,
    pressure: Arc<Pressure>,
    /// This bus's reply inboxes are this followed by a number:
    /// `_INBOX.<node>.` (see `request`).
    inbox_head: Box<str>,
    next_inbox: AtomicU64,
    pending: Mutex<pending::Pending<T>>,
    stores: RwLock<Vec<PersistRule<T>>>,
}

impl<T: Send + Sync + 'static> Default for Bus<T> {
    fn default() -> Self {
        Bus::new()
    }
}

impl<T: Send + Sync + 'static> Bus<T> {
    /// A bus with default settings.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for a bus with other settings.
    pub fn builder() -> BusBuilder {
        BusBuilder {
            capacity: DEFAULT_CAPACITY,
        }
    }

    // ----- closing, pressure, stats ------------------------------------------

    /// Closes the bus: publishing fails from now on; subscribers receive what
    /// is queued for them, then [`RecvError::Closed`](crate::RecvError::Closed).
    pub fn close(&self) {
        self.inner.close();
    }

    /// Whether the bus is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// The backpressure signal.
    pub fn backpressure(&self) -> Backpressure {
        Backpressure::new(self.inner.pressure.watch())
    }

    /// A snapshot of the bus's counters and every subscriber's.
    pub fn stats(&self) -> BusStats {
        let inner = &*self.inner;
        let reg = inner.registry.read();
        let mut subscribers: Vec<SubscriberStats> = reg
            .subs
            .values()
            .flat_map(|s| SubscriberStats::of(s))
            .collect();
        let retired = reg.retired();
        drop(reg);
        subscribers.sort_by_key(|s| s.id);
        BusStats::new(
            inner.seq.load(Ordering::Relaxed),
            inner.unrouted.load(Ordering::Relaxed),
            inner.cancelled.load(Ordering::Relaxed),
            retired,
            subscribers,
        )
    }

    /// This bus instance's random 64-bit id: the [`EventId::node`](crate::EventId::node) of the
    /// events published on it (unless they bring an id of their own). A
    /// transport uses it to recognise its own events coming back.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let (a, b) = (busline::Bus::<u8>::new(), busline::Bus::<u8>::new());
    /// assert_ne!(a.node(), b.node());
    /// let mut sub = a.subscribe("t").unwrap();
    /// a.publish_to("t", 1).await.unwrap();
    /// assert_eq!(sub.recv().await.unwrap().id.node(), a.node());
    /// # }
    /// ```
    pub fn node(&self) -> u64 {
        self.inner.node
    }

    /// Whether `other` is a handle to the same bus.
    pub fn same_bus(&self, other: &Bus<T>) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// A weak handle that does not keep the bus open.
    pub fn downgrade(&self) -> WeakBus<T> {
        WeakBus {
            inner: Arc::downgrade(&self.inner),
            stamp: self.stamp.clone(),
        }
    }
}

/// A handle that does not keep the bus open; see [`Bus::downgrade`].
#[derive(Debug)]
pub struct WeakBus<T> {
    inner: Weak<BusInner<T>>,
    stamp: Option<Arc<Stamp>>,
}

impl<T> Clone for WeakBus<T> {
    fn clone(&self) -> Self {
        WeakBus {
            inner: self.inner.clone(),
            stamp: self.stamp.clone(),
        }
    }
}

impl<T> WeakBus<T> {
    /// The bus, if it is still open: `None` once it is closed (by
    /// [`Bus::close`] or by dropping its last handle).
    pub fn upgrade(&self) -> Option<Bus<T>> {
        self.inner
            .upgrade()
            .filter(|inner| !inner.closed.load(Ordering::Acquire))
            .map(|inner| Bus {
                inner,
                stamp: self.stamp.clone(),
            })
    }
}

impl<T> BusInner<T> {
    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let subs: Vec<_> = self.registry.read().subs.values().cloned().collect();
        for s in subs {
            let w = s.state.lock().close(&s, false);
            for w in w {
                w.wake();
            }
        }
        self.pending.lock().close();
    }

    /// A change of subscribers or persist rules: cached routes are stale.
    fn routes_changed(&self) {
        self.epoch.fetch_add(1, Ordering::Release);
        self.cache.write().clear();
    }
}

impl<T> Drop for BusInner<T> {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The per-thread last-route shortcut never crosses buses, never outlives
    /// a change of subscribers, and keeps nothing alive.
    #[tokio::test]
    async fn the_last_route_shortcut_follows_buses_and_subscribers() {
        let (a, b) = (Bus::<u32>::new(), Bus::<u32>::new());
        let mut sa = a.subscribe("t").unwrap();
        let mut sb = b.subscribe("t").unwrap();
        for i in 0..10 {
            // Same thread, same topic, alternating buses.
            a.publish_to("t", i).await.unwrap();
            b.publish_to("t", 100 + i).await.unwrap();
        }
        for i in 0..10 {
            assert_eq!(sa.recv().await.unwrap().payload, i);
            assert_eq!(sb.recv().await.unwrap().payload, 100 + i);
        }
        assert!(sa.try_recv().unwrap().is_none() && sb.try_recv().unwrap().is_none());
        // A subscriber that joins is routed to at once, one that leaves is not.
        a.publish_to("t", 1).await.unwrap();
        let mut late = a.subscribe("t").unwrap();
        a.publish_to("t", 2).await.unwrap();
        assert_eq!(late.recv().await.unwrap().payload, 2);
        drop(sa);
        let r = a.publish_to("t", 3).await.unwrap();
        assert_eq!(r.subscribers, 1, "only `late`");
        // The route's subscribers are released with the bus's cache.
        let weak = Arc::downgrade(&late.shared);
        drop(late);
        drop(a);
        assert!(
            weak.upgrade().is_none(),
            "nothing keeps a gone subscriber alive"
        );
    }

    /// Replies go straight to the requester: one-off inbox topics never
    /// enter (and so never flush) the route cache.
    #[tokio::test]
    async fn replies_do_not_fill_the_route_cache() {
        let bus = Bus::<u32>::new();
        let mut svc = bus.subscribe("svc").unwrap();
        let b = bus.clone();
        let responder = tokio::spawn(async move {
            while let Ok(req) = svc.recv().await {
                b.reply(&req, req.payload + 1).await.unwrap();
            }
        });
        for i in 0..200 {
            let r = bus.request("svc", i, Duration::from_secs(5)).await.unwrap();
            assert_eq!(r.payload, i + 1);
        }
        assert_eq!(bus.inner.cached_routes(), 1, "only `svc` is cached");
        responder.abort();
    }
}
