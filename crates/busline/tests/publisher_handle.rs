//! `Bus::publisher`: a handle that keeps its topic's route delivers exactly
//! as `publish_to` does, to the subscriptions there are at each publish.

use std::sync::Arc;

use busline::{Bus, EventStore, MemoryStore, PublishError, RecvError};

/// Subscriptions made and dropped after the handle was: each publish goes
/// to those there are at that moment, in order, and one that finds none is
/// counted as unrouted.
#[tokio::test]
async fn a_publisher_follows_subscriptions_made_and_dropped_after_it() {
    let bus = Bus::<u32>::new();
    let mut to = bus.publisher("orders.new").unwrap();
    assert_eq!(to.topic(), "orders.new");
    assert_eq!(to.publish(0).await.unwrap().subscribers, 0);
    assert_eq!(bus.stats().unrouted, 1);

    let mut exact = bus.subscribe("orders.new").unwrap();
    assert_eq!(to.publish(1).await.unwrap().subscribers, 1);
    let mut wild = bus.subscribe("orders.>").unwrap();
    let mut other = bus.subscribe("orders.paid").unwrap();
    assert_eq!(to.publish(2).await.unwrap().subscribers, 2);
    drop(exact.drain());
    drop(exact);
    let receipt = to.try_publish(3).unwrap();
    assert_eq!(receipt.subscribers, 1);
    assert_eq!(to.publish(4).await.unwrap().subscribers, 1);

    let got: Vec<(u32, String)> = wild
        .drain()
        .iter()
        .map(|e| (e.payload, e.topic.to_string()))
        .collect();
    let topic = || "orders.new".to_string();
    assert_eq!(got, [(2, topic()), (3, topic()), (4, topic())]);
    assert!(other.try_recv().unwrap().is_none());
    assert_eq!(bus.stats().unrouted, 1);
}

/// A full lossless subscriber: `try_publish` hands the event back naming
/// it, `publish` waits for room; a closed bus hands the event back too.
#[tokio::test]
async fn a_publisher_waits_for_room_and_hands_back_what_it_could_not_publish() {
    let bus = Bus::<String>::new();
    let mut sub = bus
        .subscriber("x")
        .lossless(1)
        .name("archive")
        .subscribe()
        .unwrap();
    let mut to = bus.publisher("x").unwrap();
    to.try_publish("one".into()).unwrap();
    let err = to.try_publish("two".into()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not published on `x`: subscriber `archive` is full (lossless); no subscriber received it"
    );
    assert_eq!(err.into_event(), "two");

    let mut waiting = to.clone();
    let publish = tokio::spawn(async move { waiting.publish("three".into()).await.map(|_| ()) });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !publish.is_finished(),
        "a full subscriber holds the publish"
    );
    assert_eq!(sub.recv().await.unwrap().payload, "one");
    publish.await.unwrap().unwrap();
    assert_eq!(sub.recv().await.unwrap().payload, "three");

    bus.close();
    match to.publish("four".into()).await {
        Err(PublishError::Closed { event }) => assert_eq!(event, "four"),
        other => panic!("published on a closed bus: {other:?}"),
    }
    assert!(matches!(
        to.try_publish("five".into()),
        Err(PublishError::Closed { .. })
    ));
    assert!(matches!(sub.recv().await, Err(RecvError::Closed)));
}

/// A topic persisted after the handle was made: its events are stored
/// first, and delivered with their store offsets.
#[tokio::test]
async fn a_publisher_stores_events_on_a_topic_persisted_after_it_was_made() {
    let bus = Bus::<u32>::new();
    let mut to = bus.publisher("audit.login").unwrap();
    let mut sub = bus.subscribe("audit.>").unwrap();
    to.publish(1).await.unwrap();
    let store: Arc<MemoryStore<u32>> = Arc::new(MemoryStore::new());
    bus.persist("audit.>", store.clone()).unwrap();
    to.publish(2).await.unwrap();
    to.publish(3).await.unwrap();

    let got: Vec<(u32, Option<u64>)> = sub
        .drain()
        .iter()
        .map(|e| (e.payload, e.offset()))
        .collect();
    assert_eq!(got, [(1, None), (2, Some(0)), (3, Some(1))]);
    assert_eq!(store.end(), 2);
    assert!(matches!(
        to.try_publish(4),
        Err(PublishError::Store { event: 4, .. })
    ));
}

/// A topic that is not one (empty token, wildcard) is refused when the
/// handle is made, naming what is wrong.
#[test]
fn a_publisher_needs_a_valid_topic() {
    let bus = Bus::<u32>::new();
    let err = bus.publisher("a..b").unwrap_err();
    assert!(err.to_string().contains("token 2 is empty"), "{err}");
    assert!(bus.publisher("a.*").is_err());
    assert!(bus.publisher("a.>").is_err());
}
