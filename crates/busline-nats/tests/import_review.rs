//! Import-side review: each test states a promise and tries to break it.

mod common;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use busline::{Bus, EventId, EventStore, Message};
use busline_nats::{JetStreamConfig, NatsConfig, NatsTransport};
use common::*;

async fn jsctx(url: &str) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(url).await.unwrap())
}

async fn exporter_of(url: &str, patterns: &[&str]) -> (Bus<Ev>, NatsTransport<Ev>) {
    let bus = Bus::new();
    let mut cfg = NatsConfig::new(url).jetstream(js("exp"));
    for p in patterns {
        cfg = cfg.export(*p);
    }
    let t = NatsTransport::connect(&bus, cfg).await.expect("exporter");
    (bus, t)
}

/// two import patterns whose durable names collide (`a.b` and `a_b`
/// both become consumer `imp_a_b`) share one consumer, filtered on the first
/// pattern: the second pattern's messages are never imported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_a_dot_b_and_a_underscore_b_both_arrive() {
    let srv = server();
    let b: Bus<Ev> = Bus::new();
    let mut sub = b.subscriber(">").lossless(1000).subscribe().unwrap();
    let tb = NatsTransport::connect(
        &b,
        NatsConfig::new(srv.url())
            .import("a.b")
            .import("a_b")
            .jetstream(js("imp")),
    )
    .await
    .unwrap();
    let (a, ta) = exporter_of(&srv.url(), &["a.b", "a_b"]).await;
    a.publish_to("a.b", ev(0, 1)).await.unwrap();
    a.publish_to("a_b", ev(0, 2)).await.unwrap();
    ta.flush().await.unwrap();
    let mut topics = Vec::new();
    while topics.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(15), sub.recv()).await {
            Ok(Ok(e)) => topics.push(e.topic.to_string()),
            _ => break,
        }
    }
    topics.sort();
    assert_eq!(topics, ["a.b", "a_b"], "stats {:?}", tb.stats());
}

/// overlapping import patterns (`o.>` and `o.b`) get one consumer
/// each and a dedup each: an event on `o.b` reaches local subscribers twice,
/// and neither copy is counted as a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_imports_deliver_an_event_once_or_count_it() {
    let srv = server();
    let b: Bus<Ev> = Bus::new();
    let mut sub = b.subscriber("o.>").lossless(1000).subscribe().unwrap();
    let tb = NatsTransport::connect(
        &b,
        NatsConfig::new(srv.url())
            .import("o.>")
            .import("o.b")
            .jetstream(js("imp")),
    )
    .await
    .unwrap();
    let (a, ta) = exporter_of(&srv.url(), &["o.>"]).await;
    a.publish_to("o.b", ev(0, 1)).await.unwrap();
    a.publish_to("o.z", ev(0, 2)).await.unwrap();
    ta.flush().await.unwrap();
    // Every consumer on the stream has acked everything (an ack follows the
    // local delivery), however many consumers the imports made.
    let js = jsctx(&srv.url()).await;
    let mut stream = js.get_stream("BUSLINE").await.unwrap();
    let mut settled = false;
    for _ in 0..300 {
        let names: Vec<String> = {
            use futures::StreamExt;
            stream.consumer_names().map(|n| n.unwrap()).collect().await
        };
        let mut all = !names.is_empty();
        for n in names.iter().filter(|n| n.starts_with("imp")) {
            let info = stream.consumer_info(n).await.unwrap();
            all &= info.num_pending == 0
                && info.num_ack_pending == 0
                && info.delivered.stream_sequence >= 1;
        }
        let _ = stream.info().await;
        if all && tb.stats().imported >= 2 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled, "imports never settled; stats {:?}", tb.stats());
    let mut copies = 0;
    while let Ok(Some(e)) = sub.try_recv() {
        if e.payload.n == 1 {
            copies += 1;
        }
    }
    assert_eq!(
        copies,
        1,
        "o.b delivered {copies} times; stats {:?}",
        tb.stats()
    );
}

/// a plain JetStream message (no `Busline`, no `Nats-Msg-Id`) gets a
/// fresh id at every delivery, so a redelivery is never recognised: stored
/// locally but not acked before a stop, it is stored again by the next
/// import (the promise the store seeding makes for busline messages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_message_stored_but_not_acked_is_not_stored_again() {
    let srv = server();
    let store: Arc<busline::store::MemoryStore<Ev>> = Arc::new(busline::store::MemoryStore::new());
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

/// a plain JetStream client that uses JetStream's own de-duplication
/// (`Nats-Msg-Id: order-17`, any string) has every message dead-lettered:
/// the import refuses an id that is not 32 hex digits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_message_with_its_own_msg_id_is_imported() {
    let srv = server();
    let (b, mut sub, tb) = importer(&srv.url(), "q.>", "imp").await;
    let _ = &b;
    let js = jsctx(&srv.url()).await;
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", "order-17");
    js.publish_with_headers("q.x", h, serde_json::to_vec(&ev(0, 1)).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await;
    assert!(got.is_ok(), "not imported; stats {:?}", tb.stats());
}

/// timestamps before 1970 (or past 2554) do not survive the trip:
/// they arrive as 1970-01-01 (or another far-future time), silently. Each
/// must arrive with its own time, or be refused and counted (`rejected`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn very_old_and_very_new_timestamps_arrive_intact_or_are_refused() {
    let srv = server();
    let (_b, mut sub, _tb) = importer(&srv.url(), "t.>", "imp").await;
    let (a, ta) = exporter(&srv.url(), "t.>").await;
    let old = UNIX_EPOCH - Duration::from_secs(86_400 * 365 * 20);
    let new = UNIX_EPOCH + Duration::from_secs(86_400 * 365 * 700);
    a.send(Message::new(ev(0, 1)).topic("t.x").timestamp(old))
        .await
        .unwrap();
    a.send(Message::new(ev(0, 2)).topic("t.x").timestamp(new))
        .await
        .unwrap();
    a.publish_to("t.x", ev(0, 3)).await.unwrap(); // marker
    ta.flush().await.unwrap();
    let mut got = Vec::new();
    loop {
        let e = recv_n(&mut sub, 1).await.pop().unwrap();
        if e.payload.n == 3 {
            break;
        }
        got.push((e.payload.n, e.timestamp));
    }
    for (n, ts) in &got {
        let sent = if *n == 1 { old } else { new };
        assert_eq!(*ts, sent, "event {n} arrived with another time");
    }
    assert_eq!(
        got.len() as u64 + ta.stats().rejected,
        2,
        "{:?}",
        ta.stats()
    );
}

/// Metadata round trip through a real server: unicode source, an empty
/// header value, special characters, repeated names, correlation/causation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_with_odd_values_round_trips() {
    let srv = server();
    let (_b, mut sub, _tb) = importer(&srv.url(), "m.>", "imp").await;
    let (a, ta) = exporter(&srv.url(), "m.>").await;
    let corr = EventId::from_u128(0x1234);
    let cause = EventId::from_u128(u128::MAX);
    let msg = Message::new(ev(0, 1))
        .topic("m.x")
        .source("模块→ß; =,%")
        .correlation_id(corr)
        .causation_id(cause)
        .header("Empty", "")
        .header("x-Mixed", "a;b=c,d%e:f\"g'h\\i ü")
        .header("rep", "1")
        .header("rep", "2");
    let sent = a.send(msg).await.unwrap();
    ta.flush().await.unwrap();
    let e = recv_n(&mut sub, 1).await.pop().unwrap();
    assert_eq!(e.id, sent.id);
    assert_eq!(e.source.as_deref(), Some("模块→ß; =,%"));
    assert_eq!(e.correlation_id, corr);
    assert_eq!(e.causation_id, Some(cause));
    let user: Vec<(String, String)> = e
        .headers
        .iter()
        .filter(|(k, _)| &**k != busline_nats::IMPORTED)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let want: Vec<(String, String)> = [
        ("Empty", ""),
        ("x-Mixed", "a;b=c,d%e:f\"g'h\\i ü"),
        ("rep", "1"),
        ("rep", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(user, want);
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

/// "a message the bus could not take for a reason that may pass (a
/// failing store) is left for redelivery (negative ack), not dead-lettered".
/// But every Nak counts as a delivery: a store failing for a few seconds
/// (max_deliver Naks, 1 s apart) has a good event dead-lettered instead.
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

/// Patterns that partly overlap (`x.*` and `*.b`) both receive `x.b`: it
/// reaches the bus once and the second copy is counted, on core NATS and on
/// JetStream (each import had its own memory of delivered ids).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partly_overlapping_imports_deliver_a_shared_message_once() {
    for jetstream in [false, true] {
        let srv = server();
        let b: Bus<Ev> = Bus::new();
        let mut sub = b.subscriber(">").lossless(1000).subscribe().unwrap();
        // A stream cannot hold subjects that overlap: name its subjects.
        let js = |durable: &str| JetStreamConfig {
            subjects: vec!["x.*".into(), "y.b".into()],
            ..js(durable)
        };
        let mut cfg = NatsConfig::new(srv.url()).import("x.*").import("*.b");
        if jetstream {
            cfg = cfg.jetstream(js("imp"));
        }
        let tb = NatsTransport::connect(&b, cfg).await.unwrap();
        let a: Bus<Ev> = Bus::new();
        let mut cfg = NatsConfig::new(srv.url()).export("x.*").export("*.b");
        if jetstream {
            cfg = cfg.jetstream(js("exp"));
        }
        let ta = NatsTransport::connect(&a, cfg).await.unwrap();
        a.publish_to("x.b", ev(0, 1)).await.unwrap(); // both patterns
        a.publish_to("x.z", ev(0, 2)).await.unwrap(); // one
        a.publish_to("y.b", ev(0, 3)).await.unwrap(); // the other
        ta.flush().await.unwrap();
        eventually("both copies of x.b seen", || {
            let s = tb.stats();
            s.imported + s.import_duplicates == 4
        })
        .await;
        let s = tb.stats();
        assert_eq!(
            (s.imported, s.import_duplicates),
            (3, 1),
            "jetstream {jetstream}: {s:?}"
        );
        let mut got: Vec<u64> = Vec::new();
        while let Ok(Some(e)) = sub.try_recv() {
            got.push(e.payload.n);
        }
        got.sort();
        assert_eq!(got, [1, 2, 3], "jetstream {jetstream}");
    }
}
