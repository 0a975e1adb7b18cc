//! A lossless subscriber loses nothing, even stalled again and again; a
//! lossy one accounts for every event as received or reported lag; each
//! gets every publisher's events in order, never twice.

use std::time::Duration;

use busline::{Bus, RecvError};
use proptest::prelude::*;

use crate::rt;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// For a lossy subscriber, received + reported lag == published, exactly,
    /// whatever the interleaving of publishes and receives.
    #[test]
    fn lossy_received_plus_lag_equals_published(
        capacity in 1usize..40,
        ops in proptest::collection::vec(0u8..4, 1..600),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let bus = Bus::<u64>::new();
            let mut sub = bus.subscriber("t").lossy(capacity).subscribe().unwrap();
            let (mut published, mut received, mut lag) = (0u64, 0u64, 0u64);
            let mut last_seen: Option<u64> = None;
            for op in ops {
                if op < 3 {
                    bus.try_publish_to("t", published).unwrap();
                    published += 1;
                } else {
                    match sub.try_recv() {
                        Ok(Some(e)) => {
                            // Order kept, and no event comes back twice.
                            if let Some(l) = last_seen { prop_assert!(e.payload > l); }
                            last_seen = Some(e.payload);
                            received += 1;
                        }
                        Ok(None) => {}
                        Err(RecvError::Lagged(n)) => lag += n,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            drop(bus);
            loop {
                match sub.recv().await {
                    Ok(e) => {
                        if let Some(l) = last_seen { prop_assert!(e.payload > l); }
                        last_seen = Some(e.payload);
                        received += 1;
                    }
                    Err(RecvError::Lagged(n)) => lag += n,
                    Err(RecvError::Closed) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            prop_assert_eq!(received + lag, published);
            Ok(())
        })?;
    }
}

/// A lossless subscriber that stalls again and again loses nothing over
/// 1,000,000 events, while a lossy one beside it keeps running.
#[test]
fn stalled_lossless_loses_nothing_over_a_million_events() {
    const N: u64 = 1_000_000;
    rt().block_on(async {
        let bus = Bus::<u64>::new();
        let mut lossless = bus
            .subscriber("m.>")
            .lossless(256)
            .name("slow")
            .subscribe()
            .unwrap();
        let mut lossy = bus
            .subscriber("m.*")
            .lossy(64)
            .name("fast")
            .subscribe()
            .unwrap();
        let slow = tokio::spawn(async move {
            let mut next = 0u64;
            loop {
                match lossless.recv().await {
                    Ok(e) => {
                        assert_eq!(e.payload, next, "lossless order or loss");
                        next += 1;
                        if next % 100_000 == 0 {
                            // Stall: the publisher must wait, not drop.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    Err(RecvError::Closed) => break,
                    Err(e) => panic!("lossless subscriber got {e}"),
                }
            }
            next
        });
        let fast = tokio::spawn(async move {
            let (mut got, mut lag, mut last) = (0u64, 0u64, None);
            loop {
                match lossy.recv().await {
                    Ok(e) => {
                        assert!(last.is_none_or(|l| e.payload > l));
                        last = Some(e.payload);
                        got += 1;
                    }
                    Err(RecvError::Lagged(n)) => lag += n,
                    Err(RecvError::Closed) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            (got, lag)
        });
        let stats_bus = bus.clone();
        let publisher = tokio::spawn(async move {
            for i in 0..N {
                bus.publish_to("m.x", i).await.unwrap();
            }
        });
        publisher.await.unwrap();
        let stats = stats_bus.stats();
        drop(stats_bus);
        assert_eq!(slow.await.unwrap(), N);
        let (got, lag) = fast.await.unwrap();
        assert_eq!(got + lag, N);
        assert_eq!(stats.published, N);
        let slow = stats.subscriber("slow").unwrap();
        assert_eq!(slow.delivered, N);
        assert_eq!(slow.dropped, 0);
        assert!(
            slow.blocked > Duration::ZERO,
            "the publisher waited on the stalled subscriber"
        );
        assert_eq!(stats.subscriber("fast").unwrap().dropped, lag);
    });
}

#[tokio::test]
async fn per_publisher_order_holds_with_concurrent_publishers() {
    let bus = Bus::<(u8, u32)>::new();
    let mut sub = bus.subscriber("p.*").lossless(16).subscribe().unwrap();
    let mut pubs = Vec::new();
    for p in 0..4u8 {
        let bus = bus.clone();
        pubs.push(tokio::spawn(async move {
            for i in 0..5_000u32 {
                bus.publish_to(&format!("p.{p}"), (p, i)).await.unwrap();
            }
        }));
    }
    let mut next = [0u32; 4];
    for _ in 0..20_000 {
        let e = sub.recv().await.unwrap();
        let (p, i) = e.payload;
        assert_eq!(i, next[p as usize], "publisher {p} out of order");
        next[p as usize] += 1;
    }
    for p in pubs {
        p.await.unwrap();
    }
}
