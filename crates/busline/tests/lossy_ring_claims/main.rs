//! The lossy ring's lock-free read path accounts for every event: a lossy reader claims
//! the slot at its cursor with a compare-and-swap (`BUSY`), and a publisher
//! about to write over the oldest slot moves every member still at it past
//! it (`Ring::move_past`), waiting out a claim in progress, and skips that
//! scan while its cached lower bound of the members' cursors (`slowest`)
//! says nobody is there.
//!
//! These tests go after what that makes possible: the claim racing the
//! move on the very slot being written over, one publisher moving several
//! members (some of them claiming) at once, members joining and leaving
//! mid-lap (the `slowest` cache across join/leave, `rem` released by a
//! leaving member while others claim the same slots), several publishers
//! and several rings per publish, closing while readers claim, and stats
//! read while all of that happens.
//!
//! Readers are plain threads (spinning on `try_recv`, or parking in
//! `futures::executor::block_on(recv())`) and tokio multi-thread tasks.
//! Payloads count their own drops: every event must be dropped exactly
//! once, and none may be kept alive once every member is past it. With one
//! publisher on a ring that exists from the first publish, a payload's `n`
//! is its ring position, so every receive is checked exactly: the event at
//! the member's cursor, or `Lagged(k)` with the exact `k`.
//!
//! Timeouts are hang detectors only (a publisher spinning on a claim that
//! is never let go, a reader parked with events queued), never speed
//! assertions.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use busline::{Bus, RecvError, Subscription};

mod claim_and_move;
mod closing;
mod membership_churn;
mod several_publishers;
mod stats_snapshots;

// ----- helpers -------------------------------------------------------------

#[path = "../helpers/ledger.rs"]
mod ledger;
use ledger::{Rng, P};

/// `n` lossy members of capacity `cap` on `t`, named `m0`, `m1`, ...
fn lossy_members(bus: &Bus<P>, cap: usize, n: usize) -> Vec<Subscription<P>> {
    (0..n)
        .map(|j| {
            bus.subscriber("t")
                .lossy(cap)
                .name(format!("m{j}"))
                .subscribe()
                .unwrap()
        })
        .collect()
}

/// A publisher's pace: bursts, and pauses of up to a microsecond or so, so
/// that readers are sometimes far behind and mostly right at the slot the
/// publisher writes over next (where a claim and a move race).
struct Pace(Rng, u64);

impl Pace {
    fn new(seed: u64) -> Self {
        Pace(Rng::new(seed), 0)
    }
    fn step(&mut self) {
        self.1 += 1;
        // Bursts of up to 64 events with no pause every 1024 events.
        if self.1 % 1024 < 64 {
            return;
        }
        for _ in 0..self.0.below(300) {
            std::hint::spin_loop();
        }
        if self.0.below(512) == 0 {
            std::thread::yield_now();
        }
    }
}

/// What worker threads reported as they panicked (shown if the test hangs:
/// a reader that panics holding its claim leaves the publisher spinning).
#[derive(Default)]
struct Failures(Mutex<Vec<String>>);

/// Spawns a worker thread that records its panic message in `fails`.
fn spawn<R: Send + 'static>(
    fails: &Arc<Failures>,
    name: impl Into<String>,
    f: impl FnOnce() -> R + Send + 'static,
) -> JoinHandle<R> {
    let fails = fails.clone();
    let name = name.into();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(
            move || match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                Ok(r) => r,
                Err(p) => {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    fails.0.lock().unwrap().push(format!("{name}: {msg}"));
                    std::panic::resume_unwind(p)
                }
            },
        )
        .unwrap()
}

fn join<R>(h: JoinHandle<R>) -> R {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Seconds a test may take before it is reported as hung (generous: these
/// are hang detectors; `LOSSY_REVIEW_TIMEOUT` overrides it).
const TIMEOUT: u64 = 180;

/// Multiplies the event counts (`LOSSY_REVIEW_SCALE`, default 8: the file
/// takes 10–20 s in release on 2 cores): more events, more races.
fn scale(n: u64) -> u64 {
    let k: u64 = std::env::var("LOSSY_REVIEW_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    n * k.max(1)
}

/// Runs `f` on its own thread and panics with a message if it is not done
/// within `secs` (a hang detector: the bound is generous).
fn watchdog<R: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce(Arc<Failures>) -> R + Send + 'static,
) -> R {
    let secs = std::env::var("LOSSY_REVIEW_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(secs);
    let fails = Arc::new(Failures::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let f_fails = fails.clone();
    let h = std::thread::spawn(move || {
        let r = f(f_fails);
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => join(h),
        Err(RecvTimeoutError::Timeout) => panic!(
            "{what}: not done after {secs} s (a publisher spinning on a claim never let go, \
             or a reader parked with events queued); worker panics: {:?}",
            fails.0.lock().unwrap()
        ),
    }
}

/// Sets the flag when dropped (also when its thread panics).
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

/// A ring member's view of its own cursor, checked at every receive.
#[derive(Debug, Clone, Copy, Default)]
struct Track {
    /// The position it reads next (unknown for a member that joined
    /// mid-run, until its first event).
    next: Option<u64>,
    /// Position of its first event, and the lag reported before it.
    first: Option<(u64, u64)>,
    received: u64,
    lag: u64,
}

impl Track {
    fn at(pos: u64) -> Self {
        Track {
            next: Some(pos),
            ..Track::default()
        }
    }

    fn event(&mut self, pos: u64, who: &str) {
        if let Some(next) = self.next {
            assert_eq!(
                pos, next,
                "{who}: got position {pos}, expected {next} ({} received, {} lag reported): \
                 lost without being reported, delivered twice, or a wrong Lagged count",
                self.received, self.lag
            );
        }
        if self.first.is_none() {
            self.first = Some((pos, self.lag));
        }
        self.next = Some(pos + 1);
        self.received += 1;
    }

    fn lagged(&mut self, k: u64, who: &str) {
        assert!(k > 0, "{who}: Lagged(0)");
        self.lag += k;
        if let Some(next) = &mut self.next {
            *next += k;
        }
    }

    /// Applies one receive result; `false` on `Closed`.
    fn apply(&mut self, r: Result<Arc<busline::Envelope<P>>, RecvError>, who: &str) -> bool {
        match r {
            Ok(e) => self.event(e.payload.n, who),
            Err(RecvError::Lagged(k)) => self.lagged(k, who),
            Err(RecvError::Closed) => return false,
            Err(e) => panic!("{who}: {e}"),
        }
        true
    }

    /// One non-blocking receive: `Some(false)` when nothing was ready,
    /// `None` on `Closed`.
    fn try_step(&mut self, sub: &mut Subscription<P>, who: &str) -> Option<bool> {
        match sub.try_recv() {
            Ok(Some(e)) => {
                self.event(e.payload.n, who);
                Some(true)
            }
            Ok(None) => Some(false),
            Err(RecvError::Closed) => None,
            Err(RecvError::Lagged(k)) => {
                self.lagged(k, who);
                Some(true)
            }
            Err(e) => panic!("{who}: {e}"),
        }
    }
}

/// A member's own counters, read on the thread that receives for it (so
/// no receive of its own is in flight): they balance exactly, and agree
/// with what it saw.
fn check_own_stats(sub: &Subscription<P>, t: &Track, cap: usize, who: &str) {
    let st = sub.stats();
    assert_eq!(
        st.delivered,
        st.received + st.dropped + st.queued as u64,
        "{who}: delivered != received + dropped + queued: {st:?}"
    );
    assert_eq!(st.received, t.received, "{who}: {st:?}");
    assert!(
        st.dropped >= t.lag,
        "{who}: reported more lag than dropped: {st:?} {t:?}"
    );
    assert!(st.queued <= cap && st.peak <= cap, "{who}: {st:?}");
    assert!(sub.len() <= cap, "{who}: len {}: {st:?}", sub.len());
    // Its cursor is where it reads next plus the moves it was not told of
    // yet; the ring's end is that plus what is queued; it joined
    // `delivered` before that end, which is where its first event minus the
    // lag reported before it says.
    if let (Some(next), Some((first, lag_before))) = (t.next, t.first) {
        let tail = next + (st.dropped - t.lag) + st.queued as u64;
        assert_eq!(
            tail - st.delivered,
            first - lag_before,
            "{who}: where it joined, by its stats and by its first event: {st:?} {t:?}"
        );
    }
}
