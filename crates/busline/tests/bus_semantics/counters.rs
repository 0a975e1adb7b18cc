//! A subscriber's counters add up (`delivered == received + dropped +
//! queued`), read through the subscription or the bus, and export through
//! the metrics facade.

use busline::Bus;
#[cfg(feature = "metrics")]
use busline::RecvError;

#[cfg(feature = "metrics")]
#[tokio::test]
async fn stats_export_through_the_metrics_facade() {
    let bus = Bus::<u32>::new();
    let mut s = bus
        .subscriber("m")
        .lossy(2)
        .name("dash")
        .subscribe()
        .unwrap();
    for i in 0..5 {
        bus.publish_to("m", i).await.unwrap();
    }
    assert_eq!(s.recv().await.unwrap_err(), RecvError::Lagged(3));
    let stats = bus.stats();
    assert_eq!(stats.published, 5);
    assert_eq!(stats.dropped, 3);
    let d = stats.subscriber("dash").unwrap();
    assert_eq!((d.delivered, d.dropped, d.queued), (5, 3, 2));
    // No recorder installed: exporting is a no-op and must not panic.
    stats.export();
}

/// `delivered == received + dropped + queued` for a ring subscriber part way
/// through what it was sent, read through the subscription and the bus.
#[tokio::test]
async fn a_ring_members_counters_add_up_as_it_reads() {
    let bus = Bus::<u32>::new();
    let mut s = bus.subscriber("t").lossless(16).subscribe().unwrap();
    for i in 0..4 {
        bus.try_publish_to("t", i).unwrap();
    }
    assert_eq!(s.recv().await.unwrap().payload, 0);
    let check = |st: &busline::SubscriberStats, received: u64, queued: usize| {
        assert_eq!(
            (st.delivered, st.received, st.queued),
            (4, received, queued),
            "{st:?}"
        );
        assert_eq!(
            st.delivered,
            st.received + st.dropped + st.queued as u64,
            "{st:?}"
        );
    };
    check(&s.stats(), 1, 3);
    check(&bus.stats().subscribers[0], 1, 3);
    for _ in 1..4 {
        s.recv().await.unwrap();
    }
    check(&s.stats(), 4, 0);
    check(&bus.stats().subscribers[0], 4, 0);
    assert!(s.try_recv().unwrap().is_none());
    check(&bus.stats().subscribers[0], 4, 0);
}
