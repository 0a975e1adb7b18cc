//! JetStream exports: every event is acknowledged, retried until it is,
//! or rejected and counted; a healthy server sees no retries, and flush
//! returns; replies do not wait for the publish window.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use busline::Bus;
use busline_nats::{JetStreamConfig, NatsConfig, NatsTransport};
use common::*;

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

/// The first publishes of an exporter get a full ack timeout before the
/// sweep retries them, like any other.
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

/// An error answer that passes (a stream holding one message at a time,
/// discard new, max_age 2 s) is retried until the event is stored, not
/// rejected.
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

/// Replies to requests from elsewhere go by core NATS even in JetStream
/// mode, so they do not wait for room in the JetStream publish window: with
/// the window held by an export that cannot be stored (no stream takes its
/// subject, so it is retried for ever), a request is still answered.
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
    // The reply reaches the asker as soon as it is written; the responder
    // counts it once its write returns.
    if reply.is_ok() {
        eventually("the reply counted", || tr.stats().acked >= 1).await;
    }
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
