//! Members joining and leaving a lossy ring mid-lap keep the publisher's
//! cached lowest cursor right and release slots others are claiming:
//! every receive exact, stats balanced, totals never going backwards.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use busline::Bus;
use futures::executor::block_on;

use crate::ledger::{Ledger, Rng, P};
use crate::{check_own_stats, join, scale, spawn, watchdog, Pace, SetOnDrop, Track, TIMEOUT};

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
