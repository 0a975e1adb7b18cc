//! Shutdown accounts for every event the exporter was handed: sent (and on
//! JetStream acknowledged), or counted as abandoned. It ends by its deadline
//! even when the server is gone.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busline::Bus;
use busline_nats::{NatsConfig, NatsError, NatsTransport};
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
/// says how many events it could not get acknowledged (it used to wait for
/// the server for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_shutdown_with_the_server_gone_ends_at_its_deadline_and_counts_the_rest() {
    let mut srv = server();
    let bus: Bus<Ev> = Bus::new();
    let t = NatsTransport::connect(
        &bus,
        NatsConfig::new(srv.url())
            .export("s.>")
            .jetstream(js("exp"))
            .shutdown_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    for n in 0..100 {
        bus.publish_to("s.x", ev(0, n)).await.unwrap();
    }
    t.flush().await.unwrap();
    srv.kill();
    for n in 100..150 {
        bus.publish_to("s.x", ev(0, n)).await.unwrap();
    }
    let r = tokio::time::timeout(Duration::from_secs(60), t.shutdown())
        .await
        .expect("shutdown ends by its deadline with the server gone");
    match r {
        Err(NatsError::ShutdownTimedOut {
            abandoned, stats, ..
        }) => {
            assert_eq!(abandoned, 50, "stats {stats:?}");
            assert_eq!(stats.acked, 100, "stats {stats:?}");
            assert_eq!(stats.abandoned, 50, "stats {stats:?}");
        }
        other => panic!("expected ShutdownTimedOut, got {other:?}"),
    }
}

/// Core NATS with the server gone: shutdown ends by its deadline too, and
/// reports that the server never confirmed.
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
    assert!(
        matches!(r, Err(NatsError::FlushTimedOut { .. })),
        "expected FlushTimedOut, got {r:?}"
    );
}
