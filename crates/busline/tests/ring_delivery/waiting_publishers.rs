//! A publisher waiting on a full lossless ring is released by the slowest
//! member's reads or by its leaving, and never hangs.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use busline::Bus;

use crate::ledger::{Ledger, P};
use crate::{publish_mixed, rt};

// ----- targeted deterministic cases ----------------------------------------

/// A member joining a full lossless ring while a publisher waits: it does
/// not add to the wait, and gets what comes after it joined, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_a_full_ring_while_a_publisher_waits() {
    for cap in [1usize, 2, 1025] {
        let bus = Bus::<u64>::new();
        let mk = || bus.subscriber("t").lossless(cap).subscribe().unwrap();
        let mut slow = mk();
        for i in 0..cap as u64 {
            bus.try_publish_to("t", i).unwrap();
        }
        let b = bus.clone();
        let n = cap as u64 + 5;
        let p = tokio::spawn(async move {
            for i in cap as u64..n {
                b.publish_to("t", i).await.unwrap();
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!p.is_finished());
        let mut late = mk();
        let got = tokio::time::timeout(Duration::from_secs(20), async {
            let mut late_got = Vec::new();
            for i in 0..n {
                assert_eq!(slow.recv().await.unwrap().payload, i);
                while let Some(e) = late.try_recv().unwrap() {
                    late_got.push(e.payload);
                }
            }
            p.await.unwrap();
            while let Some(e) = late.try_recv().unwrap() {
                late_got.push(e.payload);
            }
            late_got
        })
        .await
        .expect("hung");
        assert_eq!(got, (cap as u64..n).collect::<Vec<_>>(), "cap {cap}");
    }
}

/// A publisher waiting on a full lossless ring is woken by the reads of
/// the member it waits on (the slowest) alone, however far ahead the
/// others are: they are past the mark it waits for and leave the ring to
/// the slowest one's reads, which must wake it on each run it has
/// waiting. Step by step on one thread, polling the publish by hand.
#[test]
fn the_slowest_members_reads_wake_a_waiting_publisher() {
    struct Flag(AtomicBool);
    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, SeqCst);
        }
    }
    for cap in [1usize, 2, 8, 16, 1025] {
        let bus = Bus::<u64>::new();
        let mk = |n: &str| {
            bus.subscriber("t")
                .lossless(cap)
                .name(n)
                .subscribe()
                .unwrap()
        };
        let (mut fast, mut slow) = (mk("fast"), mk("slow"));
        let (mut next, mut read) = (0u64, 0u64);
        for run in 0..3 {
            while bus.try_publish_to("t", next).is_ok() {
                next += 1;
            }
            let flag = Arc::new(Flag(AtomicBool::new(false)));
            let waker = std::task::Waker::from(flag.clone());
            let mut cx = std::task::Context::from_waker(&waker);
            let mut publish = std::pin::pin!(bus.publish_to("t", next));
            assert!(
                publish.as_mut().poll(&mut cx).is_pending(),
                "cap {cap}: full"
            );
            // Every event not read yet, in order, to each member.
            let unread: Vec<u64> = (read..next).collect();
            let fast_got: Vec<u64> = fast.drain().iter().map(|e| e.payload).collect();
            assert_eq!(fast_got, unread, "cap {cap} run {run}");
            assert!(!flag.0.load(SeqCst), "cap {cap}: woken with no room");
            let slow_got: Vec<u64> = slow.drain().iter().map(|e| e.payload).collect();
            assert_eq!(slow_got, unread, "cap {cap} run {run}");
            read = next;
            assert!(
                flag.0.load(SeqCst),
                "cap {cap} run {run}: the slowest member read the ring empty and the publisher was not woken"
            );
            assert!(publish.as_mut().poll(&mut cx).is_ready(), "cap {cap}: room");
            next += 1;
        }
    }
}

// ----- concurrency -----------------------------------------------------------

/// A subscriber dropped (or unsubscribed), from another task, while a
/// publisher waits on its full queue: the publisher goes on, the other
/// member gets everything, nothing leaks. Many rounds, capacities 1 and 2.
#[test]
fn dropping_a_member_a_publisher_waits_on_never_hangs() {
    let ledger = Ledger::new(100_000);
    rt(2).block_on(async {
        for round in 0..400u64 {
            let cap = 1 + (round % 2) as usize;
            let bus = Bus::<P>::new();
            let mk = || bus.subscriber("t").lossless(cap).subscribe().unwrap();
            let (mut keen, idle) = (mk(), mk());
            let n = cap as u64 + 3;
            let b = bus.clone();
            let l = ledger.clone();
            let p = tokio::spawn(async move {
                for i in 0..n {
                    publish_mixed(&b, "t", l.make(0, i), i % 2 == 1).await;
                }
            });
            let k = tokio::spawn(async move {
                for i in 0..n {
                    assert_eq!(keen.recv().await.unwrap().payload.n, i);
                }
                keen
            });
            // Leave at different moments: at once, after a yield, after a
            // short sleep (the publisher waits by then).
            match round % 4 {
                0 => {}
                1 => tokio::task::yield_now().await,
                _ => tokio::time::sleep(Duration::from_micros(50 * (round % 7))).await,
            }
            let d = tokio::spawn(async move {
                if round % 3 == 0 {
                    idle.unsubscribe()
                } else {
                    drop(idle);
                    0
                }
            });
            let (keen, d_ret) = tokio::time::timeout(Duration::from_secs(20), async {
                p.await.unwrap();
                let d_ret = d.await.unwrap();
                (k.await.unwrap(), d_ret)
            })
            .await
            .unwrap_or_else(|_| panic!("round {round}: hung"));
            let unsubscribed = d_ret;
            let st = bus.stats();
            assert_eq!(st.subscribers.len(), 1);
            let ks = keen.stats();
            assert_eq!(
                (ks.delivered, ks.received, ks.queued),
                (n, n, 0),
                "round {round}"
            );
            // idle received nothing: all it was delivered it discarded.
            assert_eq!(st.delivered, n + st.discarded, "round {round}: {st:?}");
            if round % 3 == 0 {
                assert_eq!(unsubscribed, st.discarded, "round {round}");
            }
            drop(keen);
            drop(bus);
        }
    });
    ledger.assert_each_dropped_once("dropping_a_member_a_publisher_waits_on_never_hangs");
}
