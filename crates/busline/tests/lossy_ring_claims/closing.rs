//! Closing the bus while lossy readers claim: later publishes are refused
//! with the event handed back, and every member drains to `Closed` with
//! received + lag == what was accepted.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use busline::{Bus, PublishError, RecvError, Subscription};

use crate::ledger::{Ledger, Rng, P};
use crate::{join, lossy_members, scale, spawn, watchdog, Pace, TIMEOUT};

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
