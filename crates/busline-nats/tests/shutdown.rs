//! Shutdown accounts for every event the exporter was handed: sent (and on
//! JetStream acknowledged), or counted as abandoned. It ends by its deadline
//! even when the server is gone.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busline::Bus;
use busline_nats::{ConnState, JetStreamConfig, NatsConfig, NatsError, NatsTransport};
use common::*;
use futures::StreamExt;

/// Publishes until told to stop; returns how many publishes reached the
/// exporter (the bus's only subscriber).
fn publisher(
    bus: Bus<Ev>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut to_exporter = 0;
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) && n < 5_000_000 {
            let r = bus
                .publish_to("s.x", ev(0, n))
                .await
                .expect("the bus is open");
            to_exporter += r.subscribers as u64;
            n += 1;
            sent.store(n, Ordering::Relaxed);
            if n % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        to_exporter
    })
}

/// Shuts `t` down while `bus` is being published to; returns (events the
/// exporter was handed, the final stats).
async fn shut_down_mid_stream(
    bus: &Bus<Ev>,
    t: NatsTransport<Ev>,
) -> (u64, busline_nats::TransportStats) {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let p = publisher(bus.clone(), stop.clone(), sent.clone());
    eventually("5,000 published", || sent.load(Ordering::Relaxed) >= 5_000).await;
    let stats = tokio::time::timeout(Duration::from_secs(60), t.shutdown())
        .await
        .expect("shutdown returns")
        .expect("shutdown succeeds with the server up");
    // The publisher goes on after the shutdown: those events reach nobody.
    let at_shutdown = sent.load(Ordering::Relaxed);
    eventually("more published after", || {
        sent.load(Ordering::Relaxed) > at_shutdown
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    (p.await.unwrap(), stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_shutdown_while_publishing_sends_or_counts_every_event() {
    let srv = server();
    // Room for every event: the client drops what overflows a subscription.
    let raw = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 21)
        .connect(srv.url())
        .await
        .unwrap();
    let mut seen = raw.subscribe("s.>").await.unwrap();
    raw.flush().await.unwrap();
    let bus: Bus<Ev> = Bus::new();
    let t = NatsTransport::connect(
        &bus,
        NatsConfig::new(srv.url()).export("s.>").buffer(100_000),
    )
    .await
    .unwrap();
    let (handed, stats) = shut_down_mid_stream(&bus, t).await;
    // A marker sent after the shutdown confirmed: everything before it has arrived.
    raw.publish("s.zz.end", "".into()).await.unwrap();
    let mut arrived = 0u64;
    while let Some(m) = tokio::time::timeout(Duration::from_secs(30), seen.next())
        .await
        .expect("the marker arrives")
    {
        if m.subject.as_str() == "s.zz.end" {
            break;
        }
        arrived += 1;
    }
    assert!(handed >= 5_000, "handed {handed}");
    assert_eq!(
        handed,
        arrived + stats.abandoned,
        "every event the exporter was handed arrived or is counted abandoned; stats {stats:?}"
    );
    assert_eq!(stats.rejected, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_shutdown_while_publishing_stores_or_counts_every_event() {
    let srv = server();
    let bus: Bus<Ev> = Bus::new();
    let t = NatsTransport::connect(
        &bus,
        NatsConfig::new(srv.url())
            .export("s.>")
            .buffer(100_000)
            .jetstream(js("exp")),
    )
    .await
    .unwrap();
    let (handed, stats) = shut_down_mid_stream(&bus, t).await;
    let raw = async_nats::jetstream::new(async_nats::connect(srv.url()).await.unwrap());
    let stored = stream_messages(&raw, "BUSLINE").await;
    assert!(handed >= 5_000, "handed {handed}");
    assert_eq!(
        handed,
        stored + stats.abandoned,
        "every event the exporter was handed is stored or counted abandoned; stats {stats:?}"
    );
    assert_eq!(stats.acked, stored, "stats {stats:?}");
}

/// With the server gone, a JetStream shutdown gives up at its deadline and
/// says how many events it could not get acknowledged: with a window that
/// holds them all (in flight), and with a small one, where most are still
/// queued for the exporter (counted too, not dropped with the queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_shutdown_with_the_server_gone_ends_at_its_deadline_and_counts_the_rest() {
    for max_in_flight in [1024, 4] {
        let mut srv = server();
        let bus: Bus<Ev> = Bus::new();
        let t = NatsTransport::connect(
            &bus,
            NatsConfig::new(srv.url())
                .export("s.>")
                .jetstream(JetStreamConfig {
                    max_in_flight,
                    ..js("exp")
                })
                .shutdown_timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap();
        for n in 0..100 {
            bus.publish_to("s.x", ev(0, n)).await.unwrap();
        }
        t.flush().await.unwrap();
        srv.kill();
        let mut handed = 0;
        for n in 100..150 {
            handed += bus.publish_to("s.x", ev(0, n)).await.unwrap().subscribers as u64;
        }
        assert_eq!(handed, 50);
        let r = tokio::time::timeout(Duration::from_secs(60), t.shutdown())
            .await
            .expect("shutdown ends by its deadline with the server gone");
        match r {
            Err(NatsError::ShutdownTimedOut {
                abandoned, stats, ..
            }) => {
                let w = max_in_flight;
                assert_eq!(abandoned, handed, "window {w}: stats {stats:?}");
                assert_eq!(stats.acked, 100, "window {w}: stats {stats:?}");
                assert_eq!(stats.abandoned, 50, "window {w}: stats {stats:?}");
            }
            other => panic!("window {max_in_flight}: expected ShutdownTimedOut, got {other:?}"),
        }
    }
}

/// Core NATS with the server gone: shutdown ends by its deadline too, and
/// reports that the server never confirmed, or what it never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_shutdown_with_the_server_gone_ends_at_its_deadline() {
    let mut srv = server();
    let bus: Bus<Ev> = Bus::new();
    let t = NatsTransport::connect(
        &bus,
        NatsConfig::new(srv.url())
            .export("s.>")
            .shutdown_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    bus.publish_to("s.x", ev(0, 0)).await.unwrap();
    t.flush().await.unwrap();
    srv.kill();
    bus.publish_to("s.x", ev(0, 1)).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(60), t.shutdown())
        .await
        .expect("shutdown ends by its deadline with the server gone");
    // Either the event was written before the exporter's connection
    // noticed the server had gone (then the server never confirms it), or
    // it waited for a connection that never came back (then it is counted
    // as abandoned). Never `Ok`.
    match r {
        Err(NatsError::FlushTimedOut { .. }) => {}
        Err(NatsError::ShutdownTimedOut {
            abandoned, stats, ..
        }) => {
            assert_eq!(abandoned, 1, "stats {stats:?}");
            assert_eq!((stats.acked, stats.abandoned), (1, 1), "stats {stats:?}");
        }
        other => panic!("expected FlushTimedOut or ShutdownTimedOut, got {other:?}"),
    }
}

async fn wait_disconnected(t: &NatsTransport<Ev>) {
    let mut st = t.status();
    tokio::time::timeout(Duration::from_secs(30), async {
        while st.borrow_and_update().state != ConnState::Disconnected {
            st.changed().await.unwrap();
        }
    })
    .await
    .expect("the transport notices the server is gone");
}

/// Core NATS with the server gone and the client's buffer full: shutdown
/// ends by its deadline (the server's final confirmation waited for room in
/// the full buffer for ever), and what the client never took is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_shutdown_with_the_client_buffer_full_ends_and_counts() {
    for events in [64u64, 80] {
        let mut srv = server();
        let bus: Bus<Ev> = Bus::new();
        let t = NatsTransport::connect(
            &bus,
            NatsConfig::new(srv.url())
                .export("s.>")
                .buffer(64)
                .shutdown_timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap();
        srv.kill();
        wait_disconnected(&t).await;
        let mut handed = 0;
        for n in 0..events {
            // The bus queue fills too once the client's is full.
            match tokio::time::timeout(Duration::from_secs(2), bus.publish_to("s.x", ev(0, n)))
                .await
            {
                Ok(r) => handed += r.unwrap().subscribers as u64,
                Err(_) => break,
            }
        }
        let r = tokio::time::timeout(Duration::from_secs(60), t.shutdown())
            .await
            .expect("shutdown ends by its deadline with the server gone");
        match r {
            // The client took everything: only the confirmation is missing.
            Err(NatsError::FlushTimedOut { .. }) => {}
            Err(NatsError::ShutdownTimedOut {
                abandoned, stats, ..
            }) => assert_eq!(
                stats.acked + abandoned,
                handed,
                "{events} events: every one taken by the client or counted; stats {stats:?}"
            ),
            other => panic!("{events} events: expected a timeout error, got {other:?}"),
        }
    }
}

/// Dropping the transport, or a shutdown future, stops its exporter at once:
/// nothing goes on holding its bus queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_transport_or_shutdown_leaves_no_exporter_behind() {
    for cancel_shutdown in [false, true] {
        let mut srv = server();
        let bus: Bus<Ev> = Bus::new();
        let t = NatsTransport::connect(
            &bus,
            NatsConfig::new(srv.url())
                .export("s.>")
                .jetstream(JetStreamConfig {
                    max_in_flight: 1,
                    ..js("exp")
                }),
        )
        .await
        .unwrap();
        srv.kill();
        for n in 0..5 {
            bus.publish_to("s.x", ev(0, n)).await.unwrap();
        }
        if cancel_shutdown {
            let r = tokio::time::timeout(Duration::from_millis(500), t.shutdown()).await;
            assert!(r.is_err(), "the default 30 s deadline: still running");
        } else {
            drop(t);
        }
        eventually("the exporter's queue is gone", || {
            bus.stats().subscribers.is_empty()
        })
        .await;
    }
}

/// A deadline of zero on an idle transport is not a failure, whether or not
/// the exporter has seen the stop, or the server confirmed, in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_deadline_on_an_idle_transport_succeeds() {
    let srv = server();
    for i in 0..10 {
        let bus: Bus<Ev> = Bus::new();
        let mut cfg = NatsConfig::new(srv.url())
            .export("s.>")
            .shutdown_timeout(Duration::ZERO);
        if i % 2 == 0 {
            cfg = cfg.jetstream(js("exp"));
        }
        let t = NatsTransport::connect(&bus, cfg).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(30), t.shutdown())
            .await
            .expect("returns");
        assert!(r.is_ok(), "run {i}: {r:?}");
    }
}
