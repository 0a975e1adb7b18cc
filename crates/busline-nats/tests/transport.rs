//! Bus-level behaviours through the NATS transport, against a real nats-server.

mod common;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use busline::{Bus, Message};
use busline_nats::{Codec, NatsConfig, NatsTransport, IMPORTED};
use common::*;

#[tokio::test]
async fn core_roundtrip_keeps_metadata() {
    let srv = server();
    let a: Bus<Ev> = Bus::new();
    let ta = NatsTransport::connect(&a, NatsConfig::new(srv.url()).export("m.>"))
        .await
        .unwrap();
    let b: Bus<Ev> = Bus::new();
    let mut sub = b.subscribe("m.>").unwrap();
    let _tb = NatsTransport::connect(&b, NatsConfig::new(srv.url()).import("m.>"))
        .await
        .unwrap();

    let mut local = a.subscribe("m.>").unwrap();
    let cause = Message::new(ev(0, 0)).topic("m.cause");
    a.send(cause).await.unwrap();
    let cause = local.recv().await.unwrap();
    let at = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
    a.send(
        Message::new(ev(1, 1))
            .topic("m.x.y")
            .source("sensor")
            .caused_by(&cause)
            .header("unit", "ms")
            .timestamp(at),
    )
    .await
    .unwrap();
    let sent = local.recv().await.unwrap();
    ta.flush().await.unwrap();

    let got = recv_n(&mut sub, 2).await;
    let e = &got[1];
    assert_eq!(e.payload, ev(1, 1));
    assert_eq!(e.topic.as_str(), "m.x.y");
    assert_eq!(e.id, sent.id);
    assert_eq!(e.timestamp(), at);
    assert_eq!(e.source.as_deref(), Some("sensor"));
    assert_eq!(e.correlation_id, cause.correlation_id);
    assert_eq!(e.causation_id(), Some(cause.id));
    assert_eq!(e.header("unit"), Some("ms"));
    assert!(e.header(IMPORTED).is_some());
}

#[tokio::test]
async fn jetstream_keeps_order_per_publisher_and_metadata() {
    let srv = server();
    let (a, ta) = exporter(&srv.url(), "o.>").await;
    let (_b, mut sub, _tb) = importer(&srv.url(), "o.>", "imp").await;
    let per = 1000u64;
    let mut tasks = Vec::new();
    for p in 0..3u32 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..per {
                a.send(
                    Message::new(ev(p, n))
                        .topic(format!("o.p{p}"))
                        .source(format!("pub{p}")),
                )
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    ta.flush().await.unwrap();
    assert_eq!(ta.stats().acked, 3 * per);
    let got = recv_n(&mut sub, 3 * per as usize).await;
    let mut next = [0u64; 3];
    for e in &got {
        let p = e.payload.publisher as usize;
        assert_eq!(e.payload.n, next[p], "publisher {p} out of order");
        assert_eq!(e.source.as_deref(), Some(format!("pub{p}").as_str()));
        next[p] += 1;
    }
}

#[tokio::test]
async fn postcard_and_json_processes_understand_each_other() {
    let srv = server();
    let a: Bus<Ev> = Bus::new();
    let ta = NatsTransport::connect(
        &a,
        NatsConfig::new(srv.url())
            .export("c.>")
            .codec(Codec::Postcard)
            .jetstream(js("x")),
    )
    .await
    .unwrap();
    let (_b, mut sub, _tb) = importer(&srv.url(), "c.>", "imp").await; // json by default
    a.publish_to("c.one", ev(7, 7)).await.unwrap();
    ta.flush().await.unwrap();
    assert_eq!(recv_n(&mut sub, 1).await[0].payload, ev(7, 7));
}

#[tokio::test]
async fn no_echo_between_processes_that_import_and_export_the_same_topics() {
    let srv = server();
    let url = srv.url();
    let mk = |d: &'static str| {
        let url = url.clone();
        async move {
            let bus: Bus<Ev> = Bus::new();
            let sub = bus.subscribe("e.>").unwrap();
            let t = NatsTransport::connect(
                &bus,
                NatsConfig::new(url)
                    .export("e.>")
                    .import("e.>")
                    .jetstream(js(d)),
            )
            .await
            .unwrap();
            (bus, sub, t)
        }
    };
    let (a, mut sa, ta) = mk("a").await;
    let (_b, mut sb, tb) = mk("b").await;
    a.publish_to("e.x", ev(1, 1)).await.unwrap();
    ta.flush().await.unwrap();
    assert_eq!(recv_n(&mut sb, 1).await[0].payload, ev(1, 1));
    // A sees its own event locally, and its own export coming back from NATS
    // is dropped as a duplicate of an id it has (it imports what it exports).
    assert_eq!(recv_n(&mut sa, 1).await[0].payload, ev(1, 1));
    tb.flush().await.unwrap();
    // B skipped re-exporting what it imported:
    assert_eq!(tb.stats().echo_skipped, 1);
    assert_eq!(tb.stats().exported, 0);
    let info = async_nats::jetstream::new(ta.client().clone())
        .get_stream("BUSLINE")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.state.messages, 1, "exactly one copy stored: no echo");
}

#[tokio::test]
async fn fan_out_to_separate_durables_and_sharing_within_one() {
    let srv = server();
    let (a, ta) = exporter(&srv.url(), "f.>").await;
    let (_b1, mut s1, _t1) = importer(&srv.url(), "f.>", "one").await;
    let (_b2, mut s2, _t2) = importer(&srv.url(), "f.>", "two").await;
    for n in 0..200 {
        a.publish_to("f.x", ev(0, n)).await.unwrap();
    }
    ta.flush().await.unwrap();
    // Different durable names: each gets every event.
    assert_eq!(recv_n(&mut s1, 200).await.len(), 200);
    assert_eq!(recv_n(&mut s2, 200).await.len(), 200);

    // Same durable name: the two processes compete, each event to one of them.
    let (_c1, mut q1, tq1) = importer(&srv.url(), "f.>", "shared").await;
    let (_c2, mut q2, tq2) = importer(&srv.url(), "f.>", "shared").await;
    for n in 200..400 {
        a.publish_to("f.x", ev(0, n)).await.unwrap();
    }
    ta.flush().await.unwrap();
    let mut seen = HashSet::new();
    while seen.len() < 400 {
        let e = tokio::select! {
            e = q1.recv() => e.unwrap(),
            e = q2.recv() => e.unwrap(),
        };
        assert!(
            seen.insert(e.payload.n),
            "event {} delivered twice",
            e.payload.n
        );
    }
    eventually("all imported", || {
        tq1.stats().imported + tq2.stats().imported == 400
    })
    .await;
}

#[tokio::test]
async fn events_persist_until_an_importer_comes_back() {
    let srv = server();
    let (a, ta) = exporter(&srv.url(), "p.>").await;
    for n in 0..100 {
        a.publish_to("p.x", ev(0, n)).await.unwrap();
    }
    ta.flush().await.unwrap();
    // The importer was not running when they were published.
    let (b, mut sub, tb) = importer(&srv.url(), "p.>", "late").await;
    let got = recv_n(&mut sub, 40).await;
    assert_eq!(got.last().unwrap().payload.n, 39);
    // Stop it (as a crash would); whatever it already delivered is in its
    // subscriber's queue: that was acked, the rest was not.
    drop(tb);
    let mut delivered: HashSet<(u32, u64)> = got.iter().map(|e| (0, e.payload.n)).collect();
    while let Ok(Some(e)) = sub.try_recv() {
        delivered.insert((0, e.payload.n));
    }
    drop(sub);
    drop(b);
    // Same durable: resumes after the last acked event; nothing is lost.
    let (_b2, mut sub2, _tb2) = importer(&srv.url(), "p.>", "late").await;
    let want: HashSet<(u32, u64)> = (0..100)
        .map(|n| (0, n))
        .filter(|k| !delivered.contains(k))
        .collect();
    recv_all(&mut sub2, &want).await;
}

#[tokio::test]
async fn undecodable_message_goes_to_dead_letter_and_import_goes_on() {
    let srv = server();
    let (_b, mut sub, tb) = importer(&srv.url(), "d.>", "imp").await;
    let (a, ta) = exporter(&srv.url(), "d.>").await;
    let raw = async_nats::jetstream::new(ta.client().clone());
    let mut h = async_nats::HeaderMap::new();
    h.insert("Busline", "v=1;ts=1;ct=json");
    raw.publish_with_headers("d.bad", h, "{not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    a.publish_to("d.good", ev(0, 1)).await.unwrap();
    ta.flush().await.unwrap();
    assert_eq!(recv_n(&mut sub, 1).await[0].payload, ev(0, 1));
    assert_eq!(tb.stats().dead_lettered, 1);

    let dead = raw.get_stream("BUSLINE_DEAD").await.unwrap();
    let m = dead
        .get_last_raw_message_by_subject("busline-dead.d.bad")
        .await
        .unwrap();
    let h = m.headers;
    let reason = h.get("Busline-Dead-Reason").unwrap().as_str();
    assert!(
        reason.starts_with("cannot decode message on `d.bad`: json:"),
        "{reason}"
    );
    assert_eq!(h.get("Busline-Dead-Subject").unwrap().as_str(), "d.bad");
    assert_eq!(&m.payload[..], b"{not json");
}

#[tokio::test]
async fn too_large_payload_is_rejected_with_a_clear_count_and_the_rest_flows() {
    let srv = server_with("max_payload: 2048");
    let (a, ta) = exporter(&srv.url(), "l.>").await;
    assert_eq!(ta.max_payload(), 2048);
    let (_b, mut sub, _tb) = importer(&srv.url(), "l.>", "imp").await;
    a.publish_to(
        "l.x",
        Ev {
            publisher: 0,
            n: 0,
            body: "x".repeat(4000),
        },
    )
    .await
    .unwrap();
    a.publish_to("l.x", ev(0, 1)).await.unwrap();
    ta.flush().await.unwrap();
    assert_eq!(ta.stats().rejected, 1);
    assert_eq!(recv_n(&mut sub, 1).await[0].payload, ev(0, 1));
}

#[tokio::test]
async fn status_is_observable_and_published_as_sys_events() {
    let mut srv = server();
    let bus: Bus<Ev> = Bus::new();
    let mut sys = bus.subscribe("$sys.nats.>").unwrap();
    let t = NatsTransport::connect(
        &bus,
        NatsConfig::new(srv.url()).status_events(|s| {
            Some(Ev {
                publisher: 0,
                n: 0,
                body: s.topic().into(),
            })
        }),
    )
    .await
    .unwrap();
    let mut status = t.status();
    assert_eq!(status.borrow().state, busline_nats::ConnState::Connected);
    srv.kill();
    status
        .wait_for(|s| s.state == busline_nats::ConnState::Disconnected)
        .await
        .unwrap();
    srv.restart().unwrap();
    status
        .wait_for(|s| s.state == busline_nats::ConnState::Connected && s.reconnects >= 1)
        .await
        .unwrap();
    let mut topics = Vec::new();
    while !topics.contains(&"$sys.nats.disconnected".to_string())
        || !topics.contains(&"$sys.nats.connected".to_string())
    {
        let e = tokio::time::timeout(Duration::from_secs(30), sys.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.payload.body, e.topic.as_str());
        topics.push(e.topic.to_string());
    }
}

#[tokio::test]
async fn a_message_delivered_max_deliver_times_without_ack_is_dead_lettered() {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    use async_nats::jetstream::AckKind;
    use futures::StreamExt;
    let srv = server();
    let (a, ta) = exporter(&srv.url(), "x.>").await;
    a.publish_to("x.poison", ev(0, 0)).await.unwrap();
    ta.flush().await.unwrap();
    // Two previous runs of the importer took it and died before acking
    // (simulated with a raw client on the importer's durable consumer, made
    // as the transport makes it: one delivery more than max_deliver).
    let cfg = busline_nats::JetStreamConfig {
        max_deliver: 2,
        ..js("imp")
    };
    let raw = async_nats::jetstream::new(ta.client().clone());
    let consumer: async_nats::jetstream::consumer::PullConsumer = raw
        .get_stream("BUSLINE")
        .await
        .unwrap()
        .get_or_create_consumer(
            "imp_x_GT",
            pull::Config {
                durable_name: Some("imp_x_GT".into()),
                filter_subject: "x.>".into(),
                ack_policy: AckPolicy::Explicit,
                max_deliver: 3,
                ack_wait: cfg.ack_wait,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut naked = 0;
    for _ in 0..100 {
        let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
        if let Some(m) = batch.next().await {
            m.unwrap().ack_with(AckKind::Nak(None)).await.unwrap();
            naked += 1;
            if naked == 2 {
                break;
            }
        }
    }
    assert_eq!(naked, 2, "two earlier deliveries");

    let b: Bus<Ev> = Bus::new();
    let mut sub = b.subscribe("x.>").unwrap();
    let tb = NatsTransport::connect(&b, NatsConfig::new(srv.url()).import("x.>").jetstream(cfg))
        .await
        .unwrap();
    for _ in 0..3000 {
        if tb.stats().dead_lettered == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(tb.stats().dead_lettered, 1, "{:?}", tb.stats());
    assert!(
        sub.try_recv().unwrap().is_none(),
        "the poison message was not handed over again"
    );
    let dead = raw.get_stream("BUSLINE_DEAD").await.unwrap();
    let m = dead
        .get_last_raw_message_by_subject("busline-dead.x.poison")
        .await
        .unwrap();
    assert_eq!(
        m.headers.get("Busline-Dead-Reason").unwrap().as_str(),
        "delivered 2 times without an ack (max_deliver)"
    );
    assert_eq!(
        m.headers.get("Busline-Dead-Deliveries").unwrap().as_str(),
        "3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_publishes_the_server_refuses_are_retried_until_stored() {
    let srv = server();
    let (bus, t) = exporter(&srv.url(), "refused.>").await;
    let js = async_nats::jetstream::new(async_nats::connect(srv.url()).await.unwrap());
    let config = js
        .get_stream("BUSLINE")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    // No stream takes the subject: the server answers each publish with "no responders".
    js.delete_stream("BUSLINE").await.unwrap();
    for n in 0..50 {
        bus.publish_to("refused.x", ev(0, n)).await.unwrap();
    }
    // Unanswered (nothing takes the subject), then retried; a retry that
    // finds the stream missing may also make it again itself.
    eventually("publishes retried", || t.stats().retried >= 50).await;
    js.create_stream(config).await.unwrap();
    // A guard against hanging, not a timing assertion.
    tokio::time::timeout(Duration::from_secs(60), t.flush())
        .await
        .expect("flush after the stream is back")
        .unwrap();
    assert_eq!(t.stats().acked, 50);
    let mut stream = js.get_stream("BUSLINE").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 50);
}

/// A process that exports *and* imports the same subjects sees its own
/// events once (locally; not again when the server sends them back) and
/// another process's once: `import_own` counts the ones that came back.
async fn exports_and_imports_the_same_subjects(jetstream: bool) {
    let srv = server();
    let mode = |cfg: NatsConfig<Ev>, durable: &str| {
        if jetstream {
            cfg.jetstream(js(durable))
        } else {
            cfg.core()
        }
    };
    let a: Bus<Ev> = Bus::new();
    let mut seen = a.subscriber("w.>").lossless(10_000).subscribe().unwrap();
    let ta = NatsTransport::connect(
        &a,
        mode(
            NatsConfig::new(srv.url()).export("w.>").import("w.>"),
            "both",
        ),
    )
    .await
    .unwrap();
    let b: Bus<Ev> = Bus::new();
    let tb = NatsTransport::connect(&b, mode(NatsConfig::new(srv.url()).export("w.>"), "b"))
        .await
        .unwrap();
    const N: u64 = 300;
    for n in 0..N {
        a.publish_to("w.a", ev(0, n)).await.unwrap();
        b.publish_to("w.b", ev(1, n)).await.unwrap();
    }
    ta.flush().await.unwrap();
    tb.flush().await.unwrap();
    let want: HashSet<(u32, u64)> = (0..N).flat_map(|n| [(0, n), (1, n)]).collect();
    assert_eq!(recv_all(&mut seen, &want).await, 0, "no event twice");
    eventually("a's own events came back and were skipped", || {
        ta.stats().import_own == N
    })
    .await;
    let st = ta.stats();
    assert_eq!(st.imported, N, "b's events, imported once: {st:?}");
    assert_eq!(st.exported, N, "a's own events only, not b's: {st:?}");
    assert!(
        seen.try_recv().unwrap().is_none(),
        "nothing after the {} expected",
        2 * N
    );
}

#[tokio::test]
async fn core_exports_and_imports_the_same_subjects() {
    exports_and_imports_the_same_subjects(false).await;
}

#[tokio::test]
async fn jetstream_exports_and_imports_the_same_subjects() {
    exports_and_imports_the_same_subjects(true).await;
}
