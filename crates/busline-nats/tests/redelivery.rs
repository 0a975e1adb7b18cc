//! Redelivery: a message that was not acknowledged comes again (never
//! dead-lettered for a reason that passes), and one the bus stored before
//! is not stored twice.

mod common;

use std::sync::Arc;
use std::time::Duration;

use busline::{Bus, EventStore};
use busline_nats::JetStreamConfig;
use common::*;

/// A transient local failure (the bus's durable store refused once) is
/// retried, not dead-lettered; the message reaches the local subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_local_store_error_means_redelivery_not_dead_letter() {
    let srv = server();
    let b: Bus<Ev> = Bus::new();
    b.persist("s.>", Flaky::failing(1)).unwrap();
    let mut sub = b.subscribe("s.>").unwrap();
    let tb = import_into(&b, &srv.url(), "s.>", "imp").await;
    let (a, ta) = exporter(&srv.url(), "s.>").await;
    a.publish_to("s.x", ev(0, 1)).await.unwrap();
    ta.flush().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(15), sub.recv()).await;
    assert!(
        got.is_ok(),
        "not delivered after a transient local error; stats {:?}",
        tb.stats()
    );
}

/// An import stopped while delivering a message to a persisted topic (the
/// store has it; a full lossless subscriber holds up the delivery) leaves
/// the message unacked. When it comes again to a new import on the same
/// store (a restarted process), it is known from the store and not stored a
/// second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stored_but_not_acked_is_not_stored_again_after_a_restart() {
    let srv = server();
    let store: Arc<busline::MemoryStore<Ev>> = Arc::new(busline::MemoryStore::new());
    let b1: Bus<Ev> = Bus::new();
    b1.persist("p.>", store.clone()).unwrap();
    let _full = b1.subscriber("p.>").lossless(1).subscribe().unwrap();
    b1.publish_to("p.local", ev(9, 0)).await.unwrap(); // fills it
    let t1 = import_into(&b1, &srv.url(), "p.>", "imp").await;
    let (a, ta) = exporter(&srv.url(), "p.>").await;
    a.publish_to("p.x", ev(0, 1)).await.unwrap();
    ta.flush().await.unwrap();
    let mut waited = 0;
    while store.end() < 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
        assert!(waited < 400, "the import never stored the event");
    }
    t1.shutdown().await.unwrap(); // mid-delivery: the message stays unacked

    let b2: Bus<Ev> = Bus::new();
    b2.persist("p.>", store.clone()).unwrap();
    let _sub = b2.subscribe("p.>").unwrap();
    let t2 = import_into(&b2, &srv.url(), "p.>", "imp").await;
    // ack_wait is 2 s: the message comes again within a few seconds.
    for _ in 0..200 {
        if t2.stats().import_duplicates > 0 || store.end() > 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.end(), 2, "stored twice; stats {:?}", t2.stats());
    assert_eq!(t2.stats().import_duplicates, 1, "{:?}", t2.stats());
}

/// A plain JetStream message (no `Busline`, no `Nats-Msg-Id`) gets an id
/// from its place in the stream, the same at every delivery: stored locally
/// but not acked before a stop, it is known to the next import and not
/// stored again (the promise the store seeding makes for busline messages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_message_stored_but_not_acked_is_not_stored_again() {
    let srv = server();
    let store: Arc<busline::MemoryStore<Ev>> = Arc::new(busline::MemoryStore::new());
    let b1: Bus<Ev> = Bus::new();
    b1.persist("p.>", store.clone()).unwrap();
    let _full = b1.subscriber("p.>").lossless(1).subscribe().unwrap();
    b1.publish_to("p.local", ev(9, 0)).await.unwrap(); // fills it
    let t1 = import_into(&b1, &srv.url(), "p.>", "imp").await;
    let js = jsctx(&srv.url()).await;
    js.publish("p.x", serde_json::to_vec(&ev(0, 1)).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut waited = 0;
    while store.end() < 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += 1;
        assert!(waited < 400, "the import never stored the event");
    }
    t1.shutdown().await.unwrap(); // mid-delivery: unacked

    let b2: Bus<Ev> = Bus::new();
    b2.persist("p.>", store.clone()).unwrap();
    let _sub = b2.subscribe("p.>").unwrap();
    let t2 = import_into(&b2, &srv.url(), "p.>", "imp").await;
    for _ in 0..200 {
        if t2.stats().import_duplicates > 0 || store.end() > 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.end(), 2, "stored twice; stats {:?}", t2.stats());
}

/// A message the bus cannot take for a reason that passes (a store failing
/// for a few seconds, longer than max_deliver negative acks would last) is
/// retried in place, with in-progress acks that do not count as
/// deliveries: it is delivered once the store is back, never dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failing_for_a_while_does_not_dead_letter_good_events() {
    let srv = server();
    let b: Bus<Ev> = Bus::new();
    b.persist("s.>", Flaky::failing(4)).unwrap();
    let mut sub = b.subscribe("s.>").unwrap();
    let tb = import_with(
        &b,
        &srv.url(),
        "s.>",
        JetStreamConfig {
            max_deliver: 3,
            ..js("imp")
        },
    )
    .await;
    let (a, ta) = exporter(&srv.url(), "s.>").await;
    a.publish_to("s.x", ev(0, 1)).await.unwrap();
    ta.flush().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), sub.recv()).await;
    assert!(
        got.is_ok(),
        "a good event was not delivered once the store recovered; stats {:?}",
        tb.stats()
    );
}

/// A consumer deleted on the server while importing is made again and the
/// import goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_deleted_while_importing_is_recreated() {
    let srv = server();
    let (_b, mut sub, tb) = importer(&srv.url(), "d.>", "imp").await;
    let (a, ta) = exporter(&srv.url(), "d.>").await;
    a.publish_to("d.x", ev(0, 1)).await.unwrap();
    ta.flush().await.unwrap();
    recv_n(&mut sub, 1).await;
    let js = jsctx(&srv.url()).await;
    js.get_stream("BUSLINE")
        .await
        .unwrap()
        .delete_consumer("imp_d_GT")
        .await
        .unwrap();
    a.publish_to("d.x", ev(0, 2)).await.unwrap();
    ta.flush().await.unwrap();
    let got = recv_n(&mut sub, 1).await;
    assert_eq!(got[0].payload.n, 2, "stats {:?}", tb.stats());
    eventually("the redelivered first message counted", || {
        tb.stats().import_duplicates == 1
    })
    .await;
}
