//! A shared ring's backpressure signal follows its slowest member and ends
//! low once every member drained or left.

use std::sync::Arc;
use std::time::Duration;

use busline::Bus;

use crate::rt;

// ----- targeted deterministic cases ----------------------------------------

/// Watermarks on a shared lossless ring: raised when the slowest member
/// reaches high, kept while it stays above low (hysteresis), lowered when
/// it leaves and the rest are at or below low, or when the rest read down
/// to low after it left, and when the last member leaves.
#[tokio::test]
async fn backpressure_follows_the_slowest_member_as_members_leave() {
    let bus = Bus::<u32>::new();
    let pressure = bus.backpressure();
    let mk = |n: &str| {
        bus.subscriber("t")
            .lossless(8)
            .watermarks(6, 2)
            .name(n)
            .subscribe()
            .unwrap()
    };
    let (mut a, b) = (mk("a"), mk("b"));
    for i in 0..5 {
        bus.try_publish_to("t", i).unwrap();
    }
    assert!(!pressure.is_high());
    bus.try_publish_to("t", 5).unwrap();
    assert!(pressure.is_high(), "b has 6 = high waiting");
    for _ in 0..6 {
        a.recv().await.unwrap();
    }
    assert!(pressure.is_high(), "b still has 6 waiting");
    let st = bus.stats();
    assert!(st.subscriber("b").unwrap().pressured);
    assert!(!st.subscriber("a").unwrap().pressured);
    drop(b); // the slowest leaves; a has nothing waiting
    assert!(!pressure.is_high(), "a is at 0 <= low");

    // Hysteresis: the slowest leaves while the other is between low and high.
    let b = mk("b2");
    for i in 0..6 {
        bus.try_publish_to("t", i).unwrap();
    }
    assert!(pressure.is_high());
    for _ in 0..3 {
        a.recv().await.unwrap();
    }
    drop(b);
    assert!(pressure.is_high(), "a has 3 > low waiting: stays high");
    a.recv().await.unwrap();
    assert_eq!(a.len(), 2);
    assert!(!pressure.is_high(), "a drained to low (2 waiting)");
    // The last member leaving with a full queue lowers it too.
    while a.try_recv().unwrap().is_some() {}
    for i in 0..8 {
        bus.try_publish_to("t", i).unwrap();
    }
    assert!(pressure.is_high());
    drop(a);
    assert!(!pressure.is_high(), "no subscriber left");
}

// ----- concurrency -----------------------------------------------------------

/// Backpressure on a shared lossless ring with members reading at their
/// own pace on other threads: each round fills the ring past high (the
/// publisher has to wait), the members drain it, and then the signal must
/// be low again, whichever member happened to read last.
#[test]
fn backpressure_is_low_after_every_member_drained() {
    rt(2).block_on(async {
        let bus = Bus::<u64>::new();
        let pressure = bus.backpressure();
        const ROUNDS: u64 = 200;
        const BURST: u64 = 20;
        let mut readers = Vec::new();
        let barrier = Arc::new(tokio::sync::Barrier::new(4));
        for j in 0..3u64 {
            let mut sub = bus
                .subscriber("t")
                .lossless(8)
                .watermarks(6, 2)
                .subscribe()
                .unwrap();
            let barrier = barrier.clone();
            readers.push(tokio::spawn(async move {
                let mut next = 0;
                for round in 0..ROUNDS {
                    for _ in 0..BURST {
                        let e = sub.recv().await.unwrap();
                        assert_eq!(e.payload, next);
                        next += 1;
                        if (next + j + round) % 5 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    barrier.wait().await;
                    barrier.wait().await; // the main task checked
                }
                sub
            }));
        }
        let done = async {
            let mut high_rounds = 0;
            for round in 0..ROUNDS {
                let mut went_high = false;
                for i in 0..BURST {
                    bus.publish_to("t", round * BURST + i).await.unwrap();
                    went_high |= pressure.is_high();
                }
                barrier.wait().await; // every member read the burst
                assert!(
                    !pressure.is_high(),
                    "round {round}: every member drained, backpressure still high: {:?}",
                    bus.stats().subscribers
                );
                high_rounds += went_high as u64;
                barrier.wait().await;
            }
            for r in readers {
                r.await.unwrap();
            }
            high_rounds
        };
        let high_rounds = tokio::time::timeout(Duration::from_secs(120), done)
            .await
            .expect("hung");
        assert!(high_rounds > 0);
    });
}

/// The lossless slowest member leaves from another thread while the other
/// members read and a publisher waits; the bus's backpressure count must
/// end low once everything is drained (no raise without its lower).
#[test]
fn backpressure_with_members_leaving_concurrently_ends_low() {
    rt(2).block_on(async {
        let bus = Bus::<u64>::new();
        let pressure = bus.backpressure();
        for round in 0..300u64 {
            let mk = || {
                bus.subscriber("t")
                    .lossless(4)
                    .watermarks(3, 1)
                    .subscribe()
                    .unwrap()
            };
            let (mut a, idle) = (mk(), mk());
            let b = bus.clone();
            let p = tokio::spawn(async move {
                for i in 0..12 {
                    b.publish_to("t", i).await.unwrap();
                }
            });
            let r = tokio::spawn(async move {
                for i in 0..12 {
                    assert_eq!(a.recv().await.unwrap().payload, i);
                    if (i + round) % 3 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                a
            });
            if round % 2 == 0 {
                tokio::time::sleep(Duration::from_micros(30)).await;
            }
            tokio::spawn(async move { drop(idle) });
            let a = tokio::time::timeout(Duration::from_secs(20), async {
                p.await.unwrap();
                r.await.unwrap()
            })
            .await
            .unwrap_or_else(|_| panic!("round {round}: hung"));
            assert_eq!(a.len(), 0);
            assert!(
                !pressure.is_high(),
                "round {round}: drained and the slowest left, backpressure still high: {:?}",
                bus.stats().subscribers
            );
            drop(a);
        }
    });
}
