//! A reader's claim racing the publisher's move on the very slot being
//! written over, with several members moved per publish (and one never
//! reading, so the publisher never skips the scan), loses, duplicates and
//! misreports no event and keeps no payload alive.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;

use busline::{Bus, RecvError, Subscription};
use futures::executor::block_on;

use crate::ledger::{Ledger, Rng, P};
use crate::{check_own_stats, join, lossy_members, scale, spawn, watchdog, Pace, Track, TIMEOUT};

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
