//! Receiving: a ring member reads at its own cursor without the lock; a
//! queue group member and a `latest` subscriber take from the queue under it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use smallvec::SmallVec;

use super::{Rare, Subscription};
use crate::envelope::Envelope;
use crate::error::RecvError;
use crate::queue::ring::{BUSY, PRESSURED, WAITING};
use crate::queue::{Queue, SubShared};
use crate::sync::fence;

/// Polls that find nothing and yield (with tokio's deferred `yield_now`)
/// before the subscriber parks (see `poll_ring`). Parking and being woken
/// costs far more than a poll, more so when the cores are busy: under load
/// the publisher refills the ring while the subscriber yields, and the
/// park/unpark round trip is skipped. With none, `busline bench fanout`
/// shows twice the context switches; more than two buys nothing.
///
/// A ring member yields only while events come in streaks (see
/// [`STREAK`]): one answering requests one at a time would find nothing
/// after its yields either, and a yield costs its worker a poll of tokio's
/// drivers when it has nothing else to run.
///
/// And only beside other members. A ring's lone member parks at once: its
/// publisher wakes it onto the publisher's own worker, where it reads the
/// next run of events from that core's cache while the publisher waits
/// for room or yields. A yield instead puts the member in its worker's
/// run queue, wakes the other worker to steal it, and costs an empty poll
/// of tokio's drivers; the member and its publisher then run side by side
/// on two cores, passing every event between their caches
/// (`bench fanout --subscribers 1`, parking at once: 170–210 CPU ns a
/// delivery instead of 230–260 lossy, 130–140 instead of 150–160
/// lossless; with 4 members, where the siblings fill each other's yields,
/// it cost a tenth to a fifth of the throughput; docs/benchmarks.md).
const SPIN_POLLS: u8 = 2;

/// Events a ring member must have read since it last found none to yield,
/// not park, when it finds none again: more than one came while it last
/// waited, so more are likely to come while it yields.
///
/// Only events that are not requests count; reading a request starts the
/// count again. A requester waits for its answer, so all that can come
/// while the member yields is the next request of a requester it has just
/// answered. The yield then costs more than it saves: tokio wakes a
/// yielded task only once its worker has nothing else to run, after
/// polling its drivers, and puts it where the other worker is woken to
/// steal it, so the member and its requesters keep changing threads.
/// Parked, the member is woken by the next request on the requester's
/// worker. With 8 or 16 concurrent requesters, `busline bench request`
/// answers 1.4–1.7 times as many requests a second (docs/benchmarks.md).
const STREAK: u8 = 2;

/// Lets other tasks run before this one is polled again: tokio's
/// `yield_now`, which defers the wake-up until the worker has run the other
/// ready tasks (a plain self-wake could poll this task again at once).
fn yield_now(cx: &mut Context<'_>) {
    let mut y = std::pin::pin!(tokio::task::yield_now());
    let _ = std::future::Future::poll(y.as_mut(), cx);
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
    pub fn recv(&mut self) -> impl Future<Output = Result<Arc<Envelope<T>>, RecvError>> + '_ {
        Recv {
            sub: self,
            armed: false,
        }
    }

    /// Receives an event if one is ready: `Ok(None)` when none is.
    pub fn try_recv(&mut self) -> Result<Option<Arc<Envelope<T>>>, RecvError> {
        match self.poll_noted(None) {
            Poll::Ready(r) => r.map(Some),
            Poll::Pending => Ok(None),
        }
    }

    /// Polls for the next event (the building block of `recv` and `Stream`).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Arc<Envelope<T>>, RecvError>> {
        self.poll_noted(Some(cx))
    }

    /// Takes every event already queued (without waiting), e.g. to finish
    /// them during shutdown. Stops at the first error (lag or close).
    pub fn drain(&mut self) -> Vec<Arc<Envelope<T>>> {
        std::iter::from_fn(|| self.try_recv().ok().flatten()).collect()
    }

    /// A ring member with nothing to replay, note or hand out from a batch
    /// (most subscriptions) reads its ring straight away; the others go
    /// through [`poll_noted_slow`](Self::poll_noted_slow).
    #[inline(always)]
    fn poll_noted(
        &mut self,
        cx: Option<&mut Context<'_>>,
    ) -> Poll<Result<Arc<Envelope<T>>, RecvError>> {
        if self.shared.ring.is_some() && self.rare.as_deref().is_none_or(Rare::is_plain) {
            if cx.is_none() {
                self.yielded = 0;
            }
            return self.poll_ring(cx);
        }
        self.poll_noted_slow(cx)
    }

    /// A module's subscription records what it returns as the event being
    /// handled, and that nothing is while it waits (see `bus::stamp`). One
    /// with nothing to replay (a module's usual subscription) reads its
    /// live queue straight away.
    #[inline(never)]
    fn poll_noted_slow(
        &mut self,
        cx: Option<&mut Context<'_>>,
    ) -> Poll<Result<Arc<Envelope<T>>, RecvError>> {
        let r = if self.rare.as_deref().is_some_and(Rare::reads_live) {
            self.poll_live(cx)
        } else {
            self.poll_inner(cx)
        };
        if let Some(h) = self.rare.as_ref().and_then(|r| r.handling.as_ref()) {
            h.set(match &r {
                Poll::Ready(Ok(env)) => Some(&**env),
                _ => None,
            });
        }
        r
    }

    pub(super) fn poll_live(
        &mut self,
        cx: Option<&mut Context<'_>>,
    ) -> Poll<Result<Arc<Envelope<T>>, RecvError>> {
        if let Some(e) = self.rare.as_mut().and_then(|r| r.local.pop_front()) {
            return Poll::Ready(Ok(e));
        }
        if cx.is_none() {
            self.yielded = 0;
        }
        match self.shared.ring {
            Some(_) => self.poll_ring(cx),
            None => self.poll_queue(cx),
        }
    }

    /// Reads the next event at this member's cursor, without the
    /// subscriber's lock (see `queue::ring`); takes it only to park.
    #[inline(always)]
    fn poll_ring(
        &mut self,
        mut cx: Option<&mut Context<'_>>,
    ) -> Poll<Result<Arc<Envelope<T>>, RecvError>> {
        let sub = &*self.shared;
        let ring = sub.ring();
        loop {
            let Some(r) = self.reader.as_mut() else {
                return Poll::Ready(Err(RecvError::Closed));
            };
            if r.cursor == r.known_tail {
                let tail = ring.tail();
                // (A lossy member moved past events may find its cursor
                // beyond the end it can see yet.)
                if tail <= r.cursor {
                    let cursor = r.cursor;
                    let waits = Waits {
                        yielded: &mut self.yielded,
                        streak: &mut self.streak,
                    };
                    match wait_ring(sub, self.member, waits, cx.as_deref_mut(), cursor) {
                        Some(p) => return p,
                        None => continue,
                    }
                }
                r.known_tail = tail;
                let depth = tail - r.cursor.max(ring.oldest(tail));
                if depth > r.peak {
                    r.peak = depth;
                    r.cell.get(ring).peak.store(depth, Ordering::Relaxed);
                }
            }
            let pos = r.cursor;
            let lossless = ring.lossless();
            let cell = r.cell.get(ring);
            if !lossless {
                // Claim the slot, unless the publisher moved this member
                // past it (and others after it) first. `Release` too: a
                // publisher that reads the claim is after this member's
                // read of the slot before.
                if let Err(now) = cell.cursor.compare_exchange(
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
            cell.cursor.store(pos + 1, Ordering::Release);
            self.yielded = 0;
            self.streak = match env.reply_to() {
                Some(_) => 0,
                None => self.streak.saturating_add(1),
            };
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
        // A keyed group replaying fills this member's queue from the store.
        let mut others: SmallVec<[Waker; 3]> = SmallVec::new();
        let got = match &mut st.queue {
            Queue::Group(g) => {
                if let Some(log) = g.queue.log_mut() {
                    let given = match log.pump(self.member, sub) {
                        Ok(given) => given,
                        Err(e) => return Poll::Ready(Err(RecvError::Store(e))),
                    };
                    others.extend(given.into_iter().filter_map(|m| g.rx.take(m)));
                }
                // (Only a keyed group's member takes more than one.)
                let mut none = VecDeque::new();
                let more = match sub.key {
                    Some(_) => &mut self.rare.get_or_insert_with(Default::default).local,
                    None => &mut none,
                };
                g.queue.take(self.member, more, KEYED_BATCH)
            }
            Queue::Latest(l) => l.take(),
            Queue::Ring(_) => unreachable!("a ring is read without the lock"),
        };
        if st.pressured && st.depth(sub) <= sub.low {
            st.pressured = false;
            sub.pressure.lower();
        }
        if let Some(e) = got {
            self.yielded = 0;
            // Waiting publishers get the room as soon as there is some, so a
            // later publisher (`try_publish`) cannot take it first.
            let mut wake = others;
            if !st.tx_wakers.is_empty() && st.has_room(sub) {
                wake.extend(st.tx_wakers.drain(..));
            }
            let plain = sub.is_plain_group() && st.depth(sub) > 0;
            let rx = st.receivers_mut().expect("a queue has receivers");
            rx.received += 1;
            if plain {
                // More is waiting: pass the word on to another idle member.
                wake.extend(rx.take_first());
            }
            drop(st);
            wake.into_iter().for_each(Waker::wake);
            return Poll::Ready(Ok(e));
        }
        others.into_iter().for_each(Waker::wake);
        if st.closed {
            return Poll::Ready(Err(RecvError::Closed));
        }
        if let Some(cx) = cx {
            if sub.key.is_some() && self.yielded < SPIN_POLLS {
                // A keyed member found nothing of its own: yield before
                // parking, as ring readers do (its publisher often refills
                // its queue meanwhile, saving a park/unpark round trip).
                drop(st);
                self.yielded += 1;
                yield_now(cx);
                return Poll::Pending;
            }
            self.yielded = 0;
            let member = self.member;
            let rx = st.receivers_mut().expect("a queue has receivers");
            match rx.wakers.iter_mut().find(|(m, _)| *m == member) {
                Some((_, w)) => w.clone_from(cx.waker()),
                None => rx.wakers.push((member, cx.waker().clone())),
            }
        }
        Poll::Pending
    }
}

/// A ring member's counts of how it waited (fields of its
/// [`Subscription`]).
struct Waits<'a> {
    yielded: &'a mut u8,
    streak: &'a mut u8,
}

/// A ring member (`member`) found nothing at `cursor`: yields (see
/// [`SPIN_POLLS`]) or parks, registering its waker under the subscriber's
/// lock; parking, it wakes the publisher that yielded to it, if one did
/// (see `bus::budget::take_budget`). `None` if an event came meanwhile
/// (read on), otherwise what to return.
#[cold]
fn wait_ring<T>(
    sub: &SubShared<T>,
    member: u64,
    waits: Waits<'_>,
    mut cx: Option<&mut Context<'_>>,
    cursor: u64,
) -> Option<Poll<Result<Arc<Envelope<T>>, RecvError>>> {
    let ring = sub.ring();
    if let Some(cx) = cx.as_deref_mut() {
        let streaming = *waits.yielded > 0 || *waits.streak >= STREAK;
        *waits.streak = 0;
        if streaming && *waits.yielded < SPIN_POLLS && !ring.solo() {
            // Found nothing: yield before parking. Under load the
            // publisher refills the ring meanwhile, and the task (and
            // its worker thread) skip a park/unpark round trip, which
            // costs far more than one extra poll.
            *waits.yielded += 1;
            yield_now(cx);
            return Some(Poll::Pending);
        }
    }
    let mut st = sub.state.lock();
    if ring.tail() > cursor {
        return None;
    }
    if st.closed {
        return Some(Poll::Ready(Err(RecvError::Closed)));
    }
    let Queue::Ring(members) = &mut st.queue else {
        unreachable!("a ring's subscriber has ring members");
    };
    let Some(m) = members.readers.iter_mut().find(|m| m.id == member) else {
        return Some(Poll::Ready(Err(RecvError::Closed)));
    };
    let Some(cx) = cx else {
        return Some(Poll::Pending);
    };
    *waits.yielded = 0;
    match &mut m.waker {
        Some(w) => w.clone_from(cx.waker()),
        w @ None => {
            *w = Some(cx.waker().clone());
            members.parked += 1;
        }
    }
    drop(st);
    // (Publishers hand off only to a lone member.)
    let handoff = ring.solo().then(|| ring.take_handoff()).flatten();
    if let Some(w) = handoff {
        w.wake();
    }
    Some(Poll::Pending)
}

/// The most events a keyed group's member takes in one go: fewer trips to
/// the lock, while its keys wait for it a little longer.
const KEYED_BATCH: usize = 32;

/// A lossless member read `pos` while `flags` were set: if this read
/// brought it down to the mark a waiting publisher (or raised
/// backpressure) waits for, it settles the ring under the lock, which
/// wakes them if no member is still above it.
///
/// A publisher waits while a member has the whole capacity waiting and is
/// woken once the slowest one is down to `wake_publishers_at`;
/// backpressure clears when the slowest one is down to the low watermark.
/// Only the read that reaches the mark settles, not every read below it:
/// what a member has waiting after a read (against the end as read then)
/// drops by at most one from one read to the next, so a member above the
/// mark reaches it exactly, on a read that sees the flag (the publisher
/// saw it above the mark after flagging), and a publish that lifts it
/// above the mark again only moves that read later. Members already below
/// the mark (the fast ones, while a slow one holds the publisher back)
/// leave the lock alone.
fn settle_after_read<T>(sub: &SubShared<T>, flags: u32, pos: u64) {
    let ring = sub.ring();
    // The end read now, not the one the reader last knew: that one may be
    // older than the end the publisher saw when it flagged, and a backlog
    // counted against it could pass the mark without landing on it.
    let after = ring.tail() - pos - 1;
    let room = flags & WAITING != 0 && after == sub.wake_publishers_at();
    let low = flags & PRESSURED != 0 && after == sub.low as u64;
    if room || low {
        let wake = sub.state.lock().settle(sub);
        wake.into_iter().for_each(Waker::wake);
    }
}

/// The future of [`Subscription::recv`]: withdraws a queue group member's
/// wait if it is dropped while waiting.
struct Recv<'a, T> {
    sub: &'a mut Subscription<T>,
    /// Its last poll left a waker behind.
    armed: bool,
}

impl<T: Send + Sync + 'static> Future for Recv<'_, T> {
    type Output = Result<Arc<Envelope<T>>, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let r = this.sub.poll_noted(Some(cx));
        this.armed = r.is_pending();
        r
    }
}

impl<T> Drop for Recv<'_, T> {
    #[inline]
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
        let plain = self.shared.is_plain_group();
        let mut st = self.shared.state.lock();
        let Some(g) = st.group_mut() else {
            return;
        };
        let before = g.rx.wakers.len();
        g.rx.wakers.retain(|(m, _)| *m != self.member);
        // (A keyed group's events wait for their own member.)
        let wake = (plain && g.rx.wakers.len() == before && !g.queue.is_empty())
            .then(|| g.rx.take_first())
            .flatten();
        drop(st);
        if let Some(w) = wake {
            w.wake();
        }
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
