//! Cases a review of the transport found (each failed before its fix):
//! nothing lost, nothing hangs, transient failures are retried and
//! permanent ones are counted.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use busline::{Bus, EventStore};
use busline_nats::{JetStreamConfig, NatsConfig, NatsTransport};
use common::*;

/// A dead letter that cannot be stored on the message's last delivery is
/// retried in place (the server would not deliver the message again), and
/// stored once the dead-letter stream is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_failing_on_the_last_delivery_is_retried_until_stored() {
    let srv = server();
    let cfg = JetStreamConfig {
        max_deliver: 2,
        ..js("imp")
    };
    let b: Bus<Ev> = Bus::new();
    let _sub = b.subscribe("d.>").unwrap();
    let tb = NatsTransport::connect(&b, NatsConfig::new(srv.url()).import("d.>").jetstream(cfg))
        .await
        .unwrap();
    let raw = jetstream::new(async_nats::connect(srv.url()).await.unwrap());
    let dead_cfg = raw
        .get_stream("BUSLINE_DEAD")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    // The dead-letter stream is briefly unavailable.
    raw.delete_stream("BUSLINE_DEAD").await.unwrap();
    let mut h = async_nats::HeaderMap::new();
    h.insert("Busline", "v=1;ts=1;ct=json");
    raw.publish_with_headers("d.bad", h, "{not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    raw.create_stream(dead_cfg).await.unwrap();
    // Plenty of time for any retry (ack_wait 2 s, nak delay 1 s).
    let mut dead_msgs = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        dead_msgs = stream_messages(&raw, "BUSLINE_DEAD").await;
        if dead_msgs > 0 {
            break;
        }
    }
    let ci = raw
        .get_stream("BUSLINE")
        .await
        .unwrap()
        .consumer_info("imp_d_GT")
        .await
        .unwrap();
    assert!(
        dead_msgs == 1 && tb.stats().dead_lettered == 1,
        "message neither delivered nor dead-lettered: dead stream has {dead_msgs}, stats {:?}, consumer delivered {:?} ack_floor {:?} ack_pending {} redelivered {} pending {}",
        tb.stats(),
        ci.delivered,
        ci.ack_floor,
        ci.num_ack_pending,
        ci.num_redelivered,
        ci.num_pending
    );
}

/// On a healthy server nothing should be retried.
#[tokio::test]
async fn a_healthy_server_sees_no_retries() {
    let srv = server();
    let (a, ta) = exporter(&srv.url(), "h.>").await;
    for n in 0..20 {
        a.publish_to("h.x", ev(0, n)).await.unwrap();
    }
    ta.flush().await.unwrap();
    let s = ta.stats();
    assert_eq!(s.acked, 20, "{s:?}");
    assert_eq!((s.retried, s.publish_duplicates), (0, 0), "{s:?}");
}

/// An event the stream will never take (larger than the stream's
/// max_message_size, below the server's max_payload) is given up after the
/// server refused it three times and counted as rejected; flush and
/// shutdown return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_stream_refuses_is_rejected_and_flush_returns() {
    let srv = server();
    let raw = jetstream::new(async_nats::connect(srv.url()).await.unwrap());
    raw.create_stream(jetstream::stream::Config {
        name: "BUSLINE".into(),
        subjects: vec!["m.>".into()],
        max_message_size: 512,
        ..Default::default()
    })
    .await
    .unwrap();
    let (a, ta) = exporter(&srv.url(), "m.>").await;
    a.publish_to(
        "m.big",
        Ev {
            publisher: 0,
            n: 0,
            body: "x".repeat(2000),
        },
    )
    .await
    .unwrap();
    a.publish_to("m.small", ev(0, 1)).await.unwrap();
    let flushed = tokio::time::timeout(Duration::from_secs(20), ta.flush()).await;
    let s = ta.stats();
    let shut = tokio::time::timeout(Duration::from_secs(10), ta.shutdown()).await;
    assert!(
        flushed.is_ok() && shut.is_ok(),
        "flush done: {}, shutdown done: {}, stats {s:?}",
        flushed.is_ok(),
        shut.is_ok()
    );
    assert_eq!(s.acked + s.rejected, 2, "{s:?}");
}

/// max_deliver = 1: one delivery to the bus before dead-lettering (it was
/// dead-lettered at its first delivery without reaching the bus).
#[tokio::test]
async fn max_deliver_one_still_delivers_once() {
    let srv = server();
    let b: Bus<Ev> = Bus::new();
    let mut sub = b.subscribe("o.>").unwrap();
    let tb = import_with(
        &b,
        &srv.url(),
        "o.>",
        JetStreamConfig {
            max_deliver: 1,
            ..js("imp")
        },
    )
    .await;
    let (a, ta) = exporter(&srv.url(), "o.>").await;
    a.publish_to("o.x", ev(0, 1)).await.unwrap();
    ta.flush().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await;
    assert!(got.is_ok(), "never delivered; stats {:?}", tb.stats());
}

/// A core flush with the server down fails (after its 30 s) instead of
/// claiming the server processed everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_flush_fails_while_the_server_is_down() {
    let mut srv = server();
    let bus: Bus<Ev> = Bus::new();
    let t = NatsTransport::connect(&bus, NatsConfig::new(srv.url()).export("c.>").core())
        .await
        .unwrap();
    srv.kill();
    let mut st = t.status();
    st.wait_for(|s| s.state == busline_nats::ConnState::Disconnected)
        .await
        .unwrap();
    bus.publish_to("c.x", ev(0, 1)).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(45), t.flush()).await;
    assert!(
        matches!(r, Ok(Err(busline_nats::NatsError::FlushTimedOut { .. }))),
        "wanted FlushTimedOut after 30 s while the server was down, got {r:?}; stats {:?}",
        t.stats()
    );
}

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

/// The first publishes of an exporter wait a full ack timeout before the
/// sweep retries them (they were retried at its first tick).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_publishes_are_not_retried_on_a_healthy_server() {
    let srv = server();
    let mut total = (0, 0);
    for i in 0..10 {
        let (a, ta) = exporter(&srv.url(), "g.>").await;
        a.publish_to("g.x", ev(i, 0)).await.unwrap();
        ta.flush().await.unwrap();
        let s = ta.stats();
        total.0 += s.retried;
        total.1 += s.publish_duplicates;
    }
    assert_eq!(
        total,
        (0, 0),
        "(retried, publish_duplicates) over 10 healthy single-event runs"
    );
}

/// Shutdown does not wait for an import blocked on a full lossless
/// subscriber (the message stays unacked and comes again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_full_subscriber() {
    let srv = server();
    let b: Bus<Ev> = Bus::new();
    let _stuck = b.subscriber("f.>").lossless(1).subscribe().unwrap();
    let tb = import_into(&b, &srv.url(), "f.>", "imp").await;
    let (a, ta) = exporter(&srv.url(), "f.>").await;
    for n in 0..3 {
        a.publish_to("f.x", ev(0, n)).await.unwrap();
    }
    ta.flush().await.unwrap();
    eventually("first import", || tb.stats().imported >= 1).await;
    let r = tokio::time::timeout(Duration::from_secs(10), tb.shutdown()).await;
    assert!(r.is_ok(), "shutdown did not return within 10 s");
}

/// An error answer that passes (a stream holding one message at a time,
/// discard new, max_age 2 s) is retried until the event is stored, not
/// rejected (the first version of the refusal rule rejected it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_refused_for_a_passing_reason_is_retried_until_stored() {
    let srv = server();
    let raw = jetstream::new(async_nats::connect(srv.url()).await.unwrap());
    raw.create_stream(jetstream::stream::Config {
        name: "BUSLINE".into(),
        subjects: vec!["m.>".into()],
        max_messages: 1,
        discard: jetstream::stream::DiscardPolicy::New,
        max_age: Duration::from_secs(2),
        ..Default::default()
    })
    .await
    .unwrap();
    let (a, ta) = exporter(&srv.url(), "m.>").await;
    a.publish_to("m.one", ev(0, 1)).await.unwrap();
    a.publish_to("m.two", ev(0, 2)).await.unwrap();
    let flushed = tokio::time::timeout(Duration::from_secs(20), ta.flush()).await;
    let s = ta.stats();
    assert!(flushed.is_ok(), "flush did not return; {s:?}");
    assert_eq!(
        (s.acked, s.rejected),
        (2, 0),
        "the second event was given up although the stream took it 2 s later: {s:?}"
    );
}

/// A dead letter that can never be stored (over max_payload with its
/// headers) on the message's last delivery is given up after its attempts,
/// counted as lost; the import goes on with the next message (it stopped
/// for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_that_can_never_be_stored_does_not_stop_the_import() {
    let srv = server_with("max_payload: 2048");
    let b: Bus<Ev> = Bus::new();
    let mut sub = b.subscribe("d.>").unwrap();
    let tb = import_with(
        &b,
        &srv.url(),
        "d.>",
        JetStreamConfig {
            max_deliver: 1,
            ..js("imp")
        },
    )
    .await;
    let raw = jetstream::new(async_nats::connect(srv.url()).await.unwrap());
    // An undecodable message just under the limit: its dead letter is over it.
    let mut h = async_nats::HeaderMap::new();
    h.insert("Busline", "v=1;ts=1;ct=json");
    let body = format!("{{not json {}", "x".repeat(1950));
    raw.publish_with_headers("d.bad", h, body.into())
        .await
        .unwrap()
        .await
        .unwrap();
    // Its first delivery fails to dead-letter (NAK, 1 s); its second, the
    // server's last, is retried in place. Then a good event, from another bus.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (a, ta) = exporter(&srv.url(), "d.>").await;
    a.publish_to("d.good", ev(9, 1)).await.unwrap();
    ta.flush().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), sub.recv()).await;
    let s = tb.stats();
    let shut = tokio::time::timeout(Duration::from_secs(10), tb.shutdown()).await;
    assert_eq!(s.dead_letters_lost, 1, "{s:?}");
    assert!(
        got.is_ok(),
        "the good event never reached the bus in 20 s: the import is stuck retrying the dead letter; stats {s:?}; shutdown returned: {}",
        shut.is_ok()
    );
}

/// The same undecodable message dead-lettered a second time by the same
/// consumer (as after a lost ack, or a crash before the ack) leaves one dead
/// letter, not two: the consumer is deleted and made again, which delivers
/// the message again exactly as a lost ack would.
#[tokio::test]
async fn a_message_dead_lettered_twice_leaves_one_dead_letter() {
    let srv = server();
    let raw = jetstream::new(async_nats::connect(srv.url()).await.unwrap());
    let (_b, mut sub, tb) = importer(&srv.url(), "d.>", "imp").await;
    publish_undecodable(&raw, "d.bad").await;
    let (a, ta) = exporter(&srv.url(), "d.>").await;
    a.publish_to("d.good", ev(0, 1)).await.unwrap();
    ta.flush().await.unwrap();
    // In stream order: once the good event is here, the bad one was handled.
    assert_eq!(recv_n(&mut sub, 1).await[0].payload, ev(0, 1));
    assert_eq!(tb.stats().dead_lettered, 1);
    tb.shutdown().await.unwrap();

    raw.get_stream("BUSLINE")
        .await
        .unwrap()
        .delete_consumer("imp_d_GT")
        .await
        .unwrap();
    let (_b2, mut sub2, tb2) = importer(&srv.url(), "d.>", "imp").await;
    assert_eq!(recv_n(&mut sub2, 1).await[0].payload, ev(0, 1));
    let dead = stream_messages(&raw, "BUSLINE_DEAD").await;
    assert_eq!(dead, 1, "the second dead letter of one message was stored");
    assert_eq!(tb2.stats().dead_lettered, 0, "{:?}", tb2.stats());
}

/// An import stopped while delivering a message to a persisted topic (the
/// store has it; a full lossless subscriber holds up the delivery) leaves
/// the message unacked. When it comes again to a new import on the same
/// store (a restarted process), it is known from the store and not stored a
/// second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stored_but_not_acked_is_not_stored_again_after_a_restart() {
    let srv = server();
    let store: Arc<busline::store::MemoryStore<Ev>> = Arc::new(busline::store::MemoryStore::new());
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

/// With status events configured, `shutdown` returns (it waited for ever
/// on the task publishing them, whose channel the live client kept open),
/// and `$sys.nats.closed` is published as the last of them.
#[tokio::test]
async fn shutdown_returns_with_status_events_and_publishes_closed() {
    for jetstream in [false, true] {
        let srv = server();
        let bus: Bus<Ev> = Bus::new();
        let mut sys = bus.subscribe("$sys.nats.>").unwrap();
        let cfg = NatsConfig::new(srv.url()).export("a.>").status_events(|s| {
            Some(ev(0, 0)).map(|e| Ev {
                body: s.topic().into(),
                ..e
            })
        });
        let cfg = if jetstream {
            cfg.jetstream(js("d"))
        } else {
            cfg.core()
        };
        let t = NatsTransport::connect(&bus, cfg).await.unwrap();
        bus.publish_to("a.x", ev(0, 1)).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(15), t.shutdown()).await;
        assert!(r.is_ok(), "shutdown hung (jetstream {jetstream})");
        r.unwrap().unwrap();
        let mut last = None;
        while let Ok(Some(e)) = sys.try_recv() {
            last = Some(e.payload.body.clone());
        }
        assert_eq!(
            last.as_deref(),
            Some("$sys.nats.closed"),
            "jetstream {jetstream}"
        );
    }
}

/// A JetStream import that cannot be set up is an error naming the server,
/// the pattern and the consumer (it named only the pattern).
#[tokio::test]
async fn an_import_that_cannot_be_set_up_names_the_server_and_consumer() {
    let srv = server();
    let bus: Bus<Ev> = Bus::new();
    let cfg = JetStreamConfig {
        subjects: vec!["other.>".into()],
        ..js("d")
    };
    let e = NatsTransport::connect(
        &bus,
        NatsConfig::new(srv.url()).import("a.>").jetstream(cfg),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(&srv.url()) && e.contains("`a.>`") && e.contains("`d_a_GT`"),
        "{e}"
    );
}

/// Replies to requests from elsewhere go by core NATS even in JetStream
/// mode, so they do not wait for room in the JetStream publish window: with
/// the window held by an export that cannot be stored (no stream takes its
/// subject, so it is retried for ever), a request is still answered (the
/// reply waited for the window for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_does_not_wait_for_a_full_jetstream_window() {
    let srv = server();
    let responder: Bus<Ev> = Bus::new();
    let mut requests = responder.subscribe("rpc.>").unwrap();
    let tr = NatsTransport::connect(
        &responder,
        NatsConfig::new(srv.url())
            .import("rpc.>")
            .export("ev.>")
            .jetstream(JetStreamConfig {
                // Only the requests' subject is stored: `ev.stuck` never is.
                subjects: vec!["rpc.>".into()],
                max_in_flight: 1,
                ..js("responder")
            }),
    )
    .await
    .unwrap();
    responder.publish_to("ev.stuck", ev(1, 0)).await.unwrap();
    eventually("the export retried", || tr.stats().retried >= 1).await;

    let asker: Bus<Ev> = Bus::new();
    let ta = NatsTransport::connect(
        &asker,
        NatsConfig::new(srv.url())
            .export("rpc.>")
            .jetstream(js("asker")),
    )
    .await
    .unwrap();
    let answer = tokio::spawn(async move {
        let req = requests.recv().await.unwrap();
        responder
            .reply(&req, ev(2, req.payload.n))
            .await
            .expect("reply");
        responder
    });
    // A guard against hanging, not a timing assertion.
    let reply = asker
        .request("rpc.echo", ev(3, 7), Duration::from_secs(30))
        .await;
    let s = tr.stats();
    assert!(reply.is_ok(), "no reply: {reply:?}; responder stats {s:?}");
    assert_eq!(reply.unwrap().payload.n, 7);
    // The reply counts as exported and (core NATS) acked; the stuck event not.
    assert_eq!(
        (s.exported, s.acked),
        (2, 1),
        "the stuck export is still unacknowledged: {s:?}"
    );
    answer.await.unwrap();
    drop(ta);
}
