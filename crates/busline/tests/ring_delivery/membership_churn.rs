//! Members joining and leaving all along while publishers run each get a
//! gap-free run in order, and their counters add up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use busline::{Bus, RecvError};

use crate::ledger::{Ledger, Rng, P};
use crate::{publish_mixed, rt};

/// Shared rings of every shape (lossless and lossy; capacity 1, 2 and 1025)
/// on one topic tree: two publishers mixing `try_publish` and `publish`,
/// members joining, reading at different speeds and leaving (dropped or
/// unsubscribed, with unread events) all along. Each lossless member sees
/// each publisher's events with no gap or duplicate after its first; lossy
/// ones in order; each member's counters add up; every payload is dropped
/// exactly once in the end, and never more are alive than the rings can
/// hold plus what is in flight.
#[test]
fn shared_rings_churn_with_mixed_publishers() {
    const PUBLISHERS: u32 = 2;
    let per_scale: u64 = std::env::var("RING_REVIEW_SCALE")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1);
    #[allow(non_snake_case)]
    let PER: u64 = 25_000 * per_scale;
    let ledger = Ledger::new((PUBLISHERS as u64 * PER) as usize + 16);
    let configs: [(bool, usize); 6] = [
        (true, 1),
        (true, 2),
        (true, 1025),
        (false, 1),
        (false, 2),
        (false, 1025),
    ];
    let bound: i64 = configs.iter().map(|c| c.1 as i64).sum::<i64>() + 64;
    rt(3).block_on(async {
        let bus = Bus::<P>::new();
        let stop = Arc::new(AtomicBool::new(false));
        let mut members = Vec::new();
        for (k, &(lossless, cap)) in configs.iter().enumerate() {
            for j in 0..3u64 {
                let bus = bus.clone();
                let stop = stop.clone();
                members.push(tokio::spawn(async move {
                    let mut rng = Rng::from_state(0x9E37_79B9 ^ ((k as u64) << 8) ^ j);
                    let mut generation = 0u32;
                    loop {
                        let b = bus
                            .subscriber("c.>")
                            .name(format!("c{k}-{j}-{generation}"));
                        let mut sub = if lossless { b.lossless(cap) } else { b.lossy(cap) }
                            .subscribe()
                            .unwrap();
                        let mut last = [None::<u64>; PUBLISHERS as usize];
                        let (mut received, mut lag) = (0u64, 0u64);
                        let quota = 1 + rng.below(3 * cap as u64 + 200);
                        let stall_every = 20 + rng.below(300);
                        let closed = loop {
                            if received >= quota {
                                break false;
                            }
                            match sub.recv().await {
                                Ok(e) => {
                                    let (p, n) = (e.payload.publisher as usize, e.payload.n);
                                    match last[p] {
                                        Some(l) if lossless => assert_eq!(
                                            n,
                                            l + 1,
                                            "lossless {cap} member {j}: publisher {p} gap or duplicate"
                                        ),
                                        Some(l) => assert!(
                                            n > l,
                                            "lossy {cap} member {j}: publisher {p}: {n} after {l}"
                                        ),
                                        None => {}
                                    }
                                    last[p] = Some(n);
                                    received += 1;
                                    if received % stall_every == 0 {
                                        if j == 0 {
                                            tokio::time::sleep(Duration::from_micros(300)).await;
                                        } else {
                                            tokio::task::yield_now().await;
                                        }
                                    }
                                }
                                Err(RecvError::Lagged(n)) => {
                                    assert!(!lossless, "a lossless member lagged");
                                    assert!(n > 0);
                                    lag += n;
                                }
                                Err(RecvError::Closed) => break true,
                                Err(e) => panic!("{e}"),
                            }
                        };
                        let st = sub.stats();
                        assert_eq!(
                            st.delivered,
                            received + st.dropped + st.queued as u64,
                            "{st:?} received {received}"
                        );
                        assert_eq!(st.received, received);
                        assert!(st.dropped >= lag, "{st:?} lag {lag}");
                        assert!(st.queued <= cap, "{st:?}");
                        if lossless {
                            assert_eq!(st.dropped, 0);
                            assert!(st.peak <= cap, "{st:?}");
                        }
                        if rng.below(2) == 0 {
                            let _ = sub.unsubscribe();
                        } else {
                            drop(sub);
                        }
                        generation += 1;
                        if closed || stop.load(SeqCst) {
                            return generation;
                        }
                    }
                }));
            }
        }
        let mut pubs = Vec::new();
        for p in 0..PUBLISHERS {
            let bus = bus.clone();
            let ledger = ledger.clone();
            pubs.push(tokio::spawn(async move {
                let topic = format!("c.p{p}");
                let mut max_live = 0;
                for n in 0..PER {
                    let payload = ledger.make(p, n);
                    publish_mixed(&bus, &topic, payload, n % 3 == p as u64).await;
                    if n % 97 == 0 {
                        max_live = max_live.max(ledger.live());
                    }
                }
                max_live
            }));
        }
        let all = async {
            let mut max_live = 0;
            for p in pubs {
                max_live = max_live.max(p.await.unwrap());
            }
            stop.store(true, SeqCst);
            bus.close();
            for m in members {
                assert!(m.await.unwrap() > 0);
            }
            max_live
        };
        let max_live = tokio::time::timeout(Duration::from_secs(300), all)
            .await
            .expect("a member or publisher hung (lost wake-up?)");
        assert!(
            max_live <= bound,
            "{max_live} payloads alive at once, more than the rings hold ({bound})"
        );
        let stats = bus.stats();
        assert!(stats.subscribers.is_empty());
        drop(bus);
    });
    ledger.assert_each_dropped_once("shared_rings_churn_with_mixed_publishers");
}

/// Many members join a ring at once while a publisher runs and leave again:
/// each gets a gap-free run starting where it joined; the receipts count
/// exactly the members present.
#[test]
fn members_joining_in_bursts_get_gap_free_runs() {
    rt(2).block_on(async {
        let bus = Bus::<u64>::new();
        let mut anchor = bus.subscriber("t").lossless(64).subscribe().unwrap();
        let b = bus.clone();
        const N: u64 = 50_000;
        let p = tokio::spawn(async move {
            let mut counts: HashMap<usize, u64> = HashMap::new();
            for i in 0..N {
                let r = b.publish_to("t", i).await.unwrap();
                *counts.entry(r.subscribers).or_default() += 1;
            }
            counts
        });
        let a = tokio::spawn(async move {
            for i in 0..N {
                assert_eq!(anchor.recv().await.unwrap().payload, i);
            }
        });
        let mut joiners = Vec::new();
        for wave in 0..40u64 {
            for j in 0..4u64 {
                let mut s = bus.subscriber("t").lossless(64).subscribe().unwrap();
                joiners.push(tokio::spawn(async move {
                    let first = match s.recv().await {
                        Ok(e) => e.payload,
                        Err(RecvError::Closed) => return,
                        Err(e) => panic!("{e}"),
                    };
                    for k in 1..(50 + 30 * j + wave) {
                        match s.recv().await {
                            Ok(e) => assert_eq!(e.payload, first + k, "wave {wave} member {j}"),
                            Err(RecvError::Closed) => return,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }));
            }
            tokio::time::sleep(Duration::from_micros(300)).await;
        }
        let counts = tokio::time::timeout(Duration::from_secs(120), async {
            let c = p.await.unwrap();
            a.await.unwrap();
            bus.close();
            for j in joiners {
                j.await.unwrap();
            }
            c
        })
        .await
        .expect("hung");
        assert_eq!(counts.values().sum::<u64>(), N);
        assert!(counts.keys().all(|&k| k >= 1));
    });
}
