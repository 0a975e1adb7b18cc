//! Publishers' share of tokio's cooperative budget: how often a publish
//! takes a unit of it, and how a publisher whose budget is spent yields,
//! handing its turn to a lone ring member.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use super::route::Route;

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
/// and [`lossy_publishes_per_unit`]). `Some(lone)` when it does, `lone`
/// telling [`take_budget`] whether the route leads to a lone reader.
#[inline]
pub(super) fn budget_due<T>(route: &Route<T>) -> Option<bool> {
    let Some(ring) = route.lone_reader_ring() else {
        return Some(false);
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
        due.then_some(true)
    })
}

/// Takes one unit of the task's tokio budget for a publish on `route`
/// (`lone`: to a lone ring member), yielding first if it is spent:
/// `tokio::task::consume_budget` without its bookkeeping, and with a
/// hand-off to a lone ring member.
///
/// A spent budget makes tokio wake the task later (deferred: once its
/// worker has run what it has queued and looked for work on the other
/// workers). A worker that found work while looking wakes another worker
/// to look too, so each such yield woke the other worker for nothing; and
/// a lone lossy reader's publisher yields every few hundred publishes. On
/// a route to a lone ring member the publisher also leaves a waker with
/// the ring, and the member wakes it when it parks, having read what it
/// was woken for: the publisher runs next on that worker, which never ran
/// out of work. tokio's deferred wake-up still comes, so a member that
/// does not park (busy elsewhere) holds the publisher no longer than a
/// yield does.
///
/// The two wake-ups of one yield wake the publisher once ([`Turn`]):
/// tokio's deferred one, coming after the member's, would otherwise wake
/// it again in the middle of a later run, while the member it has just
/// woken waits in the queue; a worker with two tasks queued wakes the
/// other worker, which takes one of them, and publisher and member went
/// on side by side on two cores. With one subscriber, lossy, that was
/// 4,000 to 7,000 context switches and 150 CPU ns a delivery in 5 million
/// deliveries, against about 220 and 100 (see docs/benchmarks.md).
#[inline]
pub(super) async fn take_budget<T>(route: &Route<T>, lone: bool) {
    poll_fn(|cx| {
        if lone && !tokio::task::coop::has_budget_remaining() {
            return Turn::hand_off(route, cx);
        }
        match tokio::task::coop::poll_proceed(cx) {
            Poll::Ready(r) => {
                r.made_progress();
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// One yield of a publisher to a lone ring member: the task's waker, woken
/// by the first of its two wakers to be woken (the member's and tokio's
/// deferred one), and by the other not at all.
pub(super) struct Turn {
    armed: AtomicBool,
    task: Waker,
}

impl Turn {
    /// A waker that wakes `task` the first time it or a clone of it is
    /// woken, and never again.
    pub(super) fn once(task: &Waker) -> Waker {
        Waker::from(Arc::new(Turn {
            armed: AtomicBool::new(true),
            task: task.clone(),
        }))
    }

    /// Yields with the task's budget spent: tokio defers one wake-up, the
    /// ring keeps the other (see [`take_budget`]).
    #[cold]
    #[inline(never)]
    fn hand_off<T>(route: &Route<T>, cx: &Context<'_>) -> Poll<()> {
        let turn = Turn::once(cx.waker());
        match tokio::task::coop::poll_proceed(&mut Context::from_waker(&turn)) {
            // (Budget came back between the two looks: nothing to yield.)
            Poll::Ready(r) => {
                r.made_progress();
                Poll::Ready(())
            }
            Poll::Pending => {
                route.hand_off(&turn);
                Poll::Pending
            }
        }
    }
}

impl Wake for Turn {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.armed.swap(false, Ordering::AcqRel) {
            self.task.wake_by_ref();
        }
    }
}
