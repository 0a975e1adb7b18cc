//! Reconnects: a core flush or shutdown confirmed across a reconnect means
//! the server processed everything, one that cannot be confirmed fails;
//! status events and `reconnects` follow every restart; a memory stream
//! lost with its server is made again.

mod common;

use std::time::Duration;

use busline::Bus;
use busline_nats::{ConnState, JetStreamConfig, NatsConfig, NatsTransport, StatusEvent};
use common::*;

/// Core NATS: `flush()` documents "waits until every event published on the
/// bus before this call ... is settled: ... on core NATS, processed by the
/// server", failing with `FlushTimedOut` otherwise. A witness stream on the
/// server stores every message it processes on `k.>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_flush_ok_across_a_reconnect_means_the_server_processed_everything() {
    core_confirmation_across_a_reconnect(false).await;
}

/// The same for shutdown's final confirmation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_shutdown_ok_across_a_reconnect_means_the_server_processed_everything() {
    core_confirmation_across_a_reconnect(true).await;
}

async fn core_confirmation_across_a_reconnect(via_shutdown: bool) {
    let mut srv = server();
    let url = srv.url();
    let nc = async_nats::connect(&url).await.unwrap();
    let jsx = async_nats::jetstream::new(nc.clone());
    jsx.create_stream(async_nats::jetstream::stream::Config {
        name: "WITNESS".into(),
        subjects: vec!["k.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let a: Bus<Ev> = Bus::new();
    let ta = NatsTransport::connect(&a, NatsConfig::new(&url).export("k.>").core())
        .await
        .unwrap();
    let n = 20_000u64;
    let a2 = a.clone();
    let publisher = tokio::spawn(async move {
        for i in 0..n {
            a2.publish_to("k.x", ev(0, i)).await.unwrap();
        }
    });
    eventually("half handed to the client", || ta.stats().acked >= n / 2).await;
    srv.kill();
    srv.restart().unwrap();
    tokio::time::timeout(Duration::from_secs(120), publisher)
        .await
        .expect("publisher finished")
        .unwrap();
    // Guards against hanging, not timing assertions.
    let confirmed = if via_shutdown {
        tokio::time::timeout(Duration::from_secs(120), ta.shutdown())
            .await
            .expect("shutdown ends")
            .map(|_| ())
    } else {
        tokio::time::timeout(Duration::from_secs(120), ta.flush())
            .await
            .expect("flush ends")
    };
    let stored = tokio::time::timeout(Duration::from_secs(30), stream_messages(&jsx, "WITNESS"))
        .await
        .expect("stream info");
    match confirmed {
        Ok(()) => assert_eq!(
            stored, n,
            "confirmed (shutdown: {via_shutdown}) after a reconnect, but the server only \
             processed {stored} of {n} events and nothing counts the rest"
        ),
        Err(e) => assert!(
            matches!(e, busline_nats::NatsError::Reconnected { .. }),
            "shutdown: {via_shutdown}: {e:?}"
        ),
    }
}

fn status_ev(se: &StatusEvent) -> Option<Ev> {
    Some(Ev {
        publisher: 0,
        n: 0,
        body: se.topic().to_string(),
    })
}

/// Three kill/restart cycles: `reconnects` is 3, and the `$sys.nats.*`
/// events are `disconnected, connected` three times, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_events_and_reconnects_across_three_restarts() {
    let mut srv = server();
    let url = srv.url();
    let a: Bus<Ev> = Bus::new();
    let mut sys = a
        .subscriber("$sys.nats.>")
        .lossless(10_000)
        .subscribe()
        .unwrap();
    let ta = NatsTransport::connect(
        &a,
        NatsConfig::new(&url)
            .export("k.>")
            .core()
            .status_events(status_ev),
    )
    .await
    .unwrap();
    let mut status = ta.status();
    for i in 1..=3u64 {
        srv.kill();
        tokio::time::timeout(
            Duration::from_secs(60),
            status.wait_for(|s| s.state == ConnState::Disconnected),
        )
        .await
        .expect("disconnected")
        .unwrap();
        srv.restart().unwrap();
        tokio::time::timeout(
            Duration::from_secs(60),
            status.wait_for(|s| s.state == ConnState::Connected),
        )
        .await
        .expect("connected")
        .unwrap();
        assert_eq!(status.borrow().reconnects, i, "{:?}", *status.borrow());
    }
    let _ = ta.shutdown().await;
    let mut seen = Vec::new();
    while let Ok(Some(e)) = sys.try_recv() {
        if e.topic.as_str() != "$sys.nats.error" {
            seen.push(
                e.topic
                    .as_str()
                    .trim_start_matches("$sys.nats.")
                    .to_string(),
            );
        }
    }
    let want = [
        "connected",
        "disconnected",
        "connected",
        "disconnected",
        "connected",
        "disconnected",
        "connected",
        "closed",
    ];
    assert_eq!(seen, want);
}

/// Right after `connect`, the initial connection is not a reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initial_connection_is_not_counted_as_a_reconnect() {
    let srv = server();
    for round in 0..100 {
        let a: Bus<Ev> = Bus::new();
        let mut sys = a
            .subscriber("$sys.nats.connected")
            .lossless(16)
            .subscribe()
            .unwrap();
        let ta = NatsTransport::connect(
            &a,
            NatsConfig::new(srv.url())
                .export("k.>")
                .core()
                .status_events(status_ev),
        )
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(10), sys.recv())
            .await
            .expect("the initial connected event")
            .unwrap();
        let s = ta.status().borrow().clone();
        assert_eq!(s.reconnects, 0, "round {round}: {s:?}");
        drop(ta);
    }
}

/// A memory stream is gone when its server restarts (with what was
/// acknowledged in it: documented). The exporter makes it again and its
/// events are stored; an importer running
/// across the restart, and one started after it, receive them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_stream_lost_in_a_server_restart_is_made_again() {
    let mut srv = server();
    let url = srv.url();
    let mem = |durable: &str| JetStreamConfig {
        file_storage: false,
        ..js(durable)
    };
    let a: Bus<Ev> = Bus::new();
    let ta = NatsTransport::connect(
        &a,
        NatsConfig::new(&url).export("m.>").jetstream(mem("exp")),
    )
    .await
    .unwrap();
    // An importer running across the restart, and one started after it.
    let b1: Bus<Ev> = Bus::new();
    let mut sub1 = b1.subscriber("m.>").lossless(100).subscribe().unwrap();
    let _tb1 = NatsTransport::connect(
        &b1,
        NatsConfig::new(&url).import("m.>").jetstream(mem("imp1")),
    )
    .await
    .unwrap();
    a.publish_to("m.x", ev(0, 1)).await.unwrap();
    ta.flush().await.unwrap();
    assert_eq!(recv_n(&mut sub1, 1).await[0].payload.n, 1);
    srv.kill();
    srv.restart().unwrap();
    a.publish_to("m.x", ev(0, 2)).await.unwrap();
    // A guard against hanging, not a timing assertion.
    let flushed = tokio::time::timeout(Duration::from_secs(60), ta.flush()).await;
    let st = ta.stats();
    assert!(
        matches!(flushed, Ok(Ok(()))),
        "after the restart the exporter never got an ack again (flush: {flushed:?}); {st:?}"
    );
    assert_eq!(st.acked, 2, "{st:?}");
    let b: Bus<Ev> = Bus::new();
    let mut sub = b.subscriber("m.>").lossless(100).subscribe().unwrap();
    let _tb = NatsTransport::connect(
        &b,
        NatsConfig::new(&url).import("m.>").jetstream(mem("imp")),
    )
    .await
    .unwrap();
    let got = recv_n(&mut sub, 1).await;
    assert_eq!(got[0].payload.n, 2, "the event stored after the restart");
    let got = recv_n(&mut sub1, 1).await;
    assert_eq!(
        got[0].payload.n, 2,
        "the importer running across the restart"
    );
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
