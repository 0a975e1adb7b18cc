//! Unfiltered lossless or lossy subscribers with the same pattern, policy,
//! capacity and watermarks read one ring at their own cursors: sharing
//! changes nothing a subscriber can observe.

use std::sync::Arc;
use std::time::Duration;

use busline::{Bus, PublishError, RecvError, SubscribeError};
use proptest::prelude::*;

use crate::rt;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Lossy members of one ring, joining and leaving at any time, each see
    /// exactly received + reported lag == events published since they joined,
    /// in order, and their `dropped` counter equals the lag reported to them.
    #[test]
    fn ring_members_each_account_for_every_event(
        capacity in 1usize..24,
        ops in proptest::collection::vec((0u8..8, 0usize..4), 1..500),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let bus = Bus::<u64>::new();
            // (subscription, published when it joined, received, lag, last seen)
            type Slot = Option<(busline::Subscription<u64>, u64, u64, u64, Option<u64>)>;
            let mut members: Vec<Slot> = (0..4).map(|_| None).collect();
            let mut published = 0u64;
            let check = |m: &(busline::Subscription<u64>, u64, u64, u64, Option<u64>),
                         published: u64| -> Result<(), TestCaseError> {
                let (sub, joined, received, lag, _) = m;
                let waiting = sub.len() as u64;
                // `dropped` counts the lost events reported so far and those
                // the next receive will report.
                let st = sub.stats();
                prop_assert_eq!(received + st.dropped + waiting, published - joined,
                    "received {} dropped {} waiting {} published {} joined {}",
                    received, st.dropped, waiting, published, joined);
                prop_assert_eq!(st.delivered, published - joined);
                prop_assert!(st.dropped >= *lag);
                Ok(())
            };
            for (op, who) in ops {
                match op {
                    0..=3 => {
                        bus.try_publish_to("r", published).unwrap();
                        published += 1;
                    }
                    4 | 5 => {
                        if let Some((sub, _, received, lag, last)) = members[who].as_mut() {
                            match sub.try_recv() {
                                Ok(Some(e)) => {
                                    prop_assert!(last.is_none_or(|l| e.payload > l));
                                    *last = Some(e.payload);
                                    *received += 1;
                                }
                                Ok(None) => {}
                                Err(RecvError::Lagged(n)) => *lag += n,
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                    6 => {
                        // Join (all with the same settings: one ring).
                        if members[who].is_none() {
                            let sub = bus
                                .subscriber("r")
                                .lossy(capacity)
                                .name(format!("m{who}"))
                                .subscribe()
                                .unwrap();
                            members[who] = Some((sub, published, 0, 0, None));
                        }
                    }
                    _ => {
                        if let Some(m) = members[who].take() {
                            check(&m, published)?;
                        }
                    }
                }
            }
            let stats = bus.stats();
            let live: u64 = stats.subscribers.iter().map(|s| s.delivered).sum();
            prop_assert!(stats.delivered >= live);
            drop(bus);
            for m in members.iter_mut().flatten() {
                check(m, published)?;
                let (sub, joined, received, lag, last) = m;
                loop {
                    match sub.recv().await {
                        Ok(e) => {
                            prop_assert!(last.is_none_or(|l| e.payload > l));
                            *last = Some(e.payload);
                            *received += 1;
                        }
                        Err(RecvError::Lagged(n)) => *lag += n,
                        Err(RecvError::Closed) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                prop_assert_eq!(*received + *lag, published - *joined);
                prop_assert_eq!(sub.stats().dropped, *lag);
            }
            Ok(())
        })?;
    }
}

/// A fast and a stalled lossless subscriber on one ring: both get every
/// event in order; the publisher's waiting is charged to the stalled one.
#[test]
fn ring_members_lossless_fast_and_stalled() {
    const N: u64 = 200_000;
    rt().block_on(async {
        let bus = Bus::<u64>::new();
        let mk = |name: &str| {
            bus.subscriber("s.>")
                .lossless(128)
                .name(name)
                .subscribe()
                .unwrap()
        };
        let (mut fast, mut slow) = (mk("fast"), mk("slow"));
        let reader = |mut sub: busline::Subscription<u64>, stall: bool| {
            tokio::spawn(async move {
                let mut next = 0u64;
                loop {
                    match sub.recv().await {
                        Ok(e) => {
                            assert_eq!(e.payload, next, "{}: order or loss", sub.name());
                            next += 1;
                            if stall && next % 20_000 == 0 {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                        Err(RecvError::Closed) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                next
            })
        };
        let (f, s) = (
            reader(std::mem::replace(&mut fast, mk("spare")), false),
            reader(std::mem::replace(&mut slow, mk("spare2")), true),
        );
        drop((fast, slow)); // the spares leave: the ring goes on with two members
        let stats_bus = bus.clone();
        for i in 0..N {
            bus.publish_to("s.x", i).await.unwrap();
        }
        let stats = stats_bus.stats();
        drop(bus);
        drop(stats_bus);
        assert_eq!(f.await.unwrap(), N);
        assert_eq!(s.await.unwrap(), N);
        let slow = stats.subscriber("slow").unwrap();
        let fast = stats.subscriber("fast").unwrap();
        assert_eq!((slow.delivered, fast.delivered), (N, N));
        assert!(
            slow.blocked > Duration::ZERO,
            "the publisher waited on `slow`"
        );
        assert_eq!(stats.subscribers.len(), 2);
    });
}

/// Dropping the slowest member of a shared lossless ring releases the
/// publisher waiting on it; its unread events are counted as discarded and
/// the other member still gets every one of them.
#[tokio::test]
async fn dropping_the_slowest_ring_member_releases_the_publisher() {
    let bus = Bus::<u32>::new();
    let mut keen = bus
        .subscriber("t")
        .lossless(4)
        .name("keen")
        .subscribe()
        .unwrap();
    let idle = bus
        .subscriber("t")
        .lossless(4)
        .name("idle")
        .subscribe()
        .unwrap();
    for i in 0..4 {
        bus.publish_to("t", i).await.unwrap();
    }
    for i in 0..4 {
        assert_eq!(keen.recv().await.unwrap().payload, i);
    }
    assert!(keen.try_recv().unwrap().is_none()); // back at the ring: only `idle` is behind
    let b = bus.clone();
    let waiting = tokio::spawn(async move { b.publish_to("t", 4).await.unwrap().subscribers });
    tokio::task::yield_now().await;
    match bus.try_publish_to("t", 99) {
        Err(PublishError::Full { subscriber, .. }) => assert_eq!(&*subscriber, "idle"),
        other => panic!("{other:?}"),
    }
    drop(idle);
    assert_eq!(waiting.await.unwrap(), 1, "delivered to `keen` alone");
    assert_eq!(keen.recv().await.unwrap().payload, 4);
    let stats = bus.stats();
    assert_eq!(stats.discarded, 4, "idle's four unread events");
    assert_eq!(stats.delivered, 5 + 4, "keen's five and idle's four");
}

/// Threads racing on shared rings: three publishers, lossless and lossy
/// members that join, read at different speeds and leave while events flow.
/// Every member sees each publisher's events in order, never twice, and its
/// counters add up: delivered == received + dropped + discarded. A lost
/// wake-up would hang this test (it is bounded by a timeout).
#[test]
fn ring_members_race_with_publishers_and_account_for_everything() {
    const PUBLISHERS: u32 = 3;
    const PER: u64 = 30_000;
    rt().block_on(async {
        let bus = Bus::<(u32, u64)>::new();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut members = Vec::new();
        for m in 0..8u32 {
            let bus = bus.clone();
            let stop = stop.clone();
            members.push(tokio::spawn(async move {
                let mut generation = 0u32;
                let (mut checked, mut lost) = (0u64, 0u64);
                loop {
                    // Lossless and lossy members, two ring settings each.
                    let b = bus.subscriber("race.>").name(format!("m{m}-{generation}"));
                    let b = match m % 4 {
                        0 => b.lossless(64),
                        1 => b.lossless(256),
                        2 => b.lossy(32),
                        _ => b.lossy(128),
                    };
                    let mut sub = match b.subscribe() {
                        Ok(sub) => sub,
                        // The publishers finished and the bus closed after
                        // this member last looked at `stop`.
                        Err(SubscribeError::Closed) => return (checked, lost),
                        Err(e) => panic!("{e}"),
                    };
                    let mut last = [None::<u64>; PUBLISHERS as usize];
                    let (mut received, mut lag) = (0u64, 0u64);
                    let quota = 2_000 + 1_000 * m as u64;
                    let end = loop {
                        if received >= quota {
                            break false;
                        }
                        match sub.recv().await {
                            Ok(e) => {
                                let (p, n) = e.payload;
                                let l = &mut last[p as usize];
                                assert!(l.is_none_or(|l| n > l), "member {m}: {p}/{n} after {l:?}");
                                *l = Some(n);
                                received += 1;
                                if m % 2 == 1 && received % 500 == 0 {
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                }
                            }
                            Err(RecvError::Lagged(n)) => lag += n,
                            Err(RecvError::Closed) => break true,
                            Err(e) => panic!("{e}"),
                        }
                    };
                    let st = sub.stats();
                    let waiting = st.queued as u64; // taken with the counters, under one lock
                    assert!(st.dropped >= lag);
                    assert_eq!(
                        st.delivered,
                        received + st.dropped + waiting,
                        "member {m} gen {generation}: {st:?}, received {received}, waiting {waiting}"
                    );
                    if m % 4 < 2 {
                        assert_eq!(st.dropped, 0, "lossless member {m} lost events");
                    }
                    checked += st.delivered;
                    lost += st.dropped;
                    drop(sub); // leaves; the ring goes on for the others
                    generation += 1;
                    if end || stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return (checked, lost);
                    }
                }
            }));
        }
        let mut pubs = Vec::new();
        for p in 0..PUBLISHERS {
            let bus = bus.clone();
            pubs.push(tokio::spawn(async move {
                for n in 0..PER {
                    bus.publish_to(&format!("race.p{p}"), (p, n)).await.unwrap();
                }
            }));
        }
        let all = async {
            for p in pubs {
                p.await.unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            bus.close();
            let (mut total, mut lost) = (0, 0);
            for m in members {
                let (t, l) = m.await.unwrap();
                total += t;
                lost += l;
            }
            (total, lost)
        };
        let (total, lost) = tokio::time::timeout(Duration::from_secs(120), all)
            .await
            .expect("a member or publisher hung (lost wake-up?)");
        assert!(total > 0);
        let stats = bus.stats();
        assert_eq!(stats.published, PUBLISHERS as u64 * PER);
        assert!(stats.subscribers.is_empty(), "every member left");
        // Gone members' counters stay in the bus totals, lag not yet
        // reported to them included. (At least what each member's last
        // snapshot said: publishers ran on between it and the member leaving.)
        assert!(stats.delivered >= total, "{} < {total}", stats.delivered);
        assert!(stats.dropped >= lost, "{} < {lost}", stats.dropped);
    });
}
