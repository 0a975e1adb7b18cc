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

use crate::sync::{fence, AtomicU64, Mutex};
use ahash::AHashMap;
use smallvec::SmallVec;

use crate::bus::{BusInner, Pressure};
use crate::envelope::Envelope;
use crate::error::{RecvError, SubscribeError};
use crate::ring::{MemberCell, Padded, Ring, BUSY, PRESSURED, WAITING};
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
///
/// Parking at once when the subscriber is alone on its ring was tried (an
/// Intel Xeon VM, 2026-12-01): `bench fanout --subscribers 1` went from
/// 2.4–2.5 M to 3.7–4.0 M deliveries/s, but the NATS exporter, such a
/// subscriber, fell from 0.83–0.84x to 0.77–0.78x raw async-nats on
/// JetStream (`busline bench nats --rounds 5`), so every subscriber yields.
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
    /// Lossless and lossy: the ring its members read.
    pub(crate) ring: Option<Ring<T>>,
    pub(crate) filtered: AtomicU64,
    pub(crate) blocked_ns: AtomicU64,
}

/// A subscriber reading a ring (kept under the subscriber's lock).
pub(crate) struct Member {
    pub(crate) id: u64,
    pub(crate) name: Arc<str>,
    /// What its subscription publishes as it reads.
    pub(crate) cell: Arc<Padded<MemberCell>>,
    /// The ring's end when it joined: it is delivered everything after.
    pub(crate) joined: u64,
    pub(crate) discarded: u64,
    pub(crate) blocked_ns: u64,
    /// The most events a publisher found waiting for it (its reader keeps
    /// the most it found; the member's peak is the larger).
    pub(crate) peak: u64,
    pub(crate) waker: Option<Waker>,
}

impl Member {
    /// The next position it reads.
    pub(crate) fn cursor(&self) -> u64 {
        self.cell.cursor.load(Ordering::Acquire) & !BUSY
    }

    /// Lost (lossy): reported as `Lagged`, or to be at its next receive.
    pub(crate) fn dropped(&self) -> u64 {
        self.cell.dropped.load(Ordering::Relaxed)
    }
}

/// A ring member's own side: its cursor, and the ring's end as it last read it.
pub(crate) struct Reader {
    pub(crate) cell: Arc<Padded<MemberCell>>,
    pub(crate) cursor: u64,
    /// While above `cursor`: positions before it are written (a ring's end
    /// it read). At `cursor`, it reads the ring's end again.
    pub(crate) known_tail: u64,
    pub(crate) peak: u64,
}

pub(crate) struct State<T> {
    /// Lossless and lossy: the ring's members.
    pub(crate) readers: SmallVec<[Member; 1]>,
    /// Ring members with a waker set (waiting for an event).
    pub(crate) parked: usize,
    /// Rings: a lower bound of the lowest member cursor (the oldest event
    /// some member has not read), refreshed from the members' cursors when
    /// the ring looks full.
    pub(crate) slowest: u64,
    /// The member whose cursor the last refresh found lowest: the one a
    /// lossless publisher that found the ring full waits on.
    pub(crate) slowest_id: u64,
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
            readers: SmallVec::new(),
            parked: 0,
            slowest: 0,
            slowest_id: 0,
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

    /// Events waiting for ring member `m` (a lossy ring holds at most its capacity).
    pub(crate) fn member_depth(&self, sub: &SubShared<T>, m: &Member) -> usize {
        let ring = sub.ring();
        let tail = ring.tail();
        (tail - m.cursor().max(ring.oldest(tail))) as usize
    }

    /// Refreshes [`slowest`](Self::slowest) and
    /// [`slowest_id`](Self::slowest_id) from the members' cursors, and their
    /// peaks from what each has waiting.
    fn refresh_slowest(&mut self, sub: &SubShared<T>) -> u64 {
        let ring = sub.ring();
        let tail = ring.tail();
        let oldest = ring.oldest(tail);
        let mut slowest = tail;
        for m in self.readers.iter_mut() {
            let c = m.cursor();
            if c < slowest {
                slowest = c;
                self.slowest_id = m.id;
            }
            // (A lossy member behind the oldest event has lost the rest.)
            m.peak = m.peak.max(tail - c.max(oldest));
        }
        self.slowest = slowest;
        slowest
    }

    /// Events waiting: for a ring, the most any member has waiting.
    pub(crate) fn depth(&self, sub: &SubShared<T>) -> usize {
        match sub.policy {
            Policy::Lossless | Policy::Lossy => self
                .readers
                .iter()
                .map(|m| self.member_depth(sub, m))
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
                let ring = sub.ring();
                if sub.policy == Policy::Lossy {
                    self.make_way(ring);
                }
                // A lossy ring's oldest event goes if a member had not read it.
                let old = ring.push(env, self.readers.len() as u32);
                if sub.policy == Policy::Lossless && !self.pressured {
                    let tail = ring.tail();
                    if tail - self.slowest >= sub.high as u64 {
                        // Flag first, then look: a reader moving on at the
                        // same time either is seen or sees the flag.
                        ring.flags.fetch_or(PRESSURED, Ordering::Relaxed);
                        fence(Ordering::SeqCst);
                        if tail - self.refresh_slowest(sub) >= sub.high as u64 {
                            self.pressured = true;
                            sub.pressure.raise();
                        } else {
                            ring.flags.fetch_and(!PRESSURED, Ordering::Relaxed);
                        }
                    }
                }
                // Members' entries are written by their readers only when
                // they park: look at them only when one of them waits.
                if self.parked > 0 {
                    self.parked = 0;
                    wake.extend(self.readers.iter_mut().filter_map(|m| m.waker.take()));
                }
                drop(old);
                return;
            }
        }
        if !self.rx_wakers.is_empty() {
            wake.push(self.rx_wakers.remove(0).1);
        }
    }

    /// A full lossy ring is about to write over its oldest event: members
    /// that have not read it are moved past it (they find out from their
    /// cursor: `Lagged`).
    fn make_way(&mut self, ring: &Ring<T>) {
        let tail = ring.tail();
        let Some(old) = tail.checked_sub(ring.capacity()) else {
            return;
        };
        if self.slowest > old {
            return;
        }
        let mut slowest = tail;
        for m in &self.readers {
            slowest = slowest.min(ring.move_past(&m.cell, old));
        }
        self.slowest = slowest;
    }

    /// Whether a lossless queue can take one more event now.
    pub(crate) fn has_room(&mut self, sub: &SubShared<T>) -> bool {
        match sub.policy {
            Policy::Lossless => {
                let tail = sub.ring().tail();
                let cap = sub.capacity as u64;
                tail - self.slowest < cap || tail - self.refresh_slowest(sub) < cap
            }
            Policy::Queue(_) => self.queue.len() < sub.capacity,
            Policy::Lossy | Policy::Latest => true,
        }
    }

    /// No room (see [`has_room`](Self::has_room)): registers `waker` to be
    /// woken when there is, unless room appeared meanwhile (then `true`).
    pub(crate) fn wait_for_room(&mut self, sub: &SubShared<T>, waker: Option<&Waker>) -> bool {
        let Some(w) = waker else {
            return false;
        };
        if sub.policy == Policy::Lossless {
            // Flag first, then look again: the reader that makes room
            // either is seen here or sees the flag and wakes us.
            sub.ring().flags.fetch_or(WAITING, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if self.has_room(sub) {
                return true;
            }
        }
        if !self.tx_wakers.iter().any(|x| x.will_wake(w)) {
            self.tx_wakers.push(w.clone());
        }
        false
    }

    /// Marks closed and discards what is queued; returns wakers to wake.
    pub(crate) fn close(&mut self, sub: &SubShared<T>, discard: bool) -> SmallVec<[Waker; 4]> {
        self.closed = true;
        if discard {
            // (A ring is discarded only once its last member left.)
            debug_assert!(self.readers.is_empty());
            if let Some(ring) = &sub.ring {
                ring.clear();
            }
            self.discarded += (self.queue.len() + self.latest_order.len()) as u64;
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

    /// After a member read or left: clears backpressure if the ring drained
    /// to its low watermark, and hands waiting publishers the room there is.
    pub(crate) fn settle(&mut self, sub: &SubShared<T>) -> SmallVec<[Waker; 2]> {
        let ring = sub.ring();
        let tail = ring.tail();
        let slowest = self.refresh_slowest(sub);
        if self.pressured && tail - slowest <= sub.low as u64 {
            self.pressured = false;
            sub.pressure.lower();
            ring.flags.fetch_and(!PRESSURED, Ordering::Relaxed);
        }
        let mut wake = SmallVec::new();
        if !self.tx_wakers.is_empty()
            && (sub.policy != Policy::Lossless || tail - slowest < sub.capacity as u64)
        {
            wake.extend(self.tx_wakers.drain(..));
        }
        if self.tx_wakers.is_empty() {
            ring.flags.fetch_and(!WAITING, Ordering::Relaxed);
        }
        wake
    }

    /// Adds a ring member reading from now on.
    pub(crate) fn join(&mut self, sub: &SubShared<T>, id: u64, name: Arc<str>) -> Reader {
        let tail = sub.ring().tail();
        let cell = Arc::new(MemberCell::new(tail));
        self.readers.push(Member {
            id,
            name,
            cell: cell.clone(),
            joined: tail,
            discarded: 0,
            blocked_ns: 0,
            peak: 0,
            waker: None,
        });
        Reader {
            cell,
            cursor: tail,
            known_tail: tail,
            peak: 0,
        }
    }

    /// Removes ring member `id`: what it had not read is counted as
    /// discarded and released (what it lost stays counted as dropped).
    /// Returns the member (for its counters) and publishers to wake.
    pub(crate) fn leave(
        &mut self,
        sub: &SubShared<T>,
        id: u64,
    ) -> (Option<Member>, SmallVec<[Waker; 2]>) {
        let Some(i) = self.readers.iter().position(|m| m.id == id) else {
            return (None, SmallVec::new());
        };
        let mut m = self.readers.swap_remove(i);
        if m.waker.take().is_some() {
            self.parked = self.parked.saturating_sub(1);
        }
        let ring = sub.ring();
        let tail = ring.tail();
        // (Never behind a lossy ring's oldest event: see `make_way`.)
        let cursor = m.cursor();
        for p in cursor..tail {
            ring.release(p);
        }
        m.discarded += tail - cursor;
        m.cell.cursor.store(tail, Ordering::Release);
        let wake = self.settle(sub);
        (Some(m), wake)
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

    pub(crate) fn ring(&self) -> &Ring<T> {
        self.ring
            .as_ref()
            .expect("lossless and lossy subscribers have a ring")
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
    /// Lossless and lossy: its place in the ring.
    pub(crate) reader: Option<Reader>,
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

    /// Reads the next event at this member's cursor, without the
    /// subscriber's lock (see [`ring`](crate::ring)); takes it only to park.
    fn poll_ring(
        &mut self,
        mut cx: Option<&mut Context<'_>>,
    ) -> Poll<Result<Arc<Envelope<T>>, RecvError>> {
        let sub = &*self.shared;
        let ring = sub.ring();
        let Some(r) = self.reader.as_mut() else {
            return Poll::Ready(Err(RecvError::Closed));
        };
        loop {
            if r.cursor == r.known_tail {
                let tail = ring.tail();
                // (A lossy member moved past events may find its cursor
                // beyond the end it can see yet.)
                if tail <= r.cursor {
                    if let Some(cx) = cx.as_deref_mut() {
                        if self.yielded < SPIN_POLLS {
                            // Found nothing: yield before parking. Under load
                            // the publisher refills the ring meanwhile, and
                            // the task (and its worker thread) skip a
                            // park/unpark round trip, which costs far more
                            // than one extra poll.
                            self.yielded += 1;
                            yield_now(cx);
                            return Poll::Pending;
                        }
                    }
                    let mut st = sub.state.lock();
                    if ring.tail() > r.cursor {
                        continue;
                    }
                    if st.closed {
                        return Poll::Ready(Err(RecvError::Closed));
                    }
                    let Some(i) = st.readers.iter().position(|m| m.id == self.member) else {
                        return Poll::Ready(Err(RecvError::Closed));
                    };
                    if let Some(cx) = cx {
                        self.yielded = 0;
                        let st = &mut *st;
                        match &mut st.readers[i].waker {
                            Some(w) => w.clone_from(cx.waker()),
                            w @ None => {
                                *w = Some(cx.waker().clone());
                                st.parked += 1;
                            }
                        }
                    }
                    return Poll::Pending;
                }
                r.known_tail = tail;
                let depth = tail - r.cursor.max(ring.oldest(tail));
                if depth > r.peak {
                    r.peak = depth;
                    r.cell.peak.store(depth, Ordering::Relaxed);
                }
            }
            let pos = r.cursor;
            let lossless = sub.policy == Policy::Lossless;
            if !lossless {
                // Claim the slot, unless the publisher moved this member
                // past it (and others after it) first. `Release` too: a
                // publisher that reads the claim is after this member's
                // read of the slot before.
                if let Err(now) = r.cell.cursor.compare_exchange(
                    pos,
                    pos | BUSY,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    debug_assert!(now > pos && now & BUSY == 0);
                    r.cursor = now;
                    // Not an end it read: if it is past the end it knew, it
                    // reads the end again before reading on.
                    r.known_tail = r.known_tail.max(now);
                    return Poll::Ready(Err(RecvError::Lagged(now - pos)));
                }
            }
            let env = ring.read(pos);
            r.cursor = pos + 1;
            // Moved on (and a lossy member's claim let go).
            r.cell.cursor.store(pos + 1, Ordering::Release);
            self.yielded = 0;
            if lossless {
                // Then look: a publisher waiting for room (or backpressure
                // to clear) either saw the cursor or flagged it (see
                // `State::wait_for_room`).
                fence(Ordering::SeqCst);
                let flags = ring.flags.load(Ordering::Relaxed);
                if flags != 0 {
                    settle_after_read(sub, flags, pos);
                }
            }
            return Poll::Ready(Ok(env));
        }
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
                return SubscriberStats::of_member(&self.shared, &st, m);
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

/// A lossless member read `pos` while `flags` were set: if it may be the
/// member a waiting publisher (or raised backpressure) depends on, it
/// settles the ring under the lock. Only the slowest members can be: a
/// publisher waits on members that have the whole capacity waiting, and
/// backpressure clears when the slowest one is down to the low watermark.
fn settle_after_read<T>(sub: &SubShared<T>, flags: u32, pos: u64) {
    let ring = sub.ring();
    let before = ring.tail() - pos;
    let room = flags & WAITING != 0 && before >= ring.capacity();
    let low = flags & PRESSURED != 0 && before - 1 <= sub.low as u64;
    if room || low {
        let wake = sub.state.lock().settle(sub);
        wake.into_iter().for_each(Waker::wake);
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

    /// Events waiting for this subscriber.
    pub fn len(&self) -> usize {
        let queued = match (&self.reader, &self.shared.policy) {
            (Some(r), _) => {
                let ring = self.shared.ring();
                let tail = ring.tail();
                tail.saturating_sub(r.cursor.max(ring.oldest(tail))) as usize
            }
            (None, Policy::Lossless | Policy::Lossy) => 0,
            _ => self.shared.state.lock().depth(&self.shared),
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
                let (gone, w) = st.leave(sub, self.member);
                wake.extend(w);
                lost = gone.as_ref().map_or(0, |m| m.discarded);
                // Its counters stay in the bus totals.
                if let (Some(m), Some(reg)) = (gone, registry.as_mut()) {
                    reg.retired.delivered += sub.ring().tail() - m.joined;
                    reg.retired.dropped += m.dropped();
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
