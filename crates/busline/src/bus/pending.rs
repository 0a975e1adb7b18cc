//! Requests waiting for their reply, and the one task per bus that times
//! them out.
//!
//! A request registers its reply inbox's number with a deadline. The reply
//! takes the registration and sends the reply through it; a requester that
//! gives up (its future dropped) takes it back. Deadlines are kept in a
//! heap beside the registrations, and a sweeper task sleeps until the
//! earliest: when it wakes it answers every request that is due with
//! "timed out". A request that ends leaves its deadline in the heap; the
//! heap drops such entries as they come to its top, and all of them once
//! they outnumber the requests still waiting (so it never holds more than
//! about twice those, and the dropping costs a few steps per request).
//!
//! So a request costs a slot (see `waiting`) and a heap entry under one
//! lock, not a timer of its own: the sweeper's timer is moved only when a
//! request comes with an earlier deadline than the one it sleeps until,
//! which requests with the same timeout never do (its next wake-up was set
//! by an older request).
//! A timeout fires no earlier than its deadline and, like tokio's timers,
//! within about a millisecond after it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};

use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::waiting::Waiting;
use super::BusInner;
use crate::envelope::Envelope;

/// What a requester is sent: the reply, or `None` when its deadline passed.
pub(super) type Answer<T> = Option<Arc<Envelope<T>>>;

/// The requests of one bus waiting for a reply.
pub(super) struct Pending<T> {
    /// By reply inbox number: where the answer goes.
    waiting: Waiting<oneshot::Sender<Answer<T>>>,
    /// Their deadlines, earliest on top, with those of requests that ended
    /// since (see the module docs).
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// When the sweeper wakes next, if it sleeps on a deadline.
    wake_at: Option<Instant>,
    /// A sweeper task is running (it clears this when it ends).
    sweeping: bool,
    /// Wakes the sweeper for an earlier deadline, or to end.
    notify: Arc<Notify>,
}

impl<T> Pending<T> {
    pub(super) fn new() -> Self {
        Pending {
            waiting: Waiting::new(),
            deadlines: BinaryHeap::new(),
            wake_at: None,
            sweeping: false,
            notify: Arc::new(Notify::new()),
        }
    }

    /// Takes the registration of inbox `n`: the reply's way to its requester.
    pub(super) fn take(&mut self, n: u64) -> Option<oneshot::Sender<Answer<T>>> {
        self.waiting.remove(n)
    }

    /// Drops every registration (the bus closed: requesters see it closed)
    /// and ends the sweeper.
    pub(super) fn close(&mut self) {
        self.waiting.clear();
        self.deadlines.clear();
        self.notify.notify_one();
    }

    /// Answers every request due by `now` with "timed out"; returns when
    /// the sweeper wakes next: the earliest deadline still waiting or, when
    /// none is, the latest deadline of an ended request that is still to
    /// come (see [`sweep`]), if any.
    fn expire(&mut self, now: Instant) -> Option<Instant> {
        let mut ended = None;
        while let Some(&Reverse((deadline, n))) = self.deadlines.peek() {
            let waiting = self.waiting.contains(n);
            if waiting && deadline > now {
                return Some(deadline);
            }
            self.deadlines.pop();
            match self.waiting.remove(n) {
                Some(tx) => drop(tx.send(None)),
                None if deadline > now => ended = Some(deadline),
                None => {}
            }
        }
        ended
    }

    /// Adds a deadline; first drops those of ended requests once they
    /// outnumber the waiting ones.
    fn push_deadline(&mut self, deadline: Instant, n: u64) {
        if self.deadlines.len() >= 2 * self.waiting.len() + 64 {
            let waiting = &self.waiting;
            self.deadlines
                .retain(|Reverse((_, n))| waiting.contains(*n));
        }
        self.deadlines.push(Reverse((deadline, n)));
    }
}

impl<T: Send + Sync + 'static> BusInner<T> {
    /// Registers a request on inbox `n`, due at `deadline`; its answer comes
    /// on the returned receiver. Starts the bus's sweeper if none runs (in
    /// the caller's tokio runtime) and moves its wake-up earlier if needed.
    pub(super) fn register_request(
        self: &Arc<Self>,
        n: u64,
        deadline: Instant,
    ) -> oneshot::Receiver<Answer<T>> {
        let (tx, rx) = oneshot::channel();
        let mut p = self.pending.lock();
        p.waiting.insert(n, tx);
        p.push_deadline(deadline, n);
        if !p.sweeping {
            // Made here, so that a runtime without timers fails the
            // request (as a timer of its own would), not the sweeper.
            let timer = tokio::time::sleep_until(deadline);
            p.sweeping = true;
            p.wake_at = Some(deadline);
            tokio::spawn(sweep(Arc::downgrade(self), p.notify.clone(), timer));
        } else if p.wake_at.is_none_or(|w| deadline < w) {
            p.wake_at = Some(deadline);
            p.notify.notify_one();
        }
        rx
    }
}

/// The sweeper: sleeps until the earliest deadline (or until told of an
/// earlier one), then times out what is due. It ends when the bus is gone
/// or closed, and when its runtime shuts down; the next request starts
/// another.
///
/// When it finds only ended requests, it sleeps on until the latest of
/// their deadlines that is still to come: a request made since, with the
/// same timeout, is due later, so it need not be woken for it (it finds
/// that request when it wakes). Requests answered one after another then
/// wake it about once per timeout, not once each.
async fn sweep<T: Send + Sync + 'static>(
    bus: Weak<BusInner<T>>,
    notify: Arc<Notify>,
    timer: tokio::time::Sleep,
) {
    let _running = Running(bus.clone());
    let mut timer = std::pin::pin!(timer);
    loop {
        let next = {
            let Some(inner) = bus.upgrade() else { return };
            if inner.closed.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            let mut p = inner.pending.lock();
            let next = p.expire(Instant::now());
            p.wake_at = next;
            next
        };
        match next {
            Some(at) => {
                timer.as_mut().reset(at);
                tokio::select! {
                    _ = &mut timer => {}
                    _ = notify.notified() => {}
                }
            }
            None => notify.notified().await,
        }
    }
}

/// Marks the sweeper gone when its task ends or is dropped with its runtime.
struct Running<T>(Weak<BusInner<T>>);

impl<T> Drop for Running<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            let mut p = inner.pending.lock();
            p.sweeping = false;
            p.wake_at = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use crate::Bus;

    /// Requests answered one after another leave the heap no bigger than
    /// about twice the waiting ones, and a request waiting all along keeps
    /// its deadline through every clean-up.
    #[tokio::test(start_paused = true)]
    async fn ended_requests_do_not_pile_up_and_a_waiting_one_keeps_its_deadline() {
        let bus = Bus::<u32>::new();
        let inner = &bus.inner;
        let start = Instant::now();
        let long = inner.register_request(0, start + Duration::from_secs(60));
        for n in 1..10_000 {
            let _answer = inner.register_request(n, start + Duration::from_secs(10));
            let mut p = inner.pending.lock();
            assert!(
                p.deadlines.len() <= 2 * p.waiting.len() + 64,
                "{}",
                p.deadlines.len()
            );
            assert!(p.take(n).is_some());
        }
        assert_eq!(inner.pending.lock().waiting.len(), 1);
        // Bounded, so a deadline lost from the heap fails the test.
        let answer = tokio::time::timeout(Duration::from_secs(3600), long).await;
        assert!(answer.expect("never timed out").unwrap().is_none());
        assert_eq!(start.elapsed(), Duration::from_secs(60));
        assert!(inner.pending.lock().deadlines.is_empty());
    }

    /// A sweeper that finds only answered requests keeps its wake-up at the
    /// latest of their deadlines, so the next request with the same timeout
    /// does not wake it; that request still times out on time.
    #[tokio::test(start_paused = true)]
    async fn answered_requests_leave_the_sweeper_asleep_until_their_deadline() {
        let bus = Bus::<u32>::new();
        let inner = &bus.inner;
        let start = Instant::now();
        let first = start + Duration::from_secs(10);
        drop(inner.register_request(0, first));
        assert!(inner.pending.lock().take(0).is_some());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // The sweeper ran and found only the answered request.
        assert!(inner.pending.lock().deadlines.is_empty());
        assert_eq!(inner.pending.lock().wake_at, Some(first));
        let second = start + Duration::from_secs(11);
        let answer = inner.register_request(1, second);
        assert_eq!(inner.pending.lock().wake_at, Some(first));
        let answer = tokio::time::timeout(Duration::from_secs(3600), answer).await;
        assert!(answer.expect("never timed out").unwrap().is_none());
        assert_eq!(start.elapsed(), Duration::from_secs(11));
    }
}
