//! A full lossless subscriber holds publishers back and drops nothing:
//! `try_publish` is refused naming it and hands the event back, a waiting
//! publisher gets room as soon as there is some (or the subscriber leaves),
//! a cancelled one delivers to no one, and the signal has hysteresis.

use std::time::Duration;

use busline::{Bus, PublishError};

#[tokio::test]
async fn dropping_a_full_subscriber_releases_a_waiting_publisher() {
    let bus = Bus::<u32>::new();
    let sub = bus.subscriber("x").lossless(1).subscribe().unwrap();
    bus.publish_to("x", 0).await.unwrap();
    let b = bus.clone();
    let waiting = tokio::spawn(async move { b.publish_to("x", 1).await });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    drop(sub);
    let r = waiting.await.unwrap().unwrap();
    assert_eq!(r.subscribers, 0);
    assert_eq!(bus.stats().discarded, 1, "the unreceived event is counted");
}

#[tokio::test]
async fn cancelled_publish_delivers_to_no_one() {
    let bus = Bus::<u32>::new();
    let mut full = bus.subscriber("x").lossless(1).subscribe().unwrap();
    let mut other = bus.subscriber("x").lossy(8).subscribe().unwrap();
    bus.publish_to("x", 0).await.unwrap();
    // Times out while waiting for room: the future is dropped.
    let r = tokio::time::timeout(Duration::from_millis(20), bus.publish_to("x", 1)).await;
    assert!(r.is_err());
    assert_eq!(full.recv().await.unwrap().payload, 0);
    assert_eq!(other.recv().await.unwrap().payload, 0);
    assert!(
        other.try_recv().unwrap().is_none(),
        "all or nothing: no partial delivery"
    );
    assert_eq!(bus.stats().cancelled, 1);
}

#[tokio::test]
async fn try_publish_full_names_the_subscriber_and_returns_the_event() {
    let bus = Bus::<String>::new();
    let _a = bus.subscriber("x").lossy(1).subscribe().unwrap();
    let _b = bus
        .subscriber("x")
        .lossless(1)
        .name("archive")
        .subscribe()
        .unwrap();
    bus.try_publish_to("x", "one".into()).unwrap();
    let err = bus.try_publish_to("x", "two".into()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not published on `x`: subscriber `archive` is full (lossless); no subscriber received it"
    );
    assert_eq!(err.into_event(), "two");
}

#[tokio::test]
async fn backpressure_signal_has_hysteresis() {
    let bus = Bus::<u32>::new();
    let mut sub = bus
        .subscriber("w")
        .lossless(10)
        .watermarks(8, 2)
        .subscribe()
        .unwrap();
    let mut bp = bus.backpressure();
    for i in 0..8 {
        assert!(!bp.is_high(), "raised early at {i}");
        bus.try_publish_to("w", i).unwrap();
    }
    assert!(bp.is_high());
    // Receiving some brings the backlog below high but not to low: still raised.
    for _ in 0..4 {
        sub.try_recv().unwrap().unwrap();
    }
    assert_eq!(sub.len(), 4);
    assert!(bp.is_high());
    // Capacity still counts what the subscriber holds: it is a hard bound.
    let mut next = 8;
    while bus.try_publish_to("w", next).is_ok() {
        next += 1;
        assert!(sub.len() <= 10, "capacity exceeded: {}", sub.len());
    }
    assert!(next >= 10, "room for at least what was received");
    let mut got = Vec::new();
    while let Some(e) = sub.try_recv().unwrap() {
        got.push(e.payload);
    }
    assert_eq!(got, (4..next).collect::<Vec<_>>());
    assert!(!bp.is_high(), "drained to the low watermark");
    bp.wait_low().await;
    assert_eq!(sub.stats().peak, 10);
}

/// A publisher waiting for room gets it as soon as a subscriber takes an
/// event, before any later publisher: in a queue group and in a lossless
/// ring (where the subscriber takes its whole backlog in one batch).
#[tokio::test(start_paused = true)]
async fn a_waiting_publisher_is_woken_as_soon_as_there_is_room() {
    for group in [true, false] {
        let bus = Bus::<u32>::new();
        let b = bus.subscriber("t");
        let mut s = if group {
            b.queue("g").capacity(4)
        } else {
            b.lossless(4)
        }
        .subscribe()
        .unwrap();
        for i in 0..4 {
            bus.try_publish_to("t", i).unwrap();
        }
        let bus2 = bus.clone();
        let p = tokio::spawn(async move { bus2.publish_to("t", 4).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert!(!p.is_finished(), "the queue is full");
        assert_eq!(s.recv().await.unwrap().payload, 0);
        tokio::time::timeout(Duration::from_secs(5), p)
            .await
            .unwrap_or_else(|_| panic!("group {group}: the waiting publisher was not woken"))
            .unwrap()
            .unwrap();
        assert!(
            matches!(bus.try_publish_to("t", 5), Err(PublishError::Full { .. })),
            "group {group}: the room went to the waiting publisher"
        );
        for i in 1..5 {
            assert_eq!(s.recv().await.unwrap().payload, i);
        }
    }
}
