//! With publishers and members on other threads, rings of every capacity
//! lose, duplicate and reorder no event (lossy members lag by exactly what
//! they report).

use std::time::Duration;

use busline::{Bus, RecvError, Subscription};

use crate::ledger::{Ledger, P};
use crate::{publish_mixed, rt};

/// Two publishers and three members on a capacity-1 (and 2) lossless ring,
/// readers and publishers on different threads: every member gets every
/// event, each publisher's in order. A lost wake-up hangs (timeout).
#[test]
fn tiny_lossless_rings_two_publishers_three_members() {
    for cap in [1usize, 2] {
        const PER: u64 = 20_000;
        let ledger = Ledger::new(2 * PER as usize + 8);
        rt(2).block_on(async {
            let bus = Bus::<P>::new();
            let mut readers = Vec::new();
            for j in 0..3 {
                let mut sub = bus.subscriber("t").lossless(cap).subscribe().unwrap();
                readers.push(tokio::spawn(async move {
                    let mut next = [0u64; 2];
                    let mut total = 0;
                    loop {
                        match sub.recv().await {
                            Ok(e) => {
                                let p = e.payload.publisher as usize;
                                assert_eq!(e.payload.n, next[p], "member {j} cap {cap}");
                                next[p] += 1;
                                total += 1;
                                if j == 2 && total % 1000 == 0 {
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                }
                            }
                            Err(RecvError::Closed) => return next,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }));
            }
            let mut pubs = Vec::new();
            for p in 0..2u32 {
                let bus = bus.clone();
                let ledger = ledger.clone();
                pubs.push(tokio::spawn(async move {
                    for n in 0..PER {
                        let r = publish_mixed(&bus, "t", ledger.make(p, n), n % 5 == 0).await;
                        assert_eq!(r, 3);
                    }
                }));
            }
            let done = async {
                for p in pubs {
                    p.await.unwrap();
                }
                drop(bus);
                for r in readers {
                    assert_eq!(r.await.unwrap(), [PER, PER]);
                }
            };
            tokio::time::timeout(Duration::from_secs(300), done)
                .await
                .expect("hung");
        });
        ledger.assert_each_dropped_once("tiny_lossless_rings_two_publishers_three_members");
    }
}

/// Lossy members sharing a ring with a publisher on another thread, lagging
/// by more than the capacity many times: events in order, never twice, and
/// received + reported lag == published exactly; the counters agree.
#[test]
fn lossy_members_lag_many_times_with_a_concurrent_publisher() {
    for cap in [1usize, 2, 3, 1025, 2048, 3000] {
        let n_events: u64 = if cap > 3 { 40 * cap as u64 } else { 60_000 };
        let ledger = Ledger::new(n_events as usize + 8);
        rt(2).block_on(async {
            let bus = Bus::<P>::new();
            let mut readers = Vec::new();
            for j in 0..3u64 {
                let mut sub = bus.subscriber("t").lossy(cap).subscribe().unwrap();
                readers.push(tokio::spawn(async move {
                    let (mut received, mut lag, mut last) = (0u64, 0u64, None::<u64>);
                    let mut laps = 0u64;
                    loop {
                        match sub.recv().await {
                            Ok(e) => {
                                let n = e.payload.n;
                                assert!(
                                    last.is_none_or(|l| n > l),
                                    "cap {cap}: {n} after {last:?}"
                                );
                                // Exact: what was skipped is what was reported.
                                assert_eq!(n, received + lag, "cap {cap} member {j}");
                                last = Some(n);
                                received += 1;
                                if received % (cap as u64 * (j + 1) + 7) == 0 {
                                    tokio::time::sleep(Duration::from_micros(200)).await;
                                }
                            }
                            Err(RecvError::Lagged(n)) => {
                                assert!(n > 0);
                                lag += n;
                                laps += 1;
                            }
                            Err(RecvError::Closed) => {
                                let st = sub.stats();
                                return (received, lag, laps, st);
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }));
            }
            let b = bus.clone();
            let ledger2 = ledger.clone();
            let p = tokio::spawn(async move {
                for n in 0..n_events {
                    let p = ledger2.make(0, n);
                    if n % 2 == 0 {
                        b.try_publish_to("t", p).unwrap();
                    } else {
                        b.publish_to("t", p).await.unwrap();
                    }
                }
            });
            let done = async {
                p.await.unwrap();
                bus.close();
                let mut res = Vec::new();
                for r in readers {
                    res.push(r.await.unwrap());
                }
                res
            };
            let res = tokio::time::timeout(Duration::from_secs(300), done)
                .await
                .expect("hung");
            for (received, lag, _laps, st) in res {
                assert_eq!(received + lag, n_events, "cap {cap}");
                assert_eq!(
                    (st.delivered, st.received, st.dropped, st.queued),
                    (n_events, received, lag, 0),
                    "cap {cap}"
                );
            }
        });
        ledger.assert_each_dropped_once("lossy_members_lag_many_times_with_a_concurrent_publisher");
    }
}

/// Lossless rings past one chunk (1025, 2048, 3000 slots) wrapping around
/// several times with a stalling member, a member joining and leaving part
/// way, and `try_publish` mixed in.
#[test]
fn large_lossless_rings_wrap_around() {
    for cap in [1025usize, 2048, 3000] {
        let n_events = 4 * cap as u64 + 17;
        let ledger = Ledger::new(n_events as usize + 8);
        rt(2).block_on(async {
            let bus = Bus::<P>::new();
            let reader = move |mut sub: Subscription<P>, stall: bool, stop_after: Option<u64>| {
                tokio::spawn(async move {
                    let mut first = None;
                    let mut next = None::<u64>;
                    let mut got = 0u64;
                    loop {
                        if stop_after.is_some_and(|s| got >= s) {
                            return (first, next, got);
                        }
                        match sub.recv().await {
                            Ok(e) => {
                                let n = e.payload.n;
                                if let Some(x) = next {
                                    assert_eq!(n, x, "cap {cap}: gap or duplicate");
                                } else {
                                    first = Some(n);
                                }
                                next = Some(n + 1);
                                got += 1;
                                if stall && got % (cap as u64 / 3) == 0 {
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                }
                            }
                            Err(RecvError::Closed) => return (first, next, got),
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            };
            let mk = || bus.subscriber("t").lossless(cap).subscribe().unwrap();
            let fast = reader(mk(), false, None);
            let slow = reader(mk(), true, None);
            let b = bus.clone();
            let ledger2 = ledger.clone();
            let p = tokio::spawn(async move {
                let mut mid = None;
                for n in 0..n_events {
                    if n == n_events / 3 {
                        let s = b.subscriber("t").lossless(cap).subscribe().unwrap();
                        mid = Some((n, reader(s, false, Some(cap as u64 + 5))));
                    }
                    publish_mixed(&b, "t", ledger2.make(0, n), n % 7 == 0).await;
                }
                mid.unwrap()
            });
            let done = async {
                let (joined_at, mid) = p.await.unwrap();
                let (first, _, got) = mid.await.unwrap();
                assert_eq!(
                    first,
                    Some(joined_at),
                    "cap {cap}: the member joining mid-way"
                );
                assert_eq!(got, cap as u64 + 5);
                drop(bus);
                for r in [fast, slow] {
                    assert_eq!(
                        r.await.unwrap(),
                        (Some(0), Some(n_events), n_events),
                        "cap {cap}"
                    );
                }
            };
            tokio::time::timeout(Duration::from_secs(300), done)
                .await
                .expect("hung");
        });
        ledger.assert_each_dropped_once("large_lossless_rings_wrap_around");
    }
}
