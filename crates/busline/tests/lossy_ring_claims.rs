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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use busline::{Bus, PublishError, RecvError, Subscription};
use futures::executor::block_on;

// ----- helpers -------------------------------------------------------------

#[path = "helpers/ledger.rs"]
mod ledger;
use ledger::{Ledger, Rng, P};

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

// ----- the claim racing the move, several members ----------------------------

/// Members of one lossy ring (1 to 4 slots) read as fast as they can on
/// their own threads (`try_recv` spinning), with one parking in a blocking
/// `recv`, while a publisher on another thread writes over the ring: the
/// readers sit on the oldest slot the publisher is about to write over, so
/// claims and moves race on nearly every publish, and the publisher moves
/// several members per publish. One more member never reads until the
/// publisher is done: it sits at the oldest slot, so the publisher scans
/// every member on every publish (never skipping on its cached lowest
/// cursor) and finds readers claiming slots past the one it writes over.
/// Every receive is exact (position or `Lagged(k)`), the ring keeps alive
/// exactly what the idle member has not read, then nothing, the counters
/// balance, and every payload is dropped exactly once.
#[test]
fn spinning_readers_race_the_overwrite_on_tiny_rings() {
    for (cap, members, events) in [
        (1usize, 3usize, 150_000u64),
        (1, 8, 40_000),
        (2, 4, 120_000),
        (3, 3, 80_000),
        (4, 6, 60_000),
    ] {
        let events = scale(events);
        let what = format!("cap {cap}, {members} members");
        let ledger = Ledger::new(events as usize + 8);
        let l = ledger.clone();
        watchdog(TIMEOUT, &what.clone(), move |fails| {
            let bus = Bus::<P>::new();
            let published = Arc::new(AtomicBool::new(false));
            let subs = lossy_members(&bus, cap, members);
            let mut idle = bus
                .subscriber("t")
                .lossy(cap)
                .name("idle")
                .subscribe()
                .unwrap();
            let readers: Vec<_> = subs
                .into_iter()
                .enumerate()
                .map(|(j, mut sub)| {
                    let who = format!("{what} m{j}");
                    let published = published.clone();
                    spawn(&fails, who.clone(), move || {
                        let mut t = Track::at(0);
                        let mut rng = Rng::new(j as u64 + 1);
                        let mut publisher_done = false;
                        while t.next.unwrap() < events {
                            if j == 0 {
                                // Parks when nothing is there.
                                assert!(t.apply(block_on(sub.recv()), &who), "{who}: closed");
                            } else if t.try_step(&mut sub, &who) == Some(false) {
                                if publisher_done {
                                    // Empty after the publisher finished: the
                                    // end, with positions unaccounted for.
                                    break;
                                }
                                // One more step once the publisher is seen
                                // done: what it wrote (or wrote over) since
                                // the step above is taken and tracked first.
                                publisher_done = published.load(SeqCst);
                                std::thread::yield_now();
                            } else if j == 1 && rng.below(50) == 0 {
                                // Falls behind now and then: moved many times over.
                                std::thread::yield_now();
                            }
                        }
                        assert_eq!(
                            t.next,
                            Some(events),
                            "{who}: received + lag != published, nothing more to receive"
                        );
                        check_own_stats(&sub, &t, cap, &who);
                        (sub, t)
                    })
                })
                .collect();
            let publisher = {
                let bus = bus.clone();
                let l = l.clone();
                spawn(&fails, "publisher", move || {
                    let mut pace = Pace::new(cap as u64 * 7 + members as u64);
                    for n in 0..events {
                        pace.step();
                        let p = l.make(0, n);
                        let r = if n % 2 == 0 {
                            bus.try_publish_to("t", p).unwrap()
                        } else {
                            block_on(bus.publish_to("t", p)).unwrap()
                        };
                        assert_eq!(r.subscribers, members + 1);
                    }
                })
            };
            join(publisher);
            published.store(true, SeqCst);
            let done: Vec<(Subscription<P>, Track)> = readers.into_iter().map(join).collect();
            let cap64 = cap as u64;
            assert_eq!(
                l.live(),
                cap as i64,
                "{what}: the ring keeps alive other than the {cap} events the idle member has not read"
            );
            let st = idle.stats();
            assert_eq!(
                (st.delivered, st.received, st.dropped, st.queued),
                (events, 0, events - cap64, cap),
                "{what}: idle"
            );
            let mut t = Track::at(0);
            while let Some(true) = t.try_step(&mut idle, "idle") {}
            assert_eq!(
                (t.next, t.lag, t.received),
                (Some(events), events - cap64, cap64),
                "{what}: idle"
            );
            check_own_stats(&idle, &t, cap, "idle");
            // Read events stay in their slots until the publisher's next
            // reclaim or until written over: never more than the ring holds.
            assert!(
                l.live() <= cap as i64,
                "{what}: every member is at the ring's end, yet {} payloads are alive (capacity {cap})",
                l.live()
            );
            let mut lag = 0;
            for (sub, t) in &done {
                let st = sub.stats();
                assert_eq!(
                    (st.delivered, st.received, st.dropped, st.queued),
                    (events, t.received, t.lag, 0),
                    "{what} {}",
                    sub.name()
                );
                lag += t.lag;
            }
            let bs = bus.stats();
            assert_eq!(
                (bs.delivered, bs.dropped, bs.discarded),
                ((members as u64 + 1) * events, lag + events - cap64, 0),
                "{what}"
            );
            drop(idle);
            bus.close();
            for (mut sub, _) in done {
                assert!(matches!(sub.try_recv(), Err(RecvError::Closed)), "{what}");
            }
        });
        ledger.assert_each_dropped_once(&format!("cap {cap}, {members} members"));
    }
}

// ----- join / leave mid-lap ----------------------------------------------------

/// Members join a lossy ring (1, 2, 1025 and 2048 slots: past one chunk)
/// and leave it again (drop or `unsubscribe`) after a random number of
/// receives, including none, while a publisher writes over it and an
/// anchor member that stalls now and then keeps the ring alive: the
/// publisher's cached lower bound of the cursors must hold across every
/// join and leave (or it skips moving a member at the oldest slot), and a
/// leaving member releases slots that others are claiming at that moment.
/// Every member's receives are exact from its first event on; its stats
/// balance and say where it joined; a stats poller on another thread finds
/// the bus's totals never going backwards and every snapshot within what a
/// ring can hold; once all is quiet the totals balance (including members
/// that left), the ring keeps nothing alive, and every payload is dropped
/// exactly once.
#[test]
fn members_join_and_leave_mid_lap_while_the_ring_is_written_over() {
    for (cap, events) in [
        (1usize, 80_000u64),
        (2, 80_000),
        (1025, 100_000),
        (2048, 120_000),
    ] {
        let events = scale(events);
        let what = format!("cap {cap}");
        let ledger = Ledger::new(events as usize + 8);
        let l = ledger.clone();
        watchdog(TIMEOUT, &what.clone(), move |fails| {
            let bus = Bus::<P>::new();
            let done = Arc::new(AtomicBool::new(false));
            let mut anchor = bus
                .subscriber("t")
                .lossy(cap)
                .name("anchor")
                .subscribe()
                .unwrap();
            let churners: Vec<_> = (0..2u64)
                .map(|c| {
                    let bus = bus.clone();
                    let done = done.clone();
                    spawn(&fails, format!("{what} churner {c}"), move || {
                        let mut rng = Rng::new(cap as u64 * 31 + c);
                        let (mut received, mut unsubscribed, mut generations) = (0u64, 0u64, 0u64);
                        while !done.load(SeqCst) {
                            let who = format!("cap {cap} churner {c} gen {generations}");
                            let mut sub = bus
                                .subscriber("t")
                                .lossy(cap)
                                .name(format!("c{c}-{generations}"))
                                .subscribe()
                                .unwrap();
                            let quota = rng.below(2 * cap as u64 + 6);
                            let mut t = Track::default();
                            let mut results = 0;
                            while results < quota {
                                match t.try_step(&mut sub, &who) {
                                    Some(true) => results += 1,
                                    Some(false) if done.load(SeqCst) => break,
                                    Some(false) => std::thread::yield_now(),
                                    None => panic!("{who}: closed"),
                                }
                                if rng.below(8) == 0 {
                                    check_own_stats(&sub, &t, cap, &who);
                                }
                            }
                            check_own_stats(&sub, &t, cap, &who);
                            received += t.received;
                            if rng.below(2) == 0 {
                                let n = sub.unsubscribe();
                                assert!(n <= cap as u64, "{who}: discarded {n}");
                                unsubscribed += n;
                            } else {
                                drop(sub);
                            }
                            generations += 1;
                            if rng.below(4) == 0 {
                                std::thread::yield_now();
                            }
                        }
                        (received, unsubscribed, generations)
                    })
                })
                .collect();
            let poller = {
                let bus = bus.clone();
                let done = done.clone();
                let what = what.clone();
                spawn(&fails, format!("{what} stats poller"), move || {
                    let mut last = (0, 0, 0);
                    let mut polls = 0u64;
                    while !done.load(SeqCst) {
                        let bs = bus.stats();
                        let now = (bs.delivered, bs.dropped, bs.discarded);
                        assert!(
                            now.0 >= last.0 && now.1 >= last.1 && now.2 >= last.2,
                            "{what}: bus totals went backwards: {last:?} -> {now:?}"
                        );
                        assert!(now.1 + now.2 <= now.0, "{what}: {bs:?}");
                        last = now;
                        for s in &bs.subscribers {
                            assert!(s.queued <= cap && s.peak <= cap, "{what}: {s:?}");
                            // (A member reading right now publishes its
                            // `received` after its cursor: one apart.)
                            assert!(
                                s.dropped + s.queued as u64 <= s.delivered
                                    && s.delivered <= s.received + s.dropped + s.queued as u64 + 1,
                                "{what}: a snapshot that does not balance: {s:?}"
                            );
                        }
                        polls += 1;
                        std::thread::yield_now();
                    }
                    polls
                })
            };
            let published = Arc::new(AtomicBool::new(false));
            let publisher = {
                let bus = bus.clone();
                let l = l.clone();
                let published = published.clone();
                spawn(&fails, format!("{what} publisher"), move || {
                    let _set = SetOnDrop(published);
                    let mut pace = Pace::new(cap as u64 * 13);
                    for n in 0..events {
                        pace.step();
                        let p = l.make(0, n);
                        let r = if n % 3 == 0 {
                            block_on(bus.publish_to("t", p)).unwrap()
                        } else {
                            bus.try_publish_to("t", p).unwrap()
                        };
                        assert!(r.subscribers >= 1 && r.subscribers <= 3, "{r:?}");
                    }
                })
            };
            // The anchor reads on this thread, stalling now and then.
            let who = format!("{what} anchor");
            let mut t = Track::at(0);
            let mut rng = Rng::new(cap as u64);
            let stall = 2 * cap as u64 + 13;
            while t.next.unwrap() < events {
                match t.try_step(&mut anchor, &who) {
                    Some(true) => {
                        if rng.below(stall) == 0 {
                            std::thread::sleep(Duration::from_micros(200));
                        }
                    }
                    // At the end with positions unaccounted for: fails below.
                    Some(false)
                        if published.load(SeqCst) && anchor.try_recv().unwrap().is_none() =>
                    {
                        break
                    }
                    Some(false) => std::thread::yield_now(),
                    None => panic!("{who}: closed"),
                }
            }
            assert_eq!(t.next, Some(events), "{who}: received + lag != published");
            join(publisher);
            done.store(true, SeqCst);
            let (mut churned, mut unsubscribed, mut generations) = (0, 0, 0);
            for c in churners {
                let (r, u, g) = join(c);
                churned += r;
                unsubscribed += u;
                generations += g;
            }
            let _polls = join(poller);
            assert!(generations > 0);
            check_own_stats(&anchor, &t, cap, &who);
            assert!(
                l.live() <= cap as i64,
                "{what}: the only member left is at the ring's end, yet {} payloads are alive (capacity {cap})",
                l.live()
            );
            let bs = bus.stats();
            assert_eq!(bs.subscribers.len(), 1, "{what}: {bs:?}");
            assert_eq!(
                bs.delivered,
                t.received + churned + bs.dropped + bs.discarded,
                "{what}: bus totals: delivered != received + dropped + discarded: {bs:?}"
            );
            assert!(bs.discarded >= unsubscribed, "{what}: {bs:?}");
            let st = anchor.stats();
            assert_eq!(
                (st.delivered, st.received, st.dropped, st.queued),
                (events, t.received, t.lag, 0),
                "{what}"
            );
            drop(anchor);
            let bs = bus.stats();
            assert_eq!(
                bs.delivered,
                t.received + churned + bs.dropped + bs.discarded,
                "{what}: bus totals once every member left: {bs:?}"
            );
        });
        ledger.assert_each_dropped_once(&format!("cap {cap}"));
    }
}

// ----- several publishers, several rings per publish ---------------------------

/// Three publishers on their own threads (clones of the bus, mixing
/// `try_publish_to` and `publish_to`) publish to a lossy ring of 2 shared by
/// three members, a filtered lossy member (its own ring of 1), and a
/// lossless recorder: each publish locks all three rings, so a publisher
/// spinning on one member's claim holds the others. The recorder gives the
/// order the rings were written in (every ring is written in one order
/// under those locks), so each lossy member's receives are checked exactly
/// against it: every event it got at its ring position, every lag exactly
/// the events it skipped.
#[test]
fn several_publishers_and_rings_exact_lag_against_a_recorder() {
    const PUBLISHERS: u32 = 3;
    let per: u64 = scale(40_000);
    let total: u64 = PUBLISHERS as u64 * per;
    // Events the filtered member takes (ids are 0..total).
    let takes = |id: u64| id % 3 != 0;
    let filtered_total = (0..total).filter(|&i| takes(i)).count() as u64;
    let ledger = Ledger::new(total as usize + 8);
    let l = ledger.clone();
    watchdog(TIMEOUT, "several publishers", move |fails| {
        let bus = Bus::<P>::new();
        let mut recorder = bus
            .subscriber("t")
            .lossless(4096)
            .name("rec")
            .subscribe()
            .unwrap();
        #[derive(Debug)]
        enum Got {
            Id(u64),
            Lag(u64),
        }
        let published = Arc::new(AtomicBool::new(false));
        let mut readers = Vec::new();
        for j in 0..4usize {
            let published = published.clone();
            let b = bus.subscriber("t").name(format!("m{j}"));
            let (mut sub, expect) = if j == 3 {
                (
                    b.lossy(1)
                        .filter(move |e| takes(e.payload.id))
                        .subscribe()
                        .unwrap(),
                    filtered_total,
                )
            } else {
                (b.lossy(2).subscribe().unwrap(), total)
            };
            readers.push(spawn(&fails, format!("reader m{j}"), move || {
                let who = format!("m{j}");
                let mut log = Vec::with_capacity(expect as usize);
                let (mut accounted, mut received, mut lag) = (0u64, 0u64, 0u64);
                let mut last = [None::<u64>; PUBLISHERS as usize];
                let mut publisher_done = false;
                while accounted < expect {
                    let r = if j == 0 {
                        block_on(sub.recv()).map(Some)
                    } else {
                        sub.try_recv()
                    };
                    match r {
                        Ok(Some(e)) => {
                            let p = e.payload.publisher as usize;
                            assert!(
                                last[p].is_none_or(|l| e.payload.n > l),
                                "{who}: publisher {p}: {} after {:?}",
                                e.payload.n,
                                last[p]
                            );
                            last[p] = Some(e.payload.n);
                            log.push(Got::Id(e.payload.id));
                            accounted += 1;
                            received += 1;
                        }
                        // Empty after the publisher was seen done: the end,
                        // with events unaccounted for (fails below).
                        Ok(None) if publisher_done => break,
                        // One more receive once the publisher is seen done:
                        // what it wrote since the receive above comes first.
                        Ok(None) => {
                            publisher_done = published.load(SeqCst);
                            std::thread::yield_now()
                        }
                        Err(RecvError::Lagged(k)) => {
                            assert!(k > 0);
                            log.push(Got::Lag(k));
                            accounted += k;
                            lag += k;
                        }
                        Err(e) => panic!("{who}: {e}"),
                    }
                }
                assert_eq!(accounted, expect, "{who}: received + lag != delivered");
                let st = sub.stats();
                assert_eq!(
                    (st.delivered, st.received, st.dropped, st.queued),
                    (expect, received, lag, 0),
                    "{who}"
                );
                (sub, log)
            }));
        }
        let rec = spawn(&fails, "recorder", move || {
            let mut order = Vec::with_capacity(total as usize);
            for _ in 0..total {
                order.push(block_on(recorder.recv()).unwrap().payload.id);
            }
            (recorder, order)
        });
        let pubs: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let bus = bus.clone();
                let l = l.clone();
                spawn(&fails, format!("publisher {p}"), move || {
                    let mut pace = Pace::new(p as u64 + 100);
                    for n in 0..per {
                        pace.step();
                        let ev = l.make(p, n);
                        let ev = if n % 2 == p as u64 % 2 {
                            match bus.try_publish_to("t", ev) {
                                Ok(r) => {
                                    assert!(r.subscribers >= 4);
                                    continue;
                                }
                                // The recorder is full: wait for it.
                                Err(PublishError::Full { event, .. }) => event,
                                Err(e) => panic!("{e:?}"),
                            }
                        } else {
                            ev
                        };
                        let r = block_on(bus.publish_to("t", ev)).unwrap();
                        assert!(r.subscribers >= 4);
                    }
                })
            })
            .collect();
        pubs.into_iter().for_each(join);
        published.store(true, SeqCst);
        let (recorder, order) = join(rec);
        let mut pos = vec![u64::MAX; total as usize];
        let mut fpos = vec![u64::MAX; total as usize];
        let mut f = 0;
        for (i, &id) in order.iter().enumerate() {
            assert_eq!(pos[id as usize], u64::MAX, "the recorder got {id} twice");
            pos[id as usize] = i as u64;
            if takes(id) {
                fpos[id as usize] = f;
                f += 1;
            }
        }
        let mut subs = vec![recorder];
        for (j, r) in readers.into_iter().enumerate() {
            let (sub, log) = join(r);
            let at = if j == 3 { &fpos } else { &pos };
            let mut next = 0u64;
            for (k, g) in log.iter().enumerate() {
                match *g {
                    Got::Id(id) => {
                        assert_eq!(
                            at[id as usize], next,
                            "m{j}: receive {k} was event {id} at ring position {}, expected position {next} \
                             (log around it: {:?})",
                            at[id as usize],
                            &log[k.saturating_sub(3)..(k + 3).min(log.len())]
                        );
                        next += 1;
                    }
                    Got::Lag(n) => next += n,
                }
            }
            subs.push(sub);
        }
        // The recorder's ring (4096) and the members' (1 and 2) hold at
        // most their capacities of read events.
        assert!(
            l.live() <= 4096 + 4 * 2,
            "every member is at its ring's end, yet {} payloads are alive",
            l.live()
        );
        let bs = bus.stats();
        assert_eq!(bs.delivered, 4 * total + filtered_total, "{bs:?}");
        assert_eq!(
            bs.delivered,
            bs.subscribers
                .iter()
                .map(|s| s.received + s.dropped)
                .sum::<u64>(),
            "{bs:?}"
        );
        drop(subs);
    });
    ledger.assert_each_dropped_once("several publishers");
}

// ----- closing while readers claim -------------------------------------------

/// Rounds of: two publisher tasks and tokio reader tasks (plus a reader
/// spinning on its own thread) on a lossy ring shared by three members and
/// a second lossy ring, on a multi-thread runtime, while a closer task
/// closes the bus part way. Publishes after the close are refused with the
/// event handed back; every member drains to `Closed` with received + lag
/// == the events accepted, exact per publisher; counters balance; every
/// payload is dropped once.
#[test]
fn closing_the_bus_while_lossy_readers_claim() {
    for (round, cap) in [1usize, 2, 1025, 1, 2, 3].into_iter().enumerate() {
        let per: u64 = scale(30_000);
        let ledger = Ledger::new(2 * per as usize + 8);
        let l = ledger.clone();
        let what = format!("round {round} cap {cap}");
        watchdog(TIMEOUT, &what.clone(), move |fails| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(3)
                .enable_all()
                .build()
                .unwrap();
            let bus = Bus::<P>::new();
            let mut subs = lossy_members(&bus, cap, 3);
            subs.push(
                bus.subscriber("t")
                    .lossy(cap + 1)
                    .name("other")
                    .subscribe()
                    .unwrap(),
            );
            let accepted = Arc::new(AtomicU64::new(0));
            let close_at = Rng::new(round as u64 + 5).below(2 * per) + 100;
            // Each member: per publisher strictly increasing; received + lag.
            let read = |sub: &mut Subscription<P>,
                        r: Result<Arc<busline::Envelope<P>>, RecvError>,
                        last: &mut [Option<u64>; 2],
                        counts: &mut (u64, u64)|
             -> bool {
                match r {
                    Ok(e) => {
                        let p = e.payload.publisher as usize;
                        assert!(
                            last[p].is_none_or(|l| e.payload.n > l),
                            "{}: publisher {p}: {} after {:?}",
                            sub.name(),
                            e.payload.n,
                            last[p]
                        );
                        last[p] = Some(e.payload.n);
                        counts.0 += 1;
                    }
                    Err(RecvError::Lagged(k)) => {
                        assert!(k > 0);
                        counts.1 += k;
                    }
                    Err(RecvError::Closed) => return false,
                    Err(e) => panic!("{e}"),
                }
                true
            };
            let spinner = {
                let mut sub = subs.pop().unwrap();
                spawn(&fails, "spinning reader", move || {
                    let (mut last, mut counts) = ([None; 2], (0, 0));
                    loop {
                        match sub.try_recv() {
                            Ok(None) => std::thread::yield_now(),
                            Ok(Some(e)) => {
                                read(&mut sub, Ok(e), &mut last, &mut counts);
                            }
                            Err(e) => {
                                if !read(&mut sub, Err(e), &mut last, &mut counts) {
                                    return (sub, counts);
                                }
                            }
                        }
                    }
                })
            };
            let (tasks, sent) = rt.block_on(async {
                let tasks: Vec<_> = subs
                    .drain(..)
                    .enumerate()
                    .map(|(j, mut sub)| {
                        tokio::spawn(async move {
                            let (mut last, mut counts) = ([None; 2], (0, 0));
                            let mut i = 0u64;
                            loop {
                                let r = sub.recv().await;
                                if !read(&mut sub, r, &mut last, &mut counts) {
                                    return (sub, counts);
                                }
                                i += 1;
                                if j == 2 && i % 97 == 0 {
                                    tokio::time::sleep(Duration::from_micros(100)).await;
                                }
                            }
                        })
                    })
                    .collect();
                let pubs: Vec<_> = (0..2u32)
                    .map(|p| {
                        let bus = bus.clone();
                        let l = l.clone();
                        let accepted = accepted.clone();
                        tokio::spawn(async move {
                            let mut sent = 0u64;
                            let mut pace = Pace::new(round as u64 * 2 + p as u64);
                            for n in 0..per {
                                pace.step();
                                let ev = l.make(p, n);
                                let r = if n % 2 == 0 {
                                    bus.try_publish_to("t", ev)
                                } else {
                                    bus.publish_to("t", ev).await
                                };
                                match r {
                                    // (A publish racing the close may find one
                                    // ring closed and the other not yet.)
                                    Ok(r) => {
                                        assert!(matches!(r.subscribers, 1 | 3 | 4), "{r:?}");
                                        sent += r.subscribers as u64;
                                        accepted.fetch_add(1, SeqCst);
                                    }
                                    Err(PublishError::Closed { event }) => {
                                        drop(event);
                                        break;
                                    }
                                    Err(e) => panic!("{e:?}"),
                                }
                                if n % 256 == 0 {
                                    tokio::task::yield_now().await;
                                }
                            }
                            sent
                        })
                    })
                    .collect();
                let closer = {
                    let bus = bus.clone();
                    let accepted = accepted.clone();
                    tokio::spawn(async move {
                        while accepted.load(SeqCst) < close_at {
                            tokio::task::yield_now().await;
                        }
                        bus.close();
                    })
                };
                let mut sent = 0;
                for p in pubs {
                    sent += p.await.unwrap();
                }
                // (Both may finish before the close point.)
                bus.close();
                closer.await.unwrap();
                let mut done = Vec::new();
                for t in tasks {
                    done.push(t.await.unwrap());
                }
                (done, sent)
            });
            let mut all = tasks;
            all.push(join(spinner));
            let accepted = accepted.load(SeqCst);
            let mut delivered = 0;
            for (sub, (received, lag)) in &all {
                let st = sub.stats();
                assert_eq!(
                    (st.received, st.dropped, st.queued),
                    (*received, *lag, 0),
                    "{}: {st:?}",
                    sub.name()
                );
                assert_eq!(st.delivered, received + lag, "{}: {st:?}", sub.name());
                assert!(st.delivered <= accepted, "{}: {st:?}", sub.name());
                delivered += st.delivered;
            }
            assert_eq!(
                delivered, sent,
                "deliveries by the members' counts and by the receipts"
            );
            // The two rings (`cap` and `cap + 1`) hold at most their
            // capacities of read events until the members are dropped.
            assert!(
                l.live() <= 2 * cap as i64 + 1,
                "drained to Closed, yet {} payloads are alive",
                l.live()
            );
            let bs = bus.stats();
            assert_eq!(bs.delivered, sent);
            drop(all);
            drop(rt);
        });
        ledger.assert_each_dropped_once(&format!("round {round} cap {cap}"));
    }
}

// ----- stats while a member reads -------------------------------------------

/// `SubscriberStats::queued` documents that a ring member's snapshot taken
/// while it reads "may be one event apart" between `delivered` and
/// `received + dropped + queued`. `of_member` loads the member's cursor
/// first and its `received` counter (published after the cursor) only
/// after formatting the name, pattern and policy, so a member reading on
/// another core meanwhile puts `received` any number of events ahead.
/// A publisher and a reader spin on a lossy ring of 1024 while the stats
/// are polled: every snapshot must be within one.
#[test]
fn a_stats_snapshot_while_a_lossy_member_reads_is_at_most_one_event_apart() {
    watchdog(TIMEOUT, "stats snapshot", |fails| {
        let bus = Bus::<u64>::new();
        let mut sub = bus
            .subscriber("t")
            .lossy(1024)
            .name("r")
            .subscribe()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let stop = stop.clone();
            spawn(&fails, "reader", move || {
                while !stop.load(SeqCst) {
                    match sub.try_recv() {
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                sub
            })
        };
        let publisher = {
            let (bus, stop) = (bus.clone(), stop.clone());
            spawn(&fails, "publisher", move || {
                let mut i = 0u64;
                while !stop.load(SeqCst) {
                    bus.try_publish_to("t", i).unwrap();
                    i += 1;
                }
            })
        };
        let mut worst = None;
        for _ in 0..200_000 {
            let bs = bus.stats();
            let s = bs.subscriber("r").unwrap();
            let by_cursor = s.delivered - s.dropped - s.queued as u64;
            if s.received.abs_diff(by_cursor) > 1 {
                worst = Some(s.clone());
                break;
            }
        }
        stop.store(true, SeqCst);
        join(publisher);
        let sub = join(reader);
        let st = sub.stats();
        assert_eq!(
            st.delivered,
            st.received + st.dropped + st.queued as u64,
            "quiescent: {st:?}"
        );
        if let Some(s) = worst {
            panic!(
                "a snapshot taken while the member reads is {} events apart \
                 (received {} vs delivered - dropped - queued {}): {s:?}",
                s.received
                    .abs_diff(s.delivered - s.dropped - s.queued as u64),
                s.received,
                s.delivered - s.dropped - s.queued as u64
            );
        }
    });
}
