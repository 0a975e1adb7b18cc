//! Delivery: an event, wrapped, goes to every target of its route or to
//! none. A publish tries at once ([`Bus::deliver_now`]); one that finds a
//! lossless target full waits for room ([`Bus::deliver_when_room`]).

use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use super::route::Route;
use super::{Bus, BusInner};
use crate::envelope::Envelope;
use crate::error::PublishError;
use crate::event_id::EventId;
use crate::queue::{add_blocked, commit, member_name, Full, Targets};

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

/// A publish that found a lossless target full: what it needs to wait for
/// room and then commit.
pub(super) struct FoundFull<'r, T> {
    targets: Targets<'r, T>,
    env: Arc<Envelope<T>>,
    full: Full,
}

impl<T> FoundFull<'_, T> {
    /// For a publish that does not wait: the event back in
    /// [`PublishError::Full`], naming the subscriber that had no room
    /// (counted as a cancelled publish).
    pub(super) fn refuse(self, inner: &BusInner<T>) -> PublishError<T> {
        let FoundFull { targets, env, full } = self;
        let subscriber = (0..targets.len())
            .map(|i| targets.get(i))
            .find(|s| s.id == full.sub)
            .map(|s| member_name(s, full.member));
        drop(targets);
        inner.cancelled.fetch_add(1, Ordering::Relaxed);
        let topic = env.topic.to_string();
        PublishError::Full {
            subscriber: subscriber.unwrap_or_else(|| "?".into()),
            topic,
            event: unwrap_env(env),
        }
    }
}

/// `bus.deliver(route, env).await` written out in the calling future: a
/// publish that finds room (most do) then makes no future of its own for
/// the delivery, one fewer to set up and poll per event (measurably
/// faster with one subscriber, see docs/benchmarks.md).
macro_rules! deliver_inline {
    ($bus:expr, $route:expr, $env:expr) => {{
        // Take part in tokio's cooperative scheduling: a publisher loop
        // that never has to wait still yields every so often, so
        // subscribers on the same worker get to run instead of lagging.
        if $crate::bus::deliver::budget_due($route) {
            $crate::bus::deliver::take_budget($route).await;
        }
        match $bus.deliver_now($route, $env) {
            Ok(done) => done,
            Err(full) => $bus.deliver_when_room($route, full).await,
        }
    }};
}
pub(super) use deliver_inline;

impl<T: Send + Sync + 'static> Bus<T> {
    /// Delivers a wrapped event to its route's targets, waiting for room
    /// where a lossless one is full. (The publish paths that matter most
    /// inline its two steps: one future fewer to make and poll.)
    pub(super) async fn deliver(
        &self,
        route: &Route<T>,
        env: Arc<Envelope<T>>,
    ) -> Result<Receipt, PublishError<T>> {
        deliver_inline!(self, route, env)
    }

    /// A publish's first try, without waiting: most find room and commit at
    /// once; one that finds a lossless target full comes back (`Err`) to
    /// wait for room with [`deliver_when_room`](Self::deliver_when_room).
    /// (Apart from the waiting, so that the usual publish makes no future
    /// of its own for it.)
    #[inline]
    pub(super) fn deliver_now<'r>(
        &self,
        route: &'r Route<T>,
        env: Arc<Envelope<T>>,
    ) -> Result<Result<Receipt, PublishError<T>>, FoundFull<'r, T>> {
        let targets = route.targets(&env);
        let stamp = (env.seq, env.id);
        let mut env = Some(env);
        let result = if self.inner.closed.load(Ordering::Acquire) {
            Err(())
        } else {
            match commit(&targets, &mut env, None) {
                // Delivered to the whole route: nothing for `finish` to
                // count or hand back (the usual outcome, settled here).
                Ok(n) if n > 0 && matches!(targets, Targets::All(_)) => {
                    return Ok(Ok(self.receipt(stamp.0, stamp.1, n)));
                }
                Ok(n) => Ok(n),
                Err(full) => {
                    let env = env.expect("an undelivered event is handed back");
                    return Err(FoundFull { targets, env, full });
                }
            }
        };
        Ok(self.finish(route, targets, result, env, stamp))
    }

    /// Waits for room where [`deliver_now`](Self::deliver_now) found none,
    /// then commits.
    pub(super) async fn deliver_when_room(
        &self,
        route: &Route<T>,
        found: FoundFull<'_, T>,
    ) -> Result<Receipt, PublishError<T>> {
        let FoundFull { targets, env, full } = found;
        let stamp = (env.seq, env.id);
        let mut env = Some(env);
        let result = self.wait_for_room(&targets, &mut env, full).await;
        self.finish(route, targets, result, env, stamp)
    }

    /// A publish's outcome: `result` is how many subscribers got it (`Err`:
    /// the bus closed first), `env` the event if nobody took it, `stamp`
    /// its sequence number and id.
    fn finish(
        &self,
        route: &Route<T>,
        targets: Targets<'_, T>,
        result: Result<usize, ()>,
        env: Option<Arc<Envelope<T>>>,
        (seq, id): (u64, EventId),
    ) -> Result<Receipt, PublishError<T>> {
        if result.is_ok() {
            route.count_filtered(&targets);
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
            (Ok(n), _) => Ok(self.receipt(seq, id, n)),
            (Err(()), Some(env)) => Err(PublishError::Closed {
                event: unwrap_env(env),
            }),
            (Err(()), None) => unreachable!("an event is delivered or handed back"),
        }
    }

    /// A publish found `full` without room: commits `env` once every target
    /// has room (`Err` if the bus closes first), charging the time waited
    /// to the subscriber it waited on, and counting the publish as
    /// cancelled if its future is dropped meanwhile.
    async fn wait_for_room(
        &self,
        targets: &Targets<'_, T>,
        env: &mut Option<Arc<Envelope<T>>>,
        full: Full,
    ) -> Result<usize, ()> {
        let mut waiting = (full, Instant::now());
        let mut done = false;
        let guard = CancelGuard {
            inner: &self.inner,
            done: &mut done,
        };
        let result = poll_fn(|cx| {
            if self.inner.closed.load(Ordering::Acquire) {
                return Poll::Ready(Err(()));
            }
            match commit(targets, env, Some(cx.waker())) {
                Ok(n) => Poll::Ready(Ok(n)),
                Err(full) => {
                    // Waiting on `full`; account the time to it.
                    let (id, since) = waiting;
                    if id != full {
                        add_blocked(targets, id, since.elapsed());
                        waiting = (full, Instant::now());
                    }
                    Poll::Pending
                }
            }
        })
        .await;
        *guard.done = true;
        drop(guard);
        let (id, since) = waiting;
        add_blocked(targets, id, since.elapsed());
        result
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

/// Publishes per unit of tokio's budget on a topic whose only subscriber
/// is a lossless one with a single reader (every other publish takes a
/// unit, except to a lone lossy reader: see [`lossy_publishes_per_unit`]).
///
/// Such a publisher yields when that reader is full anyway. With a unit
/// per publish it yielded every 128 publishes (tokio's budget) instead,
/// and each such yield put it in its worker's run queue, where the other
/// worker stole it: publisher and reader then ran side by side on two
/// cores, passing every event, its slot and the ring's end between their
/// caches. With a unit per eight publishes, at the default capacity (1024)
/// the publisher fills the ring before its budget runs out and waits; the
/// reader, woken onto the publisher's worker, reads the batch there, and
/// the two take turns on one core at about two-thirds of the CPU per
/// delivery (`bench fanout --subscribers 1`, see docs/benchmarks.md). A
/// loop on such a topic still yields at least every 1024 publishes.
///
/// Not with more readers: where a slow one shares the ring with fast ones
/// (`bench fanout --work format`), publishers that seldom yield keep being
/// woken onto the slow reader's worker, where they wait for it to stop,
/// and that case lost about a tenth of its events per second.
const LONE_READER_PUBLISHES_PER_UNIT: u8 = 8;

/// The units of budget tokio gives a task each time it is polled: a task
/// that takes a unit per `k` publishes yields after `128 * k` of them.
const TOKIO_BUDGET: u64 = 128;

/// Publishes per unit of tokio's budget to a lone lossy reader whose ring
/// holds `capacity` events: as many as keep the publisher's run between
/// two yields within half the ring (at most
/// [`LONE_READER_PUBLISHES_PER_UNIT`]); 4 at the default capacity, so it
/// yields every 512 publishes.
///
/// A lossy publisher never waits, so its yields are all that let its
/// reader run on the same worker, and a run longer than the ring would
/// overwrite what that reader had not read yet. Within half the ring, a
/// reader that runs at each yield loses nothing, and the two take turns
/// on one worker as a lone lossless reader and its publisher do; with a
/// unit per publish they yield every 128 publishes and run side by side
/// on two cores instead (`bench fanout --subscribers 1 --policy lossy`:
/// about four-fifths of the CPU per delivery, see docs/benchmarks.md).
/// At a unit per eight publishes (a run of 1024, the whole ring) the
/// reader lagged by 400 to 3,000 events in every million. Each yield hands
/// the publisher to the reader (see [`take_budget`]): it runs again when
/// the reader has read the run and parked.
#[inline]
fn lossy_publishes_per_unit(capacity: u64) -> u8 {
    (capacity / 2 / TOKIO_BUDGET).clamp(1, u64::from(LONE_READER_PUBLISHES_PER_UNIT)) as u8
}

thread_local! {
    /// Publishes by this thread to lone readers, counted up to the number
    /// that takes a unit of budget.
    static TO_LONE_READERS: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// Whether a publish on `route` takes a unit of tokio's budget: every one
/// does, except to a lone reader (see [`LONE_READER_PUBLISHES_PER_UNIT`]
/// and [`lossy_publishes_per_unit`]).
#[inline]
pub(super) fn budget_due<T>(route: &Route<T>) -> bool {
    let Some(ring) = route.lone_reader_ring() else {
        return true;
    };
    let per_unit = if ring.lossless() {
        LONE_READER_PUBLISHES_PER_UNIT
    } else {
        lossy_publishes_per_unit(ring.capacity())
    };
    TO_LONE_READERS.with(|n| {
        let next = n.get() + 1;
        let due = next >= per_unit;
        n.set(if due { 0 } else { next });
        due
    })
}

/// Takes one unit of the task's tokio budget for a publish on `route`,
/// yielding first if it is spent: `tokio::task::consume_budget` without its
/// bookkeeping, and with a hand-off to a lone ring member.
///
/// A spent budget makes tokio wake the task later (deferred: once its
/// worker has run what it has queued and looked for work on the other
/// workers). A worker that found work while looking wakes another worker
/// to look too, so each such yield woke the other worker for nothing; and
/// a lone lossy reader's publisher yields every few hundred publishes. On
/// a route to a lone ring member the publisher also leaves its waker with
/// the ring, and the member wakes it when it parks, having read what it
/// was woken for: the publisher runs next on that worker, which never ran
/// out of work. tokio's own wake-up still comes, so a member that does not
/// park (busy elsewhere) holds the publisher no longer than a yield does.
#[inline]
pub(super) async fn take_budget<T>(route: &Route<T>) {
    poll_fn(|cx| match tokio::task::coop::poll_proceed(cx) {
        Poll::Ready(r) => {
            r.made_progress();
            Poll::Ready(())
        }
        Poll::Pending => {
            route.hand_off(cx.waker());
            Poll::Pending
        }
    })
    .await
}

pub(super) fn unwrap_env<T>(env: Arc<Envelope<T>>) -> T {
    match Arc::try_unwrap(env) {
        Ok(e) => e.payload,
        Err(_) => unreachable!("an undelivered envelope has a single owner"),
    }
}
