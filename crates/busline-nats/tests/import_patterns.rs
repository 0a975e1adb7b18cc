//! Import patterns: every pattern gets what it matches, and a message
//! several patterns match is delivered once (or counted as a duplicate).

mod common;

use std::time::Duration;

use busline::Bus;
use busline_nats::{JetStreamConfig, NatsConfig, NatsTransport};
use common::*;

async fn exporter_of(url: &str, patterns: &[&str]) -> (Bus<Ev>, NatsTransport<Ev>) {
    let bus = Bus::new();
    let mut cfg = NatsConfig::new(url).jetstream(js("exp"));
    for p in patterns {
        cfg = cfg.export(*p);
    }
    let t = NatsTransport::connect(&bus, cfg).await.expect("exporter");
    (bus, t)
}

/// Import patterns whose short consumer names would be the same (`a.b`
/// and `a_b`, both `imp_a_b`) get consumers of their own: both patterns'
/// messages arrive.
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

/// Overlapping import patterns (`o.>` and `o.b`): an event on `o.b`
/// reaches local subscribers once, or its second copy is counted as a
/// duplicate.
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

/// Patterns that partly overlap (`x.*` and `*.b`) both receive `x.b`: it
/// reaches the bus once and the second copy is counted, on core NATS and on
/// JetStream (the imports share one memory of delivered ids).
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
