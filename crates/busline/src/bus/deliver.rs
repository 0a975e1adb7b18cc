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
        if let Some(lone) = $crate::bus::budget::budget_due($route) {
            $crate::bus::budget::take_budget($route, lone).await;
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

pub(super) fn unwrap_env<T>(env: Arc<Envelope<T>>) -> T {
    match Arc::try_unwrap(env) {
        Ok(e) => e.payload,
        Err(_) => unreachable!("an undelivered envelope has a single owner"),
    }
}
