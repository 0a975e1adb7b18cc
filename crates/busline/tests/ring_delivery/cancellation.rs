//! Publishes and receives given up while they wait lose, duplicate and
//! leak nothing.

use std::time::Duration;

use busline::{Bus, RecvError};

use crate::ledger::{Ledger, Rng, P};
use crate::rt;

/// Publishes given up while they wait (a timeout drops the future) deliver
/// to no one: retried with the same number, each member sees every number
/// exactly once, in order; `cancelled` counts the give-ups; every payload
/// (given up ones included) is dropped exactly once.
#[test]
fn cancelled_waiting_publishes_deliver_nothing() {
    for cap in [1usize, 2, 1025] {
        const N: u64 = 6_000;
        let ledger = Ledger::new(20 * N as usize);
        rt(2).block_on(async {
            let bus = Bus::<P>::new();
            let mut readers = Vec::new();
            for j in 0..2u64 {
                let mut sub = bus.subscriber("t").lossless(cap).subscribe().unwrap();
                readers.push(tokio::spawn(async move {
                    let mut next = 0u64;
                    loop {
                        match sub.recv().await {
                            Ok(e) => {
                                assert_eq!(e.payload.n, next, "cap {cap} member {j}");
                                next += 1;
                                if j == 1 && next % 50 == 0 {
                                    tokio::time::sleep(Duration::from_micros(500)).await;
                                }
                            }
                            Err(RecvError::Closed) => return next,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }));
            }
            let b = bus.clone();
            let l = ledger.clone();
            let p = tokio::spawn(async move {
                let mut gave_up = 0u64;
                let mut rng = Rng::from_state(77);
                for n in 0..N {
                    loop {
                        let wait = Duration::from_micros(rng.below(300));
                        match tokio::time::timeout(wait, b.publish_to("t", l.make(0, n))).await {
                            Ok(r) => {
                                r.unwrap();
                                break;
                            }
                            Err(_) => gave_up += 1,
                        }
                    }
                }
                gave_up
            });
            let (gave_up, got) = tokio::time::timeout(Duration::from_secs(300), async {
                let g = p.await.unwrap();
                let cancelled = bus.stats().cancelled;
                assert_eq!(cancelled, g, "cap {cap}: cancelled counts the give-ups");
                drop(bus);
                let mut got = Vec::new();
                for r in readers {
                    got.push(r.await.unwrap());
                }
                (g, got)
            })
            .await
            .expect("hung");
            assert_eq!(got, vec![N, N], "cap {cap} ({gave_up} give-ups)");
        });
        ledger.assert_each_dropped_once("cancelled_waiting_publishes_deliver_nothing");
    }
}

/// Ring members whose `recv` is given up again and again (a `select!` with
/// a short timer) lose nothing and are still woken for what comes next.
#[test]
fn ring_members_with_cancelled_recvs_lose_nothing() {
    const N: u64 = 20_000;
    rt(2).block_on(async {
        let bus = Bus::<u64>::new();
        let mut readers = Vec::new();
        for j in 0..3u64 {
            let mut sub = bus.subscriber("t").lossless(2).subscribe().unwrap();
            readers.push(tokio::spawn(async move {
                let mut next = 0u64;
                let mut gave_up = 0u64;
                loop {
                    tokio::select! {
                        r = sub.recv() => match r {
                            Ok(e) => {
                                assert_eq!(e.payload, next, "member {j}");
                                next += 1;
                            }
                            Err(RecvError::Closed) => return (next, gave_up),
                            Err(e) => panic!("{e}"),
                        },
                        _ = tokio::time::sleep(Duration::from_micros(20 * (j + 1))) => gave_up += 1,
                    }
                }
            }));
        }
        let b = bus.clone();
        let p = tokio::spawn(async move {
            for i in 0..N {
                b.publish_to("t", i).await.unwrap();
                if i % 1000 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(300), async {
            p.await.unwrap();
            drop(bus);
            for r in readers {
                assert_eq!(r.await.unwrap().0, N);
            }
        })
        .await
        .expect("hung");
    });
}
