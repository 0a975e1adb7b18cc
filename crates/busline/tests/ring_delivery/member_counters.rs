//! Each ring member's own counters are exact: its peak, the time a
//! publisher waited on it, and what `unsubscribe` discarded.

use std::time::Duration;

use busline::{Bus, PublishError, RecvError};

/// A lossy queue holds at most its capacity, so its peak is at most that:
/// but when another member of its ring leaves, the ring refreshes every
/// member's peak from `tail - cursor`, which for a lossy member that fell
/// behind counts events long overwritten.
#[tokio::test]
async fn lossy_peak_stays_within_capacity_when_a_ring_member_leaves() {
    let bus = Bus::<u32>::new();
    let a = bus.subscriber("t").lossy(4).name("a").subscribe().unwrap();
    let b = bus.subscriber("t").lossy(4).name("b").subscribe().unwrap();
    for i in 0..100 {
        bus.publish_to("t", i).await.unwrap();
    }
    assert!(a.stats().peak <= 4, "{:?}", a.stats());
    drop(b);
    let st = a.stats();
    assert_eq!(st.queued, 4);
    assert!(st.peak <= 4, "peak {} > capacity 4: {st:?}", st.peak);
}

/// The publisher waited on `slow` (the only member whose queue was full;
/// `try_publish` named it), not on `fast`: the waiting time is `slow`'s.
#[tokio::test(flavor = "current_thread")]
async fn blocked_time_is_charged_to_the_member_the_publisher_waited_on() {
    let bus = Bus::<u32>::new();
    let mk = |n: &str| bus.subscriber("t").lossless(4).name(n).subscribe().unwrap();
    let (mut slow, mut fast) = (mk("slow"), mk("fast"));
    for i in 0..4 {
        bus.try_publish_to("t", i).unwrap();
    }
    for i in 0..2 {
        assert_eq!(fast.recv().await.unwrap().payload, i);
    }
    let b = bus.clone();
    let p = tokio::spawn(async move { b.publish_to("t", 4).await.unwrap().subscribers });
    tokio::time::sleep(Duration::from_millis(50)).await; // the publisher waits
    assert!(!p.is_finished());
    match bus.try_publish_to("t", 99) {
        Err(PublishError::Full { subscriber, .. }) => assert_eq!(&*subscriber, "slow"),
        other => panic!("{other:?}"),
    }
    for i in 0..4 {
        assert_eq!(slow.recv().await.unwrap().payload, i);
    }
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), p)
            .await
            .expect("hung")
            .unwrap(),
        2
    );
    let stats = bus.stats();
    let (s, f) = (
        stats.subscriber("slow").unwrap(),
        stats.subscriber("fast").unwrap(),
    );
    assert!(
        s.blocked >= Duration::from_millis(40) && f.blocked == Duration::ZERO,
        "the publisher waited on `slow` only: slow.blocked {:?}, fast.blocked {:?}",
        s.blocked,
        f.blocked
    );
}

/// Same as above with the member it waited on leaving (which is what
/// released the publisher): the wait is not charged to the member left.
#[tokio::test(flavor = "current_thread")]
async fn blocked_time_is_not_charged_to_a_member_that_never_was_full() {
    let bus = Bus::<u32>::new();
    let mk = |n: &str| bus.subscriber("t").lossless(4).name(n).subscribe().unwrap();
    let (idle, mut keen) = (mk("idle"), mk("keen"));
    for i in 0..4 {
        bus.try_publish_to("t", i).unwrap();
        assert_eq!(keen.recv().await.unwrap().payload, i);
    }
    let b = bus.clone();
    let p = tokio::spawn(async move { b.publish_to("t", 4).await.unwrap().subscribers });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!p.is_finished());
    drop(idle);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), p)
            .await
            .expect("hung")
            .unwrap(),
        1
    );
    let st = keen.stats();
    assert_eq!(
        st.blocked,
        Duration::ZERO,
        "keen's queue never was full: {st:?}"
    );
}

/// `unsubscribe()` returns what that member was handed and never received,
/// for each member of a shared ring; bus totals add up.
#[tokio::test]
async fn unsubscribe_counts_per_ring_member() {
    let bus = Bus::<u32>::new();
    let mk = |n: &str| {
        bus.subscriber("t")
            .lossless(16)
            .name(n)
            .subscribe()
            .unwrap()
    };
    let (mut a, mut b, mut c) = (mk("a"), mk("b"), mk("c"));
    for i in 0..10 {
        bus.publish_to("t", i).await.unwrap();
    }
    for i in 0..3 {
        assert_eq!(a.recv().await.unwrap().payload, i);
    }
    for i in 0..10 {
        assert_eq!(b.recv().await.unwrap().payload, i);
    }
    assert_eq!(a.unsubscribe(), 7);
    assert_eq!(b.unsubscribe(), 0);
    assert_eq!(bus.stats().discarded, 7);
    for i in 10..12 {
        assert_eq!(bus.publish_to("t", i).await.unwrap().subscribers, 1);
    }
    assert_eq!(c.recv().await.unwrap().payload, 0);
    assert_eq!(c.unsubscribe(), 11);
    let st = bus.stats();
    assert_eq!((st.delivered, st.discarded, st.dropped), (32, 18, 0));

    // Lossy: lost events are dropped (reported or not), queued ones discarded.
    let bus = Bus::<u32>::new();
    let mk = |n: &str| bus.subscriber("t").lossy(4).name(n).subscribe().unwrap();
    let (mut x, y) = (mk("x"), mk("y"));
    for i in 0..10 {
        bus.publish_to("t", i).await.unwrap();
    }
    assert_eq!(x.recv().await.unwrap_err(), RecvError::Lagged(6));
    assert_eq!(x.recv().await.unwrap().payload, 6);
    assert_eq!(x.recv().await.unwrap().payload, 7);
    let (sx, sy) = (x.stats(), y.stats());
    assert_eq!(
        (sx.delivered, sx.received, sx.dropped, sx.queued),
        (10, 2, 6, 2)
    );
    assert_eq!(
        (sy.delivered, sy.received, sy.dropped, sy.queued),
        (10, 0, 6, 4)
    );
    assert_eq!(y.unsubscribe(), 4);
    assert_eq!(x.unsubscribe(), 2);
    let st = bus.stats();
    assert_eq!((st.delivered, st.dropped, st.discarded), (20, 12, 6));
}
