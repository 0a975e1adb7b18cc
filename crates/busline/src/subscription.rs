//! Subscriptions: what a subscriber holds, and the delivery policy it chose.
//!
//! Every subscriber has its own queue (or, for a queue group, the group has
//! one) and its own policy; one bus serves any mix of them. See the crate docs
//! for the semantics of each policy.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};

use crate::sync::{AtomicU64, Mutex};
use ahash::AHashMap;
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

/// Polls that find nothing and yield (with tokio's deferred `yield_now`)
/// before the subscriber parks (see `poll_ring`). Measured on 2 cores with
/// `busline bench fanout`: 0 doubles the context switches (`perf stat -e
/// context-switches`). With another busy process on the machine, 1 gave
/// 7.8 M deliveries/s against broadcast's 12.5 M and 2 gave 9.3–10.7 M
/// (parking and being woken costs more when the cores are contended); 3
/// and 4 gave no more, and on a quiet machine 1 to 3 measure the same.
const SPIN_POLLS: u8 = 2;

/// Lets other tasks run before this one is polled again: tokio's
/// `yield_now`, which defers the wake-up until the worker has run the other
/// ready tasks (a plain self-wake could poll this task again at once).
fn yield_now(cx: &mut Context<'_>) {
    let mut y = std::pin::pin!(tokio::task::yield_now());
    let _ = std::future::Future::poll(y.as_mut(), cx);
}

/// What the router delivers to: one subscriber's queue, or a queue shared by
/// several subscribers.
///
/// - Lossless and lossy subscribers read a **ring**: the publisher appends an
///   event once, and each member reads it at its own cursor. Unfiltered
///   subscribers with the same pattern, policy, capacity and watermarks share
///   one ring, so publishing costs the same with one of them or sixteen.
/// - A queue group shares one queue that members take from one at a time.
/// - A `latest` subscriber keeps a map of the newest event per topic.
pub(crate) struct SubShared<T> {
    pub(crate) id: u64,
    /// The subscriber's name (queue groups: the group's; rings: the first member's).
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

/// One event in a ring, with the number of members still to read it.
pub(crate) struct Slot<T> {
    env: Option<Arc<Envelope<T>>>,
    /// Members present when it was published that have not read it yet; the
    /// last one moves the event out instead of cloning it.
    rem: u32,
}

/// A subscriber reading a ring.
pub(crate) struct Member {
    pub(crate) id: u64,
    pub(crate) name: Arc<str>,
    /// The ring position it reads next.
    pub(crate) cursor: u64,
    /// The ring's end when it joined: it is delivered everything after.
    pub(crate) joined: u64,
    /// Events taken in its last batch and not handed out yet (as of its last
    /// visit); they still count against a lossless capacity.
    pub(crate) in_hand: usize,
    pub(crate) received: u64,
    /// Lost (lossy) and already reported as `Lagged`.
    pub(crate) dropped: u64,
    pub(crate) discarded: u64,
    pub(crate) peak: usize,
    pub(crate) blocked_ns: u64,
    pub(crate) waker: Option<Waker>,
}

impl Member {
    fn new(id: u64, name: Arc<str>, tail: u64) -> Self {
        Member {
            id,
            name,
            cursor: tail,
            joined: tail,
            in_hand: 0,
            received: 0,
            dropped: 0,
            discarded: 0,
            peak: 0,
            blocked_ns: 0,
            waker: None,
        }
    }
}

pub(crate) struct State<T> {
    /// Lossless and lossy: the ring, and the position of its first slot.
    pub(crate) ring: VecDeque<Slot<T>>,
    pub(crate) base: u64,
    pub(crate) readers: SmallVec<[Member; 1]>,
    /// Ring members with a waker set (waiting for an event).
    pub(crate) parked: usize,
    /// Lossless rings: the lowest `cursor - in_hand` of any member (the
    /// oldest event some member has not been handed yet).
    pub(crate) slowest: u64,
    /// Queue groups.
    pub(crate) queue: VecDeque<Arc<Envelope<T>>>,
    /// `Latest` only: newest event per topic, and the order topics became pending.
    pub(crate) latest: AHashMap<Topic, Arc<Envelope<T>>>,
    pub(crate) latest_order: VecDeque<Topic>,
    /// Queue groups and `latest`: receivers waiting for an event, by member id.
    pub(crate) rx_wakers: SmallVec<[(u64, Waker); 1]>,
    /// Publishers waiting for room.
    pub(crate) tx_wakers: SmallVec<[Waker; 2]>,
    pub(crate) closed: bool,
    /// Queue groups and `latest` (rings count per member).
    pub(crate) delivered: u64,
    pub(crate) received: u64,
    pub(crate) superseded: u64,
    pub(crate) discarded: u64,
    pub(crate) pressured: bool,
    pub(crate) peak: usize,
    /// Queue groups: members currently joined.
    pub(crate) members: usize,
}

impl<T> State<T> {
    pub(crate) fn new() -> Self {
        State {
            ring: VecDeque::new(),
            base: 0,
            readers: SmallVec::new(),
            parked: 0,
            slowest: 0,
            queue: VecDeque::new(),
            latest: AHashMap::new(),
            latest_order: VecDeque::new(),
            rx_wakers: SmallVec::new(),
            tx_wakers: SmallVec::new(),
            closed: false,
            delivered: 0,
            received: 0,
            superseded: 0,
            discarded: 0,
            pressured: false,
            peak: 0,
            members: 1,
        }
    }

    /// The ring position the next event gets.
    pub(crate) fn tail(&self) -> u64 {
        self.base + self.ring.len() as u64
    }

    /// Events waiting for ring member `m`: unread in the ring plus its batch.
    pub(crate) fn member_depth(&self, m: &Member) -> usize {
        (self.tail() - m.cursor.max(self.base)) as usize + m.in_hand
    }

    /// Events waiting: for a ring, the most any member has waiting.
    pub(crate) fn depth(&self, sub: &SubShared<T>) -> usize {
        match sub.policy {
            Policy::Lossless => (self.tail() - self.slowest) as usize,
            Policy::Lossy => self
                .readers
                .iter()
                .map(|m| self.member_depth(m))
                .max()
                .unwrap_or(0),
            Policy::Latest => self.latest_order.len(),
            Policy::Queue(_) => self.queue.len(),
        }
    }

    /// Puts `env` in the queue following `sub`'s policy (room was checked for
    /// lossless queues); receivers to wake go to `wake`.
    pub(crate) fn push(
        &mut self,
        sub: &SubShared<T>,
        env: Arc<Envelope<T>>,
        wake: &mut SmallVec<[Waker; 8]>,
    ) {
        match sub.policy {
            Policy::Latest => {
                self.delivered += 1;
                if let Some(old) = self.latest.get_mut(&env.topic) {
                    *old = env;
                    self.superseded += 1;
                } else {
                    self.latest_order.push_back(env.topic.clone());
                    self.latest.insert(env.topic.clone(), env);
                }
                self.peak = self.peak.max(self.latest_order.len());
            }
            Policy::Queue(_) => {
                self.delivered += 1;
                self.queue.push_back(env);
                let depth = self.queue.len();
                self.peak = self.peak.max(depth);
                if !self.pressured && depth >= sub.high {
                    self.pressured = true;
                    sub.pressure.raise();
                }
            }
            Policy::Lossless | Policy::Lossy => {
                self.ring.push_back(Slot {
                    env: Some(env),
                    rem: self.readers.len() as u32,
                });
                if sub.policy == Policy::Lossy {
                    if self.ring.len() > sub.capacity {
                        // The oldest goes; members that had not read it
                        // find out from their cursor (`Lagged`).
                        self.ring.pop_front();
                        self.base += 1;
                    }
                } else if !self.pressured && self.depth(sub) >= sub.high {
                    self.pressured = true;
                    sub.pressure.raise();
                }
                // Members' entries are written by their readers on every
                // batch: look at them only when one of them waits.
                if self.parked > 0 {
                    self.parked = 0;
                    wake.extend(self.readers.iter_mut().filter_map(|m| m.waker.take()));
                }
                return;
            }
        }
        if !self.rx_wakers.is_empty() {
            wake.push(self.rx_wakers.remove(0).1);
        }
    }

    pub(crate) fn has_room(&self, sub: &SubShared<T>) -> bool {
        match sub.policy {
            Policy::Lossless | Policy::Queue(_) => self.depth(sub) < sub.capacity,
            Policy::Lossy | Policy::Latest => true,
        }
    }

    /// Marks closed and discards what is queued; returns wakers to wake.
    pub(crate) fn close(&mut self, sub: &SubShared<T>, discard: bool) -> SmallVec<[Waker; 4]> {
        self.closed = true;
        if discard {
            let tail = self.tail();
            let base = self.base;
            for m in self.readers.iter_mut() {
                m.discarded += tail - m.cursor.max(base);
                m.cursor = tail;
            }
            self.discarded += (self.queue.len() + self.latest_order.len()) as u64;
            self.ring.clear();
            self.base = tail;
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
        w.extend(self.readers.iter_mut().filter_map(|m| m.waker.take()));
        self.parked = 0;
        w
    }

    /// Recomputes the slowest member after a read, a join or a leave, and
    /// clears backpressure if the ring drained to its low watermark.
    fn settle(&mut self, sub: &SubShared<T>) {
        let tail = self.tail();
        self.slowest = self
            .readers
            .iter()
            .map(|m| m.cursor - m.in_hand as u64)
            .min()
            .unwrap_or(tail);
        if self.pressured && self.depth(sub) <= sub.low {
            self.pressured = false;
            sub.pressure.lower();
        }
        // Slots every member has read are gone (moved out by the last reader).
        while self.ring.front().is_some_and(|s| s.env.is_none()) {
            self.ring.pop_front();
            self.base += 1;
        }
    }

    /// The ring member with the most events waiting: the one a lossless
    /// publisher waits on.
    pub(crate) fn slowest_member(&self) -> Option<usize> {
        (0..self.readers.len()).max_by_key(|&i| self.member_depth(&self.readers[i]))
    }

    /// Adds a ring member reading from now on.
    pub(crate) fn join(&mut self, sub: &SubShared<T>, id: u64, name: Arc<str>) {
        let tail = self.tail();
        self.readers.push(Member::new(id, name, tail));
        self.settle(sub);
    }

    /// Removes ring member `id`: what it had not read is counted as discarded
    /// and released. Returns the member (for its counters) and publishers to wake.
    pub(crate) fn leave(
        &mut self,
        sub: &SubShared<T>,
        id: u64,
        in_hand: usize,
    ) -> (Option<Member>, SmallVec<[Waker; 2]>) {
        let Some(i) = self.readers.iter().position(|m| m.id == id) else {
            return (None, SmallVec::new());
        };
        let mut m = self.readers.swap_remove(i);
        // Lost and not reported yet (lossy): still dropped, not silent.
        m.dropped += self.base.saturating_sub(m.cursor);
        if m.waker.take().is_some() {
            self.parked = self.parked.saturating_sub(1);
        }
        let from = m.cursor.max(self.base);
        for p in from..self.tail() {
            let slot = &mut self.ring[(p - self.base) as usize];
            slot.rem = slot.rem.saturating_sub(1);
            if slot.rem == 0 {
                slot.env = None;
            }
        }
        m.discarded += self.tail() - from + in_hand as u64;
        m.received -= in_hand as u64;
        m.cursor = self.tail();
        m.in_hand = 0;
        self.settle(sub);
        (Some(m), self.tx_wakers.drain(..).collect())
    }
}

impl<T> SubShared<T> {
    /// Whether its filter (if any) takes `env`. Counted as `filtered` only
    /// once the event is delivered to the others (see `count_filtered`).
    pub(crate) fn accepts(&self, env: &Envelope<T>) -> bool {
        self.filter.as_ref().is_none_or(|f| f(env))
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
    /// This subscriber's id (its member id in a ring or queue group).
    pub(crate) member: u64,
    pub(crate) name: Arc<str>,
    /// How many polls in a row found nothing and yielded instead of parking.
    pub(crate) yielded: u8,
    /// Events still to replay from the store before going live.
    pub(crate) replay: Option<crate::store::Replay<T>>,
    pub(crate) durable: Option<crate::store::Durable<T>>,
    /// Live events with a store offset below this were replayed already.
    pub(crate) skip_below: Option<u64>,
    /// Where dropping it adds the number of events it discards (a module's
    /// count), computed under the same lock as the bus's own count.
    pub(crate) discard_counter: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl<T> fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("name", &self.name)
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
    /// Cancel safe: if the future is dropped before it completes, no event is
    /// lost, and in a queue group a wake-up it got for an event it did not
    /// take goes to another waiting member.
    pub async fn recv(&mut self) -> Result<Arc<Envelope<T>>, RecvError> {
        let mut wait = WaitGuard {
            sub: self,
            armed: true,
        };
        let r = std::future::poll_fn(|cx| wait.sub.poll_recv(cx)).await;
        wait.armed = false;
        r
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
        match self.shared.policy {
            Policy::Lossless | Policy::Lossy => self.poll_ring(cx),
            Policy::Latest | Policy::Queue(_) => self.poll_queue(cx),
        }
    }

    /// Reads everything new in the ring at this member's cursor in one go.
    fn poll_ring(
        &mut self,
        mut cx: Option<&mut Context<'_>>,
    ) -> Poll<Result<Arc<Envelope<T>>, RecvError>> {
        let sub = &*self.shared;
        // (Under loom a plain lock: the yield below only adds a busy loop
        // for the model checker, no interleaving a blocking lock misses.)
        #[cfg(busline_loom)]
        let contended = Some(sub.state.lock());
        #[cfg(not(busline_loom))]
        let contended = sub.state.try_lock();
        let mut guard = match (contended, cx.as_deref_mut()) {
            (Some(g), _) => g,
            (None, Some(cx)) => {
                // The publisher (or another reader) has the ring: come back
                // after the other tasks rather than spin on the lock.
                yield_now(cx);
                return Poll::Pending;
            }
            (None, None) => sub.state.lock(),
        };
        let st = &mut *guard;
        let Some(i) = st.readers.iter().position(|m| m.id == self.member) else {
            return Poll::Ready(Err(RecvError::Closed));
        };
        let (base, tail) = (st.base, st.tail());
        let m = &mut st.readers[i];
        if m.cursor < base {
            // Lossy: the ring moved past events this member had not read.
            let n = base - m.cursor;
            m.cursor = base;
            m.dropped += n;
            m.in_hand = 0;
            return Poll::Ready(Err(RecvError::Lagged(n)));
        }
        let had_in_hand = m.in_hand > 0;
        let n = (tail - m.cursor) as usize;
        m.peak = m.peak.max(n + m.in_hand);
        let from = (m.cursor - base) as usize;
        m.cursor = tail;
        m.received += n as u64;
        for slot in st.ring.range_mut(from..) {
            slot.rem -= 1;
            let env = if slot.rem == 0 {
                slot.env.take()
            } else {
                slot.env.clone()
            };
            if let Some(env) = env {
                self.local.push_back(env);
            }
        }
        let got = self.local.pop_front();
        st.readers[i].in_hand = self.local.len();
        st.settle(sub);
        if let Some(e) = got {
            self.yielded = 0;
            // Waiting publishers get the room as soon as there is some (this
            // member was the slowest), so a later publisher cannot take it first.
            let wake: SmallVec<[Waker; 2]> = if !st.tx_wakers.is_empty() && st.has_room(sub) {
                st.tx_wakers.drain(..).collect()
            } else {
                SmallVec::new()
            };
            drop(guard);
            wake.into_iter().for_each(Waker::wake);
            return Poll::Ready(Ok(e));
        }
        let wake: SmallVec<[Waker; 2]> = if had_in_hand {
            st.tx_wakers.drain(..).collect()
        } else {
            SmallVec::new()
        };
        if st.closed {
            drop(guard);
            wake.into_iter().for_each(Waker::wake);
            return Poll::Ready(Err(RecvError::Closed));
        }
        if let Some(cx) = cx {
            if self.yielded < SPIN_POLLS {
                // Found nothing: yield once before parking. Under load the
                // publisher refills the ring meanwhile, and the task (and its
                // worker thread) skip a park/unpark round trip, which costs
                // far more than one extra poll.
                self.yielded += 1;
                drop(guard);
                wake.into_iter().for_each(Waker::wake);
                yield_now(cx);
                return Poll::Pending;
            }
            self.yielded = 0;
            let m = &mut st.readers[i];
            match &mut m.waker {
                Some(w) => w.clone_from(cx.waker()),
                None => {
                    m.waker = Some(cx.waker().clone());
                    st.parked += 1;
                }
            }
        }
        drop(guard);
        wake.into_iter().for_each(Waker::wake);
        Poll::Pending
    }

    /// Queue groups (one event per receive) and `latest`.
    fn poll_queue(
        &mut self,
        cx: Option<&mut Context<'_>>,
    ) -> Poll<Result<Arc<Envelope<T>>, RecvError>> {
        let sub = &*self.shared;
        let mut st = sub.state.lock();
        let got = match sub.policy {
            Policy::Latest => st.latest_order.pop_front().map(|t| {
                st.latest
                    .remove(&t)
                    .expect("every pending topic has a latest value")
            }),
            _ => st.queue.pop_front(),
        };
        if st.pressured && st.depth(sub) <= sub.low {
            st.pressured = false;
            sub.pressure.lower();
        }
        if let Some(e) = got {
            st.received += 1;
            // Waiting publishers get the room as soon as there is some, so a
            // later publisher (`try_publish`) cannot take it first.
            let mut wake: SmallVec<[Waker; 3]> = if !st.tx_wakers.is_empty() && st.has_room(sub) {
                st.tx_wakers.drain(..).collect()
            } else {
                SmallVec::new()
            };
            if sub.is_group() && !st.queue.is_empty() && !st.rx_wakers.is_empty() {
                // More is waiting: pass the word on to another idle member.
                wake.push(st.rx_wakers.remove(0).1);
            }
            drop(st);
            wake.into_iter().for_each(Waker::wake);
            return Poll::Ready(Ok(e));
        }
        if st.closed {
            return Poll::Ready(Err(RecvError::Closed));
        }
        if let Some(cx) = cx {
            let member = self.member;
            match st.rx_wakers.iter_mut().find(|(m, _)| *m == member) {
                Some((_, w)) => w.clone_from(cx.waker()),
                None => st.rx_wakers.push((member, cx.waker().clone())),
            }
        }
        Poll::Pending
    }

    /// The subscriber's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pattern subscribed to.
    pub fn pattern(&self) -> &Pattern {
        &self.shared.pattern
    }

    /// The delivery policy.
    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// This subscriber's counters (one consistent snapshot).
    pub fn stats(&self) -> crate::stats::SubscriberStats {
        use crate::stats::SubscriberStats;
        if let Policy::Lossless | Policy::Lossy = self.shared.policy {
            let st = self.shared.state.lock();
            if let Some(m) = st.readers.iter().find(|m| m.id == self.member) {
                // Its batch as of now, not as of its last visit to the ring.
                return SubscriberStats::of_member(&self.shared, &st, m, self.local.len());
            }
        }
        let mut all = SubscriberStats::of(&self.shared);
        let i = all.iter().position(|s| s.id == self.member).unwrap_or(0);
        all.swap_remove(i)
    }

    /// Ends the subscription, as dropping it does, and returns how many
    /// events it had been handed and never received. Those are discarded and
    /// counted in the bus's `discarded`, as on drop. Use it to learn what
    /// was lost: drain with [`try_recv`](Self::try_recv), then unsubscribe.
    /// A queue group member returns 0: what the group holds stays with the
    /// other members, and only the last one to leave discards it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus: busline::Bus<u32> = busline::Bus::new();
    /// let sub = bus.subscriber("a").subscribe().unwrap();
    /// bus.publish_to("a", 1).await.unwrap();
    /// bus.publish_to("a", 2).await.unwrap();
    /// assert_eq!(sub.unsubscribe(), 2);
    /// assert_eq!(bus.stats().discarded, 2);
    /// # }
    /// ```
    pub fn unsubscribe(mut self) -> u64 {
        use std::sync::atomic::AtomicU64;
        let mine = Arc::new(AtomicU64::new(0));
        let outer = self.discard_counter.replace(mine.clone());
        drop(self);
        let n = mine.load(Ordering::Relaxed);
        if let Some(c) = outer {
            c.fetch_add(n, Ordering::Relaxed);
        }
        n
    }
}

/// Withdraws a queue group member's wait when its `recv` future is dropped
/// before completing (see [`Subscription::recv`]).
struct WaitGuard<'a, T> {
    sub: &'a mut Subscription<T>,
    armed: bool,
}

impl<T> Drop for WaitGuard<'_, T> {
    fn drop(&mut self) {
        if self.armed {
            self.sub.cancel_wait();
        }
    }
}

impl<T> Subscription<T> {
    /// A `recv` gave up: a queue group member takes its waker back, and if
    /// it was woken for an event (its waker is gone) that is still queued,
    /// passes the wake-up to another waiting member. Without this, the
    /// group's next event could wake only a member no longer listening.
    fn cancel_wait(&mut self) {
        if !self.shared.is_group() {
            return;
        }
        let mut st = self.shared.state.lock();
        let before = st.rx_wakers.len();
        st.rx_wakers.retain(|(m, _)| *m != self.member);
        let wake =
            (st.rx_wakers.len() == before && !st.queue.is_empty() && !st.rx_wakers.is_empty())
                .then(|| st.rx_wakers.remove(0).1);
        drop(st);
        if let Some(w) = wake {
            w.wake();
        }
    }

    /// Events waiting for this subscriber (in its queue and in the batch it holds).
    pub fn len(&self) -> usize {
        let st = self.shared.state.lock();
        let queued = match self.shared.policy {
            Policy::Lossless | Policy::Lossy => st
                .readers
                .iter()
                .find(|m| m.id == self.member)
                .map_or(0, |m| (st.tail() - m.cursor.max(st.base)) as usize),
            _ => st.depth(&self.shared),
        };
        queued + self.local.len()
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Send + Sync + 'static> futures::Stream for Subscription<T> {
    /// `Err` is [`RecvError::Lagged`], or [`RecvError::Store`] when a replay
    /// failed (the stream goes on live after it); the stream ends when the
    /// bus closes.
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
        let mut wake: SmallVec<[Waker; 4]> = SmallVec::new();
        let mut remove = true;
        let mut lost = 0;
        match sub.policy {
            Policy::Lossless | Policy::Lossy => {
                // Events handed to this subscriber and never received: counted, not silent.
                let (gone, w) = st.leave(sub, self.member, self.local.len());
                self.local.clear();
                wake.extend(w);
                lost = gone.as_ref().map_or(0, |m| m.discarded);
                // Its counters stay in the bus totals.
                if let (Some(m), Some(reg)) = (gone, registry.as_mut()) {
                    reg.retired.delivered += st.tail() - m.joined;
                    reg.retired.dropped += m.dropped;
                    reg.retired.discarded += m.discarded;
                }
                // The others read on; the last one takes the ring with it.
                remove = st.readers.is_empty();
            }
            Policy::Queue(_) => {
                st.rx_wakers.retain(|(m, _)| *m != self.member);
                st.members -= 1;
                if st.members > 0 {
                    remove = false;
                    // Anything this member had not taken stays with the group.
                    if !st.queue.is_empty() && !st.rx_wakers.is_empty() {
                        wake.push(st.rx_wakers.remove(0).1);
                    }
                }
            }
            Policy::Latest => {}
        }
        if remove {
            let before = st.discarded;
            wake.extend(st.close(sub, true));
            lost += st.discarded - before;
        }
        drop(st);
        if let Some(c) = &self.discard_counter {
            c.fetch_add(lost, Ordering::Relaxed);
        }
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
