//! The bus: publishing, routing and request/reply.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::sync::{AtomicBool, AtomicU64, Mutex, MutexGuard, RwLock};
use ahash::AHashMap;
use smallvec::SmallVec;
use tokio::sync::{oneshot, watch};

use crate::envelope::{Envelope, Event, EventId, Message};
use crate::error::{PublishError, ReplyError, RequestError, SubscribeError};
use crate::ring::Ring;
use crate::router::Trie;
use crate::stats::{BusStats, SubscriberStats};
use crate::store::{Durable, EventStore, Replay, StartAt, StoreError};
use crate::subscription::{Policy, State, SubShared, Subscription, SubscriptionBuilder};
use crate::topic::{Pattern, Topic};

/// Queue capacity of a subscription that does not set one.
pub const DEFAULT_CAPACITY: usize = 1024;

/// Routes kept in the topic cache before it is cleared.
const ROUTE_CACHE_LIMIT: usize = 4096;

/// A typed event bus. Cheap to clone: clones share one bus.
///
/// When the last `Bus` handle is dropped (or [`close`](Bus::close) is called)
/// subscribers receive what is already queued for them, then
/// [`RecvError::Closed`](crate::RecvError::Closed).
pub struct Bus<T> {
    pub(crate) inner: Arc<BusInner<T>>,
}

impl<T> Clone for Bus<T> {
    fn clone(&self) -> Self {
        Bus {
            inner: self.inner.clone(),
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
    pub(crate) pressure: Arc<Pressure>,
    inbox_prefix: String,
    next_inbox: AtomicU64,
    pending: Mutex<AHashMap<u64, oneshot::Sender<Arc<Envelope<T>>>>>,
    stores: RwLock<Vec<PersistRule<T>>>,
}

#[derive(Default)]
pub(crate) struct Registry<T> {
    trie: Trie,
    pub(crate) subs: AHashMap<u64, Arc<SubShared<T>>>,
    /// Queue groups and rings that new subscribers can join.
    shared: AHashMap<ShareKey, u64>,
    /// Counters of subscribers that are gone, so bus totals never go backwards.
    pub(crate) retired: Retired,
}

/// What makes a new subscriber join an existing queue rather than get its own.
#[derive(PartialEq, Eq, Hash)]
enum ShareKey {
    /// A queue group: (pattern, group).
    Group(Box<str>, Box<str>),
    /// A ring: unfiltered lossless or lossy subscribers with the same settings.
    Ring {
        pattern: Box<str>,
        lossy: bool,
        capacity: usize,
        high: usize,
        low: usize,
    },
}

impl ShareKey {
    fn of(
        pattern: &Pattern,
        policy: &Policy,
        filtered: bool,
        capacity: usize,
        high: usize,
        low: usize,
    ) -> Option<Self> {
        match policy {
            Policy::Queue(group) => Some(ShareKey::Group(
                pattern.as_str().into(),
                group.as_str().into(),
            )),
            Policy::Lossless | Policy::Lossy if !filtered => Some(ShareKey::Ring {
                pattern: pattern.as_str().into(),
                lossy: *policy == Policy::Lossy,
                capacity,
                high,
                low,
            }),
            _ => None,
        }
    }
}

#[derive(Default, Clone, Copy)]
pub(crate) struct Retired {
    pub(crate) delivered: u64,
    pub(crate) dropped: u64,
    pub(crate) discarded: u64,
}

pub(crate) struct Route<T> {
    epoch: u64,
    topic: Topic,
    /// Sorted by id: publishers lock them in this order.
    subs: Box<[Arc<SubShared<T>>]>,
    /// Whether any of them has a filter.
    filtered: bool,
    /// The durable store events on this topic go to first, if any.
    store: Option<Arc<dyn EventStore<T>>>,
}

/// The bus-wide backpressure signal (see the crate docs on watermarks).
pub(crate) struct Pressure {
    count: Mutex<usize>,
    tx: watch::Sender<bool>,
}

impl Pressure {
    pub(crate) fn raise(&self) {
        let mut n = self.count.lock();
        *n += 1;
        if *n == 1 {
            self.tx.send_replace(true);
        }
    }
    pub(crate) fn lower(&self) {
        let mut n = self.count.lock();
        *n -= 1;
        if *n == 0 {
            self.tx.send_replace(false);
        }
    }
}

/// Watches the bus's backpressure signal: high while any lossless subscriber's
/// queue is above its high watermark (and has not drained to its low one).
#[derive(Clone, Debug)]
pub struct Backpressure {
    rx: watch::Receiver<bool>,
}

impl Backpressure {
    /// Whether backpressure is raised now.
    pub fn is_high(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits until the signal changes, and returns the new value.
    pub async fn changed(&mut self) -> bool {
        if self.rx.changed().await.is_err() {
            return false;
        }
        *self.rx.borrow_and_update()
    }

    /// Waits until backpressure is low (returns at once if it is).
    pub async fn wait_low(&mut self) {
        let _ = self.rx.wait_for(|high| !*high).await;
    }
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The event's sequence number.
    pub seq: u64,
    /// The event's id.
    pub id: EventId,
    /// How many subscribers (a queue group counts once) it was delivered to.
    pub subscribers: usize,
}

/// Builds a [`Bus`] with non-default settings.
#[derive(Debug, Clone)]
pub struct BusBuilder {
    capacity: usize,
}

impl BusBuilder {
    /// Queue capacity for subscriptions that don't set one (default 1024).
    pub fn default_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Makes the bus.
    pub fn build<T: Send + Sync + 'static>(self) -> Bus<T> {
        crate::clock::warm_up();
        let node: u64 = rand::random();
        let (tx, _) = watch::channel(false);
        Bus {
            inner: Arc::new(BusInner {
                registry: RwLock::new(Registry {
                    trie: Trie::default(),
                    subs: AHashMap::new(),
                    shared: AHashMap::new(),
                    retired: Retired::default(),
                }),
                epoch: AtomicU64::new(0),
                cache: RwLock::new(AHashMap::new()),
                seq: AtomicU64::new(0),
                node,
                next_id: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                unrouted: AtomicU64::new(0),
                cancelled: AtomicU64::new(0),
                default_capacity: self.capacity,
                pressure: Arc::new(Pressure {
                    count: Mutex::new(0),
                    tx,
                }),
                inbox_prefix: format!("_INBOX.{node:016x}"),
                next_inbox: AtomicU64::new(0),
                pending: Mutex::new(AHashMap::new()),
                stores: RwLock::new(Vec::new()),
            }),
        }
    }
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

    // ----- subscribing -------------------------------------------------------

    /// Subscribes to `pattern` with the default policy (lossless, default capacity).
    pub fn subscribe(&self, pattern: &str) -> Result<Subscription<T>, SubscribeError> {
        self.subscriber(pattern).subscribe()
    }

    /// Starts building a subscription to `pattern` with chosen options.
    pub fn subscriber(&self, pattern: &str) -> SubscriptionBuilder<'_, T> {
        SubscriptionBuilder {
            bus: self,
            pattern: pattern.to_string(),
            policy: Policy::Lossless,
            capacity: None,
            name: None,
            filter: None,
            watermarks: None,
            start: StartAt::Now,
            consumer: None,
            store: None,
        }
    }

    pub(crate) fn subscribe_with(
        &self,
        mut b: SubscriptionBuilder<'_, T>,
    ) -> Result<Subscription<T>, SubscribeError> {
        let pattern = Pattern::new(&b.pattern)?;
        let start = std::mem::replace(&mut b.start, StartAt::Now);
        let consumer = b.consumer.take();
        let explicit = b.store.take();
        let store = match (&start, &consumer, explicit) {
            (StartAt::Now, None, _) => None,
            (_, _, s) => match self.replay_store(&pattern, s) {
                Ok(s) => Some(s),
                Err(reason) => {
                    return Err(SubscribeError::Options {
                        pattern: b.pattern.clone(),
                        reason,
                    })
                }
            },
        };
        if start == StartAt::Committed && consumer.is_none() {
            return Err(SubscribeError::Options {
                pattern: b.pattern.clone(),
                reason: "StartAt::Committed needs a consumer name (.consumer(name))".into(),
            });
        }
        let mut sub = self.register(b, pattern)?;
        let Some(store) = store else {
            return Ok(sub);
        };
        let store_err = |e: StoreError| SubscribeError::Store(e);
        // Live first, then the store's end: see the `store` module docs.
        let end = store.end();
        let from = match &start {
            StartAt::Now => None,
            StartAt::Beginning => Some(0),
            StartAt::Offset(o) => Some(*o),
            StartAt::Time(t) => Some(store.offset_for_time(*t).map_err(store_err)?),
            StartAt::Committed => Some(
                store
                    .committed_offset(consumer.as_deref().unwrap_or_default())
                    .map_err(store_err)?
                    .unwrap_or(0),
            ),
        };
        if let Some(from) = from {
            let events = store.read(from.min(end), end).map_err(store_err)?;
            sub.replay = Some(Replay { events, end });
        }
        sub.durable = Some(Durable { store, consumer });
        Ok(sub)
    }

    /// The store a subscription on `pattern` replays from: the one its
    /// topics are persisted to, which must be one store for all of them, so
    /// that the replay and the live events' offsets are of the same log.
    /// `explicit` (`.store(..)`) must be that store too, unless none of the
    /// pattern's topics is persisted (a store read for its history only).
    fn replay_store(
        &self,
        pattern: &Pattern,
        explicit: Option<Arc<dyn EventStore<T>>>,
    ) -> Result<Arc<dyn EventStore<T>>, String> {
        let stores = self.inner.stores.read();
        // Each topic goes to the first rule matching it: the first rule that
        // overlaps the pattern must take all of its topics.
        let first = stores.iter().find(|(p, _)| p.overlaps(pattern));
        let same = |a: &Arc<dyn EventStore<T>>, b: &Arc<dyn EventStore<T>>| {
            std::ptr::eq(Arc::as_ptr(a) as *const (), Arc::as_ptr(b) as *const ())
        };
        match (first, explicit) {
            (Some((p, _)), _) if !p.covers(pattern) => Err(format!(
                "its topics are not all persisted by one rule (`{p}` takes only some of them), so one log cannot replay them: subscribe to a narrower pattern"
            )),
            (Some((_, s)), None) => Ok(s.clone()),
            (Some((p, s)), Some(x)) if same(s, &x) => {
                let _ = p;
                Ok(x)
            }
            (Some((p, _)), Some(_)) => Err(format!(
                "its topics are persisted (by `{p}`) to another store than the one given with .store(..)"
            )),
            (None, Some(x)) => Ok(x),
            (None, None) if stores.is_empty() => Err(
                "starting in the past or as a named consumer needs a durable store, and the bus persists no topic".into(),
            ),
            (None, None) => Err(
                "starting in the past or as a named consumer needs a durable store, and none of its topics is persisted (name one with .store(..))".into(),
            ),
        }
    }

    fn register(
        &self,
        b: SubscriptionBuilder<'_, T>,
        pattern: Pattern,
    ) -> Result<Subscription<T>, SubscribeError> {
        let inner = &self.inner;
        let capacity = b.capacity.unwrap_or(inner.default_capacity);
        let bad = |reason: String| {
            Err(SubscribeError::Options {
                pattern: b.pattern.clone(),
                reason,
            })
        };
        if capacity == 0 {
            return bad("capacity must be at least 1".into());
        }
        let (high, low) = b
            .watermarks
            .unwrap_or(((capacity * 3 / 4).max(1), capacity / 4));
        if low >= high || high > capacity {
            return bad(format!(
                "watermarks need low < high <= capacity; got low {low}, high {high}, capacity {capacity}"
            ));
        }
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let name: Arc<str> = match (&b.name, &b.policy) {
            (Some(n), _) => n.as_str().into(),
            (None, Policy::Queue(g)) => g.as_str().into(),
            (None, _) => format!("sub-{id}").into(),
        };
        let handle = |shared: Arc<SubShared<T>>, name: Arc<str>, reader| Subscription {
            shared,
            bus: Arc::downgrade(inner),
            local: VecDeque::new(),
            reader,
            member: id,
            name,
            yielded: 0,
            replay: None,
            durable: None,
            skip_below: None,
            discard_counter: None,
        };
        let mut reg = inner.registry.write();
        if inner.closed.load(Ordering::Acquire) {
            return Err(SubscribeError::Closed);
        }
        // Joining an existing queue group, or a ring with the same settings.
        let key = ShareKey::of(&pattern, &b.policy, b.filter.is_some(), capacity, high, low);
        if let Some(key) = &key {
            if let Some(shared) = reg
                .shared
                .get(key)
                .and_then(|tid| reg.subs.get(tid))
                .cloned()
            {
                let mut st = shared.state.lock();
                if !st.closed {
                    if shared.is_group() {
                        // One queue for the group: its first member's settings.
                        let group = shared.policy.to_string();
                        if b.filter.is_some() {
                            drop(st);
                            return bad(format!(
                                "{group} shares one queue: a member joining it cannot have a filter of its own (the group's first member sets it)"
                            ));
                        }
                        let given = b.capacity.is_some() || b.watermarks.is_some();
                        if given
                            && (shared.capacity, shared.high, shared.low) != (capacity, high, low)
                        {
                            drop(st);
                            return bad(format!(
                                "{group} already has capacity {} and watermarks {}/{}; a member joining it cannot change them",
                                shared.capacity, shared.high, shared.low
                            ));
                        }
                        st.members += 1;
                        drop(st);
                        drop(reg);
                        return Ok(handle(shared, name, None));
                    }
                    let reader = st.join(&shared, id, name.clone());
                    drop(st);
                    drop(reg);
                    return Ok(handle(shared, name, Some(reader)));
                }
            }
        }
        let shared = Arc::new(SubShared {
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
            filter: b.filter,
            pressure: inner.pressure.clone(),
            state: Mutex::new(State::new()),
            ring: matches!(b.policy, Policy::Lossless | Policy::Lossy)
                .then(|| Ring::new(capacity, b.policy == Policy::Lossless)),
            filtered: AtomicU64::new(0),
            blocked_ns: AtomicU64::new(0),
        });
        let reader = shared
            .ring
            .is_some()
            .then(|| shared.state.lock().join(&shared, id, name.clone()));
        if let Some(key) = key {
            reg.shared.insert(key, id);
        }
        reg.trie.insert(&pattern, id);
        reg.subs.insert(id, shared.clone());
        inner.epoch.fetch_add(1, Ordering::Release);
        inner.cache.write().clear();
        drop(reg);
        Ok(handle(shared, name, reader))
    }

    // ----- publishing --------------------------------------------------------

    /// Publishes `event` on its own topic ([`Event::topic`]).
    ///
    /// Waits while a lossless subscriber matching the topic is full
    /// (backpressure). Cancel safe: if the future is dropped before it
    /// completes, no subscriber has received the event.
    pub async fn publish(&self, event: T) -> Result<Receipt, PublishError<T>>
    where
        T: Event,
    {
        let route = self.route_checked(&event.topic());
        let prepared = self.wrap(route, Message::new(event))?;
        self.dispatch(prepared).await
    }

    /// Publishes `event` on `topic`. See [`publish`](Self::publish).
    pub async fn publish_to(&self, topic: &str, event: T) -> Result<Receipt, PublishError<T>> {
        let prepared = self.wrap(self.route_checked(topic), Message::new(event))?;
        self.dispatch(prepared).await
    }

    /// Publishes a [`Message`] (an event with metadata). The message must name
    /// its topic ([`Message::topic`], or [`Message::for_event`] for an [`Event`]);
    /// one without is refused as an invalid (empty) topic.
    pub async fn send(&self, mut msg: Message<T>) -> Result<Receipt, PublishError<T>> {
        let topic = msg.topic.take().unwrap_or_default();
        let prepared = self.wrap(self.route_checked(&topic), msg)?;
        self.dispatch(prepared).await
    }

    /// Delivers a wrapped event, through the store first if its topic is persisted.
    async fn dispatch(&self, (route, env): Prepared<T>) -> Result<Receipt, PublishError<T>> {
        if route.store.is_none() {
            return self.deliver(route, env).await;
        }
        self.persist_and_deliver(route, env).await
    }

    /// Appends to the route's store first (if the topic is persisted), then delivers.
    async fn persist_and_deliver(
        &self,
        route: Arc<Route<T>>,
        mut env: Arc<Envelope<T>>,
    ) -> Result<Receipt, PublishError<T>> {
        let Some(store) = route.store.clone() else {
            return self.deliver(route, env).await;
        };
        match store.append(&env).await {
            Ok(offset) => {
                Arc::get_mut(&mut env)
                    .expect("an undelivered envelope has a single owner")
                    .offset = Some(offset)
            }
            Err(error) => {
                return Err(PublishError::Store {
                    error,
                    event: unwrap_env(env),
                })
            }
        }
        // Route again now that the event is durable: a subscriber that
        // registered meanwhile (say, one switching from replay to live) must
        // get it live, since it read the store's end before this offset.
        let route = match self.route(route.topic.as_str()) {
            Ok(r) => r,
            Err(_) => route,
        };
        self.deliver(route, env).await
    }

    /// Persists events on topics matching `pattern` to `store` before they are
    /// delivered (see [`store`](crate::store)). The first matching pattern wins.
    pub fn persist(
        &self,
        pattern: &str,
        store: Arc<dyn EventStore<T>>,
    ) -> Result<(), crate::TopicError> {
        let pattern = Pattern::new(pattern)?;
        let inner = &*self.inner;
        let _reg = inner.registry.write();
        inner.stores.write().push((pattern, store));
        inner.epoch.fetch_add(1, Ordering::Release);
        inner.cache.write().clear();
        Ok(())
    }

    /// The persist rules, in the order they were added (the first matching
    /// one wins): each pattern with its store.
    pub fn persisted(&self) -> Vec<(Pattern, Arc<dyn EventStore<T>>)> {
        self.inner.stores.read().clone()
    }

    /// The store persisting `topic`, if any.
    pub fn store_for(&self, topic: &str) -> Option<Arc<dyn EventStore<T>>> {
        let topic = Topic::new(topic).ok()?;
        self.inner
            .stores
            .read()
            .iter()
            .find(|(p, _)| p.matches(&topic))
            .map(|(_, s)| s.clone())
    }

    /// Publishes without waiting: if a lossless subscriber has no room, no
    /// subscriber gets the event and it comes back in [`PublishError::Full`],
    /// naming that subscriber.
    pub fn try_publish(&self, event: T) -> Result<Receipt, PublishError<T>>
    where
        T: Event,
    {
        let route = self.route_checked(&event.topic());
        let prepared = self.wrap(route, Message::new(event))?;
        self.try_deliver(prepared)
    }

    /// Delivers `event` to every matching subscriber that has room now and
    /// skips the full ones (lossless subscribers and queue groups), without
    /// waiting: unlike [`try_publish`](Self::try_publish), one full
    /// subscriber does not keep the event from the others. Returns how many
    /// were skipped. For the runtime's system events (a persisted topic is
    /// delivered, not stored).
    pub(crate) fn offer(&self, event: T) -> usize
    where
        T: Event,
    {
        let route = self.route_checked(&event.topic());
        let Ok((route, env)) = self.wrap(route, Message::new(event)) else {
            return 0;
        };
        let targets = targets(&route, &env);
        count_filtered(&route, &targets);
        let (mut delivered, mut skipped) = (0, 0);
        for i in 0..targets.len() {
            let sub = targets.get(i);
            let mut st = sub.state.lock();
            if st.closed {
                continue;
            }
            if !st.has_room(sub) {
                skipped += 1;
                continue;
            }
            delivered += 1;
            let mut wake: SmallVec<[Waker; 8]> = SmallVec::new();
            st.push(sub, env.clone(), &mut wake);
            drop(st);
            wake.into_iter().for_each(Waker::wake);
        }
        if delivered == 0 && skipped == 0 {
            self.inner.unrouted.fetch_add(1, Ordering::Relaxed);
        }
        skipped
    }

    /// [`try_publish`](Self::try_publish) on a given topic.
    pub fn try_publish_to(&self, topic: &str, event: T) -> Result<Receipt, PublishError<T>> {
        let prepared = self.wrap(self.route_checked(topic), Message::new(event))?;
        self.try_deliver(prepared)
    }

    /// [`try_publish`](Self::try_publish) for a [`Message`].
    pub fn try_send(&self, mut msg: Message<T>) -> Result<Receipt, PublishError<T>> {
        let topic = msg.topic.take().unwrap_or_default();
        let prepared = self.wrap(self.route_checked(&topic), msg)?;
        self.try_deliver(prepared)
    }

    fn try_deliver(&self, (route, env): Prepared<T>) -> Result<Receipt, PublishError<T>> {
        if route.store.is_some() {
            return Err(PublishError::Store {
                error: StoreError::new(
                    format!("try_publish on persisted topic `{}`", route.topic),
                    "it cannot wait for the store to acknowledge; use publish",
                ),
                event: unwrap_env(env),
            });
        }
        let targets = targets(&route, &env);
        let (seq, id) = (env.seq, env.id);
        let mut env = Some(env);
        match commit(&targets, &mut env, None) {
            // Every target closed under it because the bus closed: the event comes back.
            Ok(0) if env.is_some() && self.inner.closed.load(Ordering::Acquire) => {
                drop(targets);
                let env = env.expect("an undelivered event is handed back");
                Err(PublishError::Closed {
                    event: unwrap_env(env),
                })
            }
            Ok(n) => {
                count_filtered(&route, &targets);
                if n == 0 {
                    self.inner.unrouted.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Receipt {
                    seq,
                    id,
                    subscribers: n,
                })
            }
            Err(full) => {
                let subscriber = (0..targets.len())
                    .map(|i| targets.get(i))
                    .find(|s| s.id == full.sub)
                    .map(|s| member_name(s, full.member));
                drop(targets);
                self.inner.cancelled.fetch_add(1, Ordering::Relaxed);
                let env = env.expect("an undelivered event is handed back");
                let topic = env.topic.to_string();
                let event = unwrap_env(env);
                Err(PublishError::Full {
                    subscriber: subscriber.unwrap_or_else(|| "?".into()),
                    topic,
                    event,
                })
            }
        }
    }

    /// The route for `topic`, unless the bus is closed or the topic is malformed.
    fn route_checked(&self, topic: &str) -> Result<Arc<Route<T>>, RouteError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(RouteError::Closed);
        }
        self.route(topic).map_err(RouteError::Topic)
    }

    /// Wraps the message in its envelope, or hands it back with why it can't be routed.
    fn wrap(
        &self,
        route: Result<Arc<Route<T>>, RouteError>,
        msg: Message<T>,
    ) -> Result<Prepared<T>, PublishError<T>> {
        let route = match route {
            Ok(r) => r,
            Err(RouteError::Closed) => return Err(PublishError::Closed { event: msg.payload }),
            Err(RouteError::Topic(error)) => {
                return Err(PublishError::InvalidTopic {
                    error,
                    event: msg.payload,
                })
            }
        };
        let env = self.envelope(route.topic.clone(), msg);
        Ok((route, env))
    }

    /// Stamps `msg` with a sequence number, id and time: the one place
    /// envelopes are made (straight into their `Arc`, not moved there).
    fn envelope(&self, topic: Topic, msg: Message<T>) -> Arc<Envelope<T>> {
        let inner = &*self.inner;
        let seq = inner.seq.fetch_add(1, Ordering::Relaxed);
        let id = msg.id.unwrap_or(EventId::from_parts(inner.node, seq));
        Arc::new(Envelope::from_parts(
            seq,
            id,
            topic,
            msg.timestamp.unwrap_or_else(crate::clock::now),
            msg.source,
            msg.correlation_id.unwrap_or(id),
            msg.causation_id,
            msg.reply_to,
            msg.headers,
            msg.payload,
        ))
    }

    /// The subscribers matching `topic`, from the cache when it is current.
    fn route(&self, topic: &str) -> Result<Arc<Route<T>>, crate::TopicError> {
        let inner = &*self.inner;
        let epoch = inner.epoch.load(Ordering::Acquire);
        if let Some(r) = LAST_ROUTE.with(|c| {
            let c = c.borrow();
            let e = c.as_ref()?;
            if e.bus == inner.node && e.epoch == epoch && &*e.topic == topic {
                e.route.upgrade()?.downcast::<Route<T>>().ok()
            } else {
                None
            }
        }) {
            return Ok(r);
        }
        if let Some(r) = inner.cache.read().get(topic) {
            if r.epoch == epoch {
                let r = r.clone();
                LAST_ROUTE.with(|c| {
                    *c.borrow_mut() = Some(LastRoute {
                        bus: inner.node,
                        epoch,
                        topic: topic.into(),
                        route: Arc::downgrade(&r) as Weak<dyn std::any::Any + Send + Sync>,
                    })
                });
                return Ok(r);
            }
        }
        let topic = Topic::new(topic)?;
        let reg = inner.registry.read();
        let epoch = inner.epoch.load(Ordering::Acquire);
        let mut ids = Vec::new();
        reg.trie.matches(topic.as_str(), &mut ids);
        ids.sort_unstable();
        ids.dedup();
        let subs: Box<[_]> = ids.iter().map(|id| reg.subs[id].clone()).collect();
        drop(reg);
        let store = inner
            .stores
            .read()
            .iter()
            .find(|(p, _)| p.matches(&topic))
            .map(|(_, s)| s.clone());
        let route = Arc::new(Route {
            epoch,
            topic: topic.clone(),
            filtered: subs.iter().any(|s| s.filter.is_some()),
            store,
            subs,
        });
        let mut cache = inner.cache.write();
        if cache.len() >= ROUTE_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(topic.as_str().into(), route.clone());
        Ok(route)
    }

    async fn deliver(
        &self,
        route: Arc<Route<T>>,
        env: Arc<Envelope<T>>,
    ) -> Result<Receipt, PublishError<T>> {
        // Take part in tokio's cooperative scheduling: a publisher loop that
        // never has to wait still yields every so often, so subscribers on the
        // same worker get to run instead of lagging for no reason.
        tokio::task::consume_budget().await;
        let targets = targets(&route, &env);
        let (seq, id) = (env.seq, env.id);
        let mut env = Some(env);
        let mut waiting: Option<(Full, Instant)> = None;
        let mut done = false;
        let guard = CancelGuard {
            inner: &self.inner,
            done: &mut done,
        };
        let result = poll_fn(|cx| {
            if self.inner.closed.load(Ordering::Acquire) {
                return Poll::Ready(Err(()));
            }
            match commit(&targets, &mut env, Some(cx.waker())) {
                Ok(n) => Poll::Ready(Ok(n)),
                Err(full) => {
                    // Waiting on `full`; account the time to it.
                    match waiting {
                        Some((id, since)) if id != full => {
                            add_blocked(&targets, id, since.elapsed());
                            waiting = Some((full, Instant::now()));
                        }
                        Some(_) => {}
                        None => waiting = Some((full, Instant::now())),
                    }
                    Poll::Pending
                }
            }
        })
        .await;
        *guard.done = true;
        drop(guard);
        if let Some((id, since)) = waiting {
            add_blocked(&targets, id, since.elapsed());
        }
        if result.is_ok() {
            count_filtered(&route, &targets);
        }
        drop(targets);
        // Every target closed under it: if that was the bus closing (it
        // checked before this publish locked them), the event comes back.
        let closed = self.inner.closed.load(Ordering::Acquire);
        match (result, env) {
            (Ok(0), Some(env)) if closed => {
                // (Like the refusal above when it sees the bus closed.)
                Err(PublishError::Closed {
                    event: unwrap_env(env),
                })
            }
            (Ok(n), _) => {
                if n == 0 {
                    self.inner.unrouted.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Receipt {
                    seq,
                    id,
                    subscribers: n,
                })
            }
            (Err(()), Some(env)) => Err(PublishError::Closed {
                event: unwrap_env(env),
            }),
            (Err(()), None) => unreachable!("an event is delivered or handed back"),
        }
    }

    // ----- request/reply -----------------------------------------------------

    /// Sends `event` on `topic` as a request and waits up to `timeout` for one
    /// reply. Fails at once with [`RequestError::NoResponders`] when nothing
    /// subscribes to `topic`.
    pub async fn request(
        &self,
        topic: &str,
        event: T,
        timeout: Duration,
    ) -> Result<Arc<Envelope<T>>, RequestError> {
        self.request_msg(Message::new(event).topic(topic), timeout)
            .await
    }

    /// [`request`](Self::request) with a [`Message`] (for metadata).
    pub async fn request_msg(
        &self,
        mut msg: Message<T>,
        timeout: Duration,
    ) -> Result<Arc<Envelope<T>>, RequestError> {
        let topic = msg.topic.take().unwrap_or_default();
        let inner = &*self.inner;
        let n = inner.next_inbox.fetch_add(1, Ordering::Relaxed);
        let reply_to = Topic::new(&format!("{}.{n}", inner.inbox_prefix)).expect("valid inbox");
        let (tx, rx) = oneshot::channel();
        inner.pending.lock().insert(n, tx);
        let _cleanup = PendingGuard { inner, n };
        let work = async {
            let (route, env) = match self.wrap(self.route_checked(&topic), msg.reply_to(reply_to)) {
                Ok(x) => x,
                Err(PublishError::InvalidTopic { error, .. }) => {
                    return Err(RequestError::Topic(error))
                }
                Err(_) => {
                    return Err(RequestError::Closed {
                        topic: topic.clone(),
                    })
                }
            };
            match self.dispatch((route, env)).await {
                Ok(r) if r.subscribers == 0 => {
                    return Err(RequestError::NoResponders {
                        topic: topic.clone(),
                    })
                }
                Ok(_) => {}
                Err(PublishError::Store { error, .. }) => {
                    return Err(RequestError::Store {
                        topic: topic.clone(),
                        reason: error.to_string(),
                    })
                }
                Err(_) => {
                    return Err(RequestError::Closed {
                        topic: topic.clone(),
                    })
                }
            }
            rx.await.map_err(|_| RequestError::Closed {
                topic: topic.clone(),
            })
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(RequestError::Timeout {
                topic: topic.clone(),
                timeout,
            }),
        }
    }

    /// Answers `request` with `event`: it goes to the requester waiting on
    /// the request's reply-to topic, with the request's id as causation id
    /// and its correlation id.
    pub async fn reply(&self, request: &Envelope<T>, event: T) -> Result<(), ReplyError> {
        self.reply_msg(request, Message::new(event)).await
    }

    /// [`reply`](Self::reply) with a [`Message`] (for metadata such as the source).
    pub async fn reply_msg(
        &self,
        request: &Envelope<T>,
        msg: Message<T>,
    ) -> Result<(), ReplyError> {
        let Some(reply_to) = request.reply_to.clone() else {
            return Err(ReplyError::NotARequest {
                id: request.id.to_string(),
                topic: request.topic.to_string(),
            });
        };
        let msg = msg.topic(reply_to.as_str()).caused_by(request);
        let inner = &*self.inner;
        let local = reply_to
            .as_str()
            .strip_prefix(inner.inbox_prefix.as_str())
            .and_then(|s| s.strip_prefix('.'))
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(n) = local {
            let Some(tx) = inner.pending.lock().remove(&n) else {
                return Err(ReplyError::RequesterGone {
                    reply_to: reply_to.to_string(),
                });
            };
            let mut msg = msg;
            msg.topic = None;
            // Straight to the waiting requester: no routing, and no one-off
            // inbox topic in the route cache.
            let env = self.envelope(reply_to.clone(), msg);
            return tx.send(env).map_err(|_| ReplyError::RequesterGone {
                reply_to: reply_to.to_string(),
            });
        }
        // Not ours: a transport may carry it to a requester elsewhere.
        match self.send(msg).await {
            Ok(r) if r.subscribers > 0 => Ok(()),
            _ => Err(ReplyError::RequesterGone {
                reply_to: reply_to.to_string(),
            }),
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
        Backpressure {
            rx: self.inner.pressure.tx.subscribe(),
        }
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
        let retired = reg.retired;
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

    /// This bus instance's random 64-bit id: the [`EventId::node`] of the
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
        }
    }
}

/// A handle that does not keep the bus open; see [`Bus::downgrade`].
pub struct WeakBus<T> {
    inner: Weak<BusInner<T>>,
}

impl<T> Clone for WeakBus<T> {
    fn clone(&self) -> Self {
        WeakBus {
            inner: self.inner.clone(),
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
            .map(|inner| Bus { inner })
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
        self.pending.lock().clear();
    }

    /// Removes a subscriber (or an emptied queue group) from the index.
    pub(crate) fn unregister(&self, reg: &mut Registry<T>, sub: &Arc<SubShared<T>>) {
        if reg.subs.remove(&sub.id).is_none() {
            return;
        }
        reg.trie.remove(&sub.pattern, sub.id);
        let key = ShareKey::of(
            &sub.pattern,
            &sub.policy,
            sub.filter.is_some(),
            sub.capacity,
            sub.high,
            sub.low,
        );
        if let Some(key) = key {
            if reg.shared.get(&key) == Some(&sub.id) {
                reg.shared.remove(&key);
            }
        }
        for s in SubscriberStats::of(sub) {
            reg.retired.delivered += s.delivered;
            reg.retired.dropped += s.dropped;
            reg.retired.discarded += s.discarded;
        }
        self.epoch.fetch_add(1, Ordering::Release);
        self.cache.write().clear();
    }
}

impl<T> Drop for BusInner<T> {
    fn drop(&mut self) {
        self.close();
    }
}

struct PendingGuard<'a, T> {
    inner: &'a BusInner<T>,
    n: u64,
}

impl<T> Drop for PendingGuard<'_, T> {
    fn drop(&mut self) {
        self.inner.pending.lock().remove(&self.n);
    }
}

/// Counts a publish whose future was dropped while it waited for room.
struct CancelGuard<'a, T> {
    inner: &'a BusInner<T>,
    done: &'a mut bool,
}

impl<T> Drop for CancelGuard<'_, T> {
    fn drop(&mut self) {
        if !*self.done {
            self.inner.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn unwrap_env<T>(env: Arc<Envelope<T>>) -> T {
    match Arc::try_unwrap(env) {
        Ok(e) => e.payload,
        Err(_) => unreachable!("an undelivered envelope has a single owner"),
    }
}

/// The route this thread published on last (a publisher usually repeats
/// its topic): found without the cache's lock and hash. Valid while the
/// bus (by its random node id) and its routing epoch are the same. Weak:
/// it keeps no subscriber or store alive once the bus's cache lets go.
struct LastRoute {
    bus: u64,
    epoch: u64,
    topic: Box<str>,
    route: Weak<dyn std::any::Any + Send + Sync>,
}

thread_local! {
    static LAST_ROUTE: std::cell::RefCell<Option<LastRoute>> = const { std::cell::RefCell::new(None) };
}

/// Why an event could not be routed.
enum RouteError {
    Closed,
    Topic(crate::TopicError),
}

/// Topics matching the pattern are persisted to the store.
type PersistRule<T> = (Pattern, Arc<dyn EventStore<T>>);

/// An event wrapped in its envelope, with the subscribers it goes to.
type Prepared<T> = (Arc<Route<T>>, Arc<Envelope<T>>);

/// The subscribers an event goes to: the whole route, or those whose filter took it.
enum Targets<'a, T> {
    All(&'a [Arc<SubShared<T>>]),
    Filtered(SmallVec<[&'a Arc<SubShared<T>>; 8]>),
}

impl<T> Targets<'_, T> {
    fn len(&self) -> usize {
        match self {
            Targets::All(s) => s.len(),
            Targets::Filtered(v) => v.len(),
        }
    }

    fn get(&self, i: usize) -> &Arc<SubShared<T>> {
        match self {
            Targets::All(s) => &s[i],
            Targets::Filtered(v) => v[i],
        }
    }
}

/// Counts the event as `filtered` for the route's subscribers whose filter
/// refused it: once it is delivered (a publish that fails or is retried
/// counts nothing).
fn count_filtered<T>(route: &Route<T>, targets: &Targets<'_, T>) {
    if let Targets::Filtered(taken) = targets {
        let mut k = 0;
        for s in route.subs.iter() {
            if taken.get(k).is_some_and(|t| Arc::ptr_eq(t, s)) {
                k += 1;
            } else {
                s.filtered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn targets<'a, T>(route: &'a Route<T>, env: &Envelope<T>) -> Targets<'a, T> {
    if route.filtered {
        Targets::Filtered(route.subs.iter().filter(|s| s.accepts(env)).collect())
    } else {
        Targets::All(&route.subs)
    }
}

/// The subscriber a publish found full, and in a ring the member it waits
/// on (the slowest one, as the room check just found it; otherwise the
/// subscriber's id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Full {
    sub: u64,
    member: u64,
}

impl Full {
    fn at<T>(sub: &SubShared<T>, st: &State<T>) -> Full {
        Full {
            sub: sub.id,
            member: if sub.ring.is_some() {
                st.slowest_id
            } else {
                sub.id
            },
        }
    }
}

/// The name of the subscriber a publisher found full in `sub`: for a
/// ring, of member `member` (the subscriber's own name if it left).
fn member_name<T>(sub: &SubShared<T>, member: u64) -> Arc<str> {
    let st = sub.state.lock();
    st.readers
        .iter()
        .find(|m| m.id == member)
        .map_or_else(|| sub.name.clone(), |m| m.name.clone())
}

/// Charges `d` of waiting to the subscriber (for a ring, the member) the
/// publisher found full; nothing if that member has left since.
fn add_blocked<T>(targets: &Targets<'_, T>, full: Full, d: Duration) {
    let Some(s) = (0..targets.len())
        .map(|i| targets.get(i))
        .find(|s| s.id == full.sub)
    else {
        return;
    };
    let ns = d.as_nanos().min(u64::MAX as u128) as u64;
    if s.ring.is_none() {
        s.blocked_ns.fetch_add(ns, Ordering::Relaxed);
        return;
    }
    let mut st = s.state.lock();
    if let Some(m) = st.readers.iter_mut().find(|m| m.id == full.member) {
        m.blocked_ns += ns;
    }
}

/// Locks a queue for a publish: other holders (another publisher, a reader
/// parking or settling) hold it briefly, so spin on it a while before
/// parking_lot's slow path (which soon yields the thread to the kernel).
fn lock_spinning<S>(m: &Mutex<S>) -> MutexGuard<'_, S> {
    // (Not under loom: spinning only adds interleavings for it to explore,
    // none it cannot reach with a plain lock.)
    #[cfg(not(busline_loom))]
    for _ in 0..SPINS {
        if let Some(g) = m.try_lock() {
            return g;
        }
        std::hint::spin_loop();
    }
    m.lock()
}

#[cfg(not(busline_loom))]
const SPINS: usize = 64;

/// Delivers `env` to every target or to none: locks all targets (in id order),
/// and if a lossless one is full, registers `waker` there and gives up
/// (`Err` naming the full target, `env` left in place). Otherwise takes `env`
/// (it comes back only if every target had closed) and returns how many
/// subscribers received it.
fn commit<T>(
    targets: &Targets<'_, T>,
    env: &mut Option<Arc<Envelope<T>>>,
    waker: Option<&Waker>,
) -> Result<usize, Full> {
    let n = targets.len();
    if n == 1 {
        // The common case, without the guard list.
        let sub = targets.get(0);
        let mut st = lock_spinning(&sub.state);
        if st.closed {
            return Ok(0);
        }
        if !st.has_room(sub) && !st.wait_for_room(sub, waker) {
            return Err(Full::at(sub, &st));
        }
        let delivered = match sub.policy {
            Policy::Lossless | Policy::Lossy => st.readers.len(),
            _ => 1,
        };
        let mut wake: SmallVec<[Waker; 8]> = SmallVec::new();
        st.push(sub, env.take().expect("delivered once"), &mut wake);
        drop(st);
        for w in wake {
            w.wake();
        }
        return Ok(delivered);
    }
    let mut guards: SmallVec<[MutexGuard<'_, State<T>>; 8]> = SmallVec::with_capacity(n);
    for i in 0..n {
        let sub = targets.get(i);
        let mut st = lock_spinning(&sub.state);
        if !st.closed && !st.has_room(sub) && !st.wait_for_room(sub, waker) {
            return Err(Full::at(sub, &st));
        }
        guards.push(st);
    }
    let Some(last) = guards.iter().rposition(|st| !st.closed) else {
        return Ok(0);
    };
    let mut wake: SmallVec<[Waker; 8]> = SmallVec::new();
    let mut delivered = 0;
    for (i, st) in guards.iter_mut().enumerate().take(last + 1) {
        if st.closed {
            continue;
        }
        let sub = targets.get(i);
        delivered += match sub.policy {
            Policy::Lossless | Policy::Lossy => st.readers.len(),
            _ => 1,
        };
        // The last target gets the publisher's reference: one clone fewer.
        let e = if i == last {
            env.take().expect("delivered once")
        } else {
            env.clone().expect("delivered once")
        };
        st.push(sub, e, &mut wake);
    }
    drop(guards);
    for w in wake {
        w.wake();
    }
    Ok(delivered)
}

#[cfg(test)]
mod tests {
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
        assert_eq!(bus.inner.cache.read().len(), 1, "only `svc` is cached");
        responder.abort();
    }
}
