//! An invalid topic or pattern is an error that hands the event back; an
//! event reaches exactly the subscribers whose pattern and filter match,
//! as they come and go, all sharing one envelope.

use std::sync::Arc;

use busline::{Bus, Message, PublishError};

#[tokio::test]
async fn invalid_topics_are_errors_that_hand_the_event_back() {
    let bus = Bus::<u32>::new();
    let err = bus.publish_to("a..b", 7).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "not published: invalid topic `a..b`: token 2 is empty"
    );
    assert!(matches!(err, PublishError::InvalidTopic { event: 7, .. }));
    let err = bus.subscribe("a.>.b").unwrap_err();
    assert!(err
        .to_string()
        .contains("`>` is only allowed as the last token"));
    let err = bus.send(Message::new(1)).await.unwrap_err();
    assert!(err.to_string().contains("it is empty"), "{err}");
}

#[tokio::test]
async fn subscribers_come_and_go_routes_follow() {
    let bus = Bus::<u32>::new();
    assert_eq!(bus.publish_to("a.b", 0).await.unwrap().subscribers, 0);
    let mut s1 = bus.subscribe("a.*").unwrap();
    assert_eq!(bus.publish_to("a.b", 1).await.unwrap().subscribers, 1);
    let s2 = bus.subscribe("a.>").unwrap();
    assert_eq!(bus.publish_to("a.b", 2).await.unwrap().subscribers, 2);
    drop(s2);
    assert_eq!(bus.publish_to("a.b", 3).await.unwrap().subscribers, 1);
    let got: Vec<u32> = (0..3)
        .map(|_| s1.try_recv().unwrap().unwrap().payload)
        .collect();
    assert_eq!(got, vec![1, 2, 3]);
    assert_eq!(bus.stats().unrouted, 1);
}

#[tokio::test]
async fn one_envelope_shared_by_sixteen_subscribers() {
    let bus = Bus::<Vec<u8>>::new();
    let mut subs: Vec<_> = (0..16).map(|_| bus.subscribe("big").unwrap()).collect();
    bus.publish_to("big", vec![0u8; 1 << 20]).await.unwrap();
    let first = subs[0].recv().await.unwrap();
    for s in &mut subs[1..] {
        assert!(Arc::ptr_eq(&first, &s.recv().await.unwrap()));
    }
}

#[tokio::test]
async fn filters_run_on_top_of_the_pattern_and_are_counted() {
    let bus = Bus::<u32>::new();
    let mut even = bus
        .subscriber("n.>")
        .filter(|e| e.payload % 2 == 0)
        .subscribe()
        .unwrap();
    for i in 0..10 {
        bus.publish_to("n.x", i).await.unwrap();
    }
    drop(bus);
    let mut got = Vec::new();
    while let Ok(e) = even.recv().await {
        got.push(e.payload);
    }
    assert_eq!(got, vec![0, 2, 4, 6, 8]);
    assert_eq!(even.stats().filtered, 5);
}

/// Each subscriber's filter decides for it alone, wherever on the route
/// the refusing subscriber is (first, between, last) and when no filter
/// refuses: every other subscriber still gets the event, and `filtered`
/// counts exactly the refusals.
#[tokio::test]
async fn each_filter_refuses_for_its_own_subscriber_only() {
    let bus = Bus::<u32>::new();
    let mut all = bus.subscribe("f").unwrap();
    let mut picky: Vec<_> = (0..4u32)
        .map(|k| {
            bus.subscriber("f")
                .filter(move |e| e.payload != k)
                .subscribe()
                .unwrap()
        })
        .collect();
    for i in 0..8 {
        let r = bus.publish_to("f", i).await.unwrap();
        assert_eq!(r.subscribers, if i < 4 { 4 } else { 5 }, "event {i}");
    }
    drop(bus);
    let mut got = Vec::new();
    while let Ok(e) = all.recv().await {
        got.push(e.payload);
    }
    assert_eq!(got, (0..8).collect::<Vec<_>>());
    for (k, s) in (0..4u32).zip(&mut picky) {
        let mut got = Vec::new();
        while let Ok(e) = s.recv().await {
            got.push(e.payload);
        }
        let want: Vec<u32> = (0..8).filter(|&i| i != k).collect();
        assert_eq!(got, want, "subscriber refusing {k}");
        assert_eq!(s.stats().filtered, 1, "subscriber refusing {k}");
    }
}
