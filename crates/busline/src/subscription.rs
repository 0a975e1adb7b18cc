//! Subscriptions: what a subscriber holds, and the delivery policy it chose.
//!
//! Every subscriber has its own queue (or, for a queue group, the group has
//! one) and its own policy; one bus serves any mix of them. See the crate docs
//! for the semantics of each policy.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};

use ahash::AHashMap;
use parking_lot::Mutex;
use smallvec::SmallVec;

use crate::bus::{BusInner, Pressure};
use crate::envelope::Envelope;
use crate::error::{RecvError, SubscribeError};
use crate::topic::{Pattern, Topic};

/// A predicate run by the publisher on each matching event; `false` skips this
/// subscriber (counted as `filtered`).
pub type Filter<T> = Arc<dyn Fn(&Envelope<T>) -> bool + Send + Sync>;

/// A subscriber's delivery policy.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Policy {
    /// Bounded queue; publishers wait for room (backpressure). Never drops.
    Lossless,
    /// Bounded queue; when full the oldest event is dropped and the subscriber
    /// is told [`RecvError::Lagged`] with the exact count. Publishers never wait.
    Lossy,
    /// Only the newest event per topic is kept (watch semantics).
    Latest,
    /// Competing consumers: each event goes to exactly one member of the named
    /// group. The group's queue is lossless (publishers wait for room).
    Queue(String),
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Lossless => f.write_str("lossless"),
            Policy::Lossy => f.write_str("lossy"),
            Policy::Latest => f.write_str("latest"),
            Policy::Queue(g) => write!(f, "queue({g})"),
        }
    }
}

/// Polls that find nothing and yield before the subscriber parks (see
/// `poll_live`). One measured best on 2 cores (`busline bench fanout` with
/// `perf stat -e context-switches`): 0 doubles the context switches, more
/// than a few burn CPU while idle.
const SPIN_POLLS: u8 = 1;

pub(crate) struct SubShared<T> {
    pub(crate) id: u64,
    pub(crate) name: Arc<str>,
    pub(crate) pattern: Pattern,
    pub(crate) policy: Policy,
    pub(crate) capacity: usize,
    pub(crate) high: usize,
    pub(crate) low: usize,
    pub(crate) filter: Option<Filter<T>>,
    pub(crate) pressure: Arc<Pressure>,
    pub(crate) state: Mutex<State<T>>,
    pub(crate) filtered: AtomicU64,
    pub(crate) blocked_ns: AtomicU64,
}

pub(crate) struct State<T> {
    pub(crate) queue: VecDeque<Arc<Envelope<T>>>,
    /// `Latest` only: newest event per topic, and the order topics became pending.
    pub(crate) latest: AHashMap<Topic, Arc<Envelope<T>>>,
    pub(crate) latest_order: VecDeque<Topic>,
    /// Receivers waiting for an event, by member id.
    pub(crate) rx_wakers: SmallVec<[(u64, Waker); 1]>,
    /// Publishers waiting for room.
    pub(crate) tx_wakers: SmallVec<[Waker; 2]>,
    pub(crate) closed: bool,
    /// Dropped since the subscriber's last receive; reported as `Lagged`.
    pub(crate) lagged: u64,
    pub(crate) delivered: u64,
    /// Taken out of the queue by the subscriber (it may hold a batch not yet handed out).
    pub(crate) received: u64,
    pub(crate) dropped: u64,
    pub(crate) superseded: u64,
    pub(crate) discarded: u64,
    pub(crate) pressured: bool,
    /// Events the subscriber took in its last batch and has not been handed
    /// yet (as of its last visit to the queue); they still count against
    /// a lossless capacity and its watermarks.
    pub(crate) in_hand: usize,
    pub(crate) peak: usize,
    /// Queue groups: members currently joined.
    pub(crate) members: usize,
}

impl<T> State<T> {
    pub(crate) fn len(&self) -> usize {
        self.queue.len() + self.latest_order.len()
    }

    /// Puts `env` in the queue following `sub`'s policy (room was checked for
    /// lossless queues). Returns a receiver to wake, if one waits.
    pub(crate) fn push(&mut self, sub: &SubShared<T>, env: &Arc<Envelope<T>>) -> Option<Waker> {
        self.delivered += 1;
        match sub.policy {
            Policy::Latest => {
                if let Some(old) = self.latest.get_mut(&env.topic) {
                    *old = env.clone();
                    self.superseded += 1;
                } else {
                    self.latest.insert(env.topic.clone(), env.clone());
                    self.latest_order.push_back(env.topic.clone());
                }
            }
            Policy::Lossy => {
                if self.queue.len() >= sub.capacity {
                    self.queue.pop_front();
                    self.lagged += 1;
                    self.dropped += 1;
                }
                self.queue.push_back(env.clone());
            }
            Policy::Lossless | Policy::Queue(_) => {
                self.queue.push_back(env.clone());
                if !self.pressured && self.depth() >= sub.high {
                    self.pressured = true;
                    sub.pressure.raise();
                }
            }
        }
        let len = self.depth();
        if len > self.peak {
            self.peak = len;
        }
        if self.rx_wakers.is_empty() {
            None
        } else {
            Some(self.rx_wakers.remove(0).1)
        }
    }

    /// Events waiting for the subscriber, counting the batch it holds.
    pub(crate) fn depth(&self) -> usize {
        self.len() + self.in_hand
    }

    pub(crate) fn has_room(&self, sub: &SubShared<T>) -> bool {
        match sub.policy {
            Policy::Lossless | Policy::Queue(_) => self.depth() < sub.capacity,
            Policy::Lossy | Policy::Latest => true,
        }
    }

    /// Marks closed and discards what is queued; returns wakers to wake.
    pub(crate) fn close(&mut self, sub: &SubShared<T>, discard: bool) -> SmallVec<[Waker; 4]> {
        self.closed = true;
        if discard {
            self.discarded += self.len() as u64;
            self.queue.clear();
            self.latest.clear();
            self.latest_order.clear();
        }
        if self.pressured {
            self.pressured = false;
            sub.pressure.lower();
        }
        let mut w: SmallVec<[Waker; 4]> = self.tx_wakers.drain(..).collect();
        w.extend(self.rx_wakers.drain(..).map(|(_, w)| w));
        w
    }
}

impl<T> SubShared<T> {
    pub(crate) fn accepts(&self, env: &Envelope<T>) -> bool {
        match &self.filter {
            None => true,
            Some(f) => {
                let ok = f(env);
                if !ok {
                    self.filtered.fetch_add(1, Ordering::Relaxed);
                }
                ok
            }
        }
    }

    pub(crate) fn is_group(&self) -> bool {
        matches!(self.policy, Policy::Queue(_))
    }
}

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

/// A subscriber's handle: receive with [`recv`](Self::recv), or use it as a
/// [`Stream`](futures::Stream). Dropping it unsubscribes; this never blocks
/// or fails a publisher.
pub struct Subscription<T> {
    pub(crate) shared: Arc<SubShared<T>>,
    pub(crate) bus: Weak<BusInner<T>>,
    pub(crate) local: VecDeque<Arc<Envelope<T>>>,
    pub(crate) member: u64,
    /// How many polls in a row found nothing and yielded instead of parking.
    pub(crate) yielded: u8,
    /// Events still to replay from the store before going live.
    pub(crate) replay: Option<crate::store::Replay<T>>,
    pub(crate) durable: Option<crate::store::Durable<T>>,
    /// Live events with a store offset below this were replayed already.
    pub(crate) skip_below: Option<u64>,
}

impl<T> fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("name", &self.shared.name)
            .field("pattern", &self.shared.pattern)
            .field("policy", &self.shared.policy)
            .finish()
    }
}

impl<T: Send + Sync + 'static> Subscription<T> {
    /// Receives the next event.
    ///
    /// Returns [`RecvError::Lagged`] once after a lossy subscriber missed
    /// events, then goes on; returns [`RecvError::Closed`] when the bus is
    /// closed and everything already queued has been received.
    ///
    /// Cancel safe: if the future is dropped before it completes, no event is lost.
    pub async fn recv(&mut self) -> Result<Arc<Envelope<T>>, RecvError> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Receives an event if one is ready: `Ok(None)` when none is.
    pub fn try_recv(&mut self) -> Result<Option<Arc<Envelope<T>>>, RecvError> {
        match self.poll_inner(None) {
            Poll::Ready(r) => r.map(Some),
            Poll::Pending => Ok(None),
        }
    }

    /// Polls for the next event (the building block of `recv` and `Stream`).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Arc<Envelope<T>>, RecvError>> {
        self.poll_inner(Some(cx))
    }

    fn poll_inner(
        &mut self,
        mut cx: Option<&mut Context<'_>>,
    ) -> Poll<Result<Arc<Envelope<T>>, RecvError>> {
        if let Some(replay) = &mut self.replay {
            for item in replay.events.by_ref() {
                match item {
                    Ok(env) => {
                        let sub = &*self.shared;
                        if sub.pattern.matches(&env.topic)
                            && sub.filter.as_ref().is_none_or(|f| f(&env))
                        {
                            return Poll::Ready(Ok(Arc::new(env)));
                        }
                    }
                    Err(e) => {
                        self.skip_below = Some(replay.end);
                        self.replay = None;
                        return Poll::Ready(Err(RecvError::Store(e)));
                    }
                }
            }
            self.skip_below = Some(replay.end);
            self.replay = None;
        }
        loop {
            let r = self.poll_live(cx.as_deref_mut());
            if let (Poll::Ready(Ok(e)), Some(end)) = (&r, self.skip_below) {
                if e.offset.is_some_and(|o| o < end) {
                    continue; // replayed already
                }
            }
            return r;
        }
    }

    /// Durably records that this named consumer has handled `env`: after a
    /// restart, `from(StartAt::Committed)` resumes with the event after it.
    ///
    /// The future owns what it needs (it does not borrow the subscription), so
    /// it is `Send` and can be awaited in a spawned task or a module.
    pub fn commit(
        &self,
        env: &Envelope<T>,
    ) -> impl std::future::Future<Output = Result<(), crate::store::StoreError>> + Send + 'static
    {
        use crate::store::StoreError;
        let target = (|| {
            let name = self.durable.as_ref().and_then(|d| d.consumer.as_ref());
            let (Some(d), Some(name)) = (&self.durable, name) else {
                return Err(StoreError::new(
                    format!("commit on subscription `{}`", self.shared.name),
                    "it was not made with .consumer(name)",
                ));
            };
            let Some(offset) = env.offset else {
                return Err(StoreError::new(
                    format!("commit of event {} by consumer `{name}`", env.id),
                    "the event has no store offset (its topic is not persisted)",
                ));
            };
            Ok((d.store.clone(), name.clone(), offset))
        })();
        async move {
            let (store, name, offset) = target?;
            store.commit_offset(&name, offset + 1).await
        }
    }

    fn poll_live(
        &mut self,
        cx: Option<&mut Context<'_>>,
    ) -> Poll<Result<Arc<Envelope<T>>, RecvError>> {
        if let Some(e) = self.local.pop_front() {
            return Poll::Ready(Ok(e));
        }
        if cx.is_none() {
            self.yielded = 0;
        }
        let sub = &*self.shared;
        let mut st = sub.state.lock();
        if st.lagged > 0 {
            let n = std::mem::take(&mut st.lagged);
            return Poll::Ready(Err(RecvError::Lagged(n)));
        }
        let got = match sub.policy {
            Policy::Latest => st.latest_order.pop_front().map(|t| {
                st.latest
                    .remove(&t)
                    .expect("every pending topic has a latest value")
            }),
            Policy::Queue(_) => st.queue.pop_front(),
            Policy::Lossless | Policy::Lossy => {
                // Take the whole queue in O(1): our (empty) buffer becomes the
                // queue, so no allocation happens in steady state.
                debug_assert!(self.local.is_empty());
                std::mem::swap(&mut self.local, &mut st.queue);
                self.local.pop_front()
            }
        };
        let room_made = got.is_some() || st.in_hand > 0;
        st.in_hand = self.local.len();
        if got.is_some() {
            st.received += 1 + self.local.len() as u64;
        }
        if st.pressured && st.depth() <= sub.low {
            st.pressured = false;
            sub.pressure.lower();
        }
        if let Some(e) = got {
            self.yielded = 0;
            // Wake waiting publishers once there is real room (half the
            // capacity), not for every event taken: fewer, larger wake-ups.
            let mut wake: SmallVec<[Waker; 3]> = if st.depth() <= sub.capacity / 2 {
                st.tx_wakers.drain(..).collect()
            } else {
                SmallVec::new()
            };
            if sub.is_group() && !st.queue.is_empty() && !st.rx_wakers.is_empty() {
                // More is waiting: pass the word on to another idle member.
                wake.push(st.rx_wakers.remove(0).1);
            }
            drop(st);
            for w in wake {
                w.wake();
            }
            return Poll::Ready(Ok(e));
        }
        let wake: SmallVec<[Waker; 2]> = if room_made {
            st.tx_wakers.drain(..).collect()
        } else {
            SmallVec::new()
        };
        if st.closed {
            drop(st);
            wake.into_iter().for_each(Waker::wake);
            return Poll::Ready(Err(RecvError::Closed));
        }
        if let Some(cx) = cx {
            if self.yielded < SPIN_POLLS && !sub.is_group() {
                // Found nothing: yield once before parking. Under load the
                // publisher refills the queue meanwhile, and the task (and its
                // worker thread) skip a park/unpark round trip, which costs
                // far more than one extra poll.
                self.yielded += 1;
                drop(st);
                wake.into_iter().for_each(Waker::wake);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.yielded = 0;
            let member = self.member;
            match st.rx_wakers.iter_mut().find(|(m, _)| *m == member) {
                Some((_, w)) => w.clone_from(cx.waker()),
                None => st.rx_wakers.push((member, cx.waker().clone())),
            }
        }
        drop(st);
        wake.into_iter().for_each(Waker::wake);
        Poll::Pending
    }

    /// The subscriber's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The pattern subscribed to.
    pub fn pattern(&self) -> &Pattern {
        &self.shared.pattern
    }

    /// The delivery policy.
    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// Events waiting for this subscriber (in its queue and in the batch it holds).
    pub fn len(&self) -> usize {
        self.shared.state.lock().len() + self.local.len()
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This subscriber's counters.
    pub fn stats(&self) -> crate::stats::SubscriberStats {
        crate::stats::SubscriberStats::of(&self.shared)
    }
}

impl<T: Send + Sync + 'static> futures::Stream for Subscription<T> {
    /// `Err` is only ever [`RecvError::Lagged`]; the stream ends when the bus closes.
    type Item = Result<Arc<Envelope<T>>, RecvError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut().poll_recv(cx) {
            Poll::Ready(Err(RecvError::Closed)) => Poll::Ready(None),
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        let bus = self.bus.upgrade();
        // Lock order everywhere: registry, then subscriber state.
        let mut registry = bus.as_ref().map(|b| b.registry.write());
        let sub = &*self.shared;
        let mut st = sub.state.lock();
        st.rx_wakers.retain(|(m, _)| *m != self.member);
        let mut wake: SmallVec<[Waker; 4]> = SmallVec::new();
        let mut remove = true;
        if sub.is_group() {
            st.members -= 1;
            if st.members > 0 {
                remove = false;
                // Anything this member had not taken stays with the group.
                if !st.queue.is_empty() && !st.rx_wakers.is_empty() {
                    wake.push(st.rx_wakers.remove(0).1);
                }
            }
        }
        if remove {
            // Events handed to this subscriber and never received: counted, not silent.
            st.discarded += self.local.len() as u64;
            st.received -= self.local.len() as u64;
            self.local.clear();
            wake.extend(st.close(sub, true));
        }
        drop(st);
        if remove {
            if let (Some(bus), Some(reg)) = (bus.as_ref(), registry.as_mut()) {
                bus.unregister(reg, &self.shared);
            }
        }
        drop(registry);
        for w in wake {
            w.wake();
        }
    }
}
