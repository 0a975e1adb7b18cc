//! Shutdown ends: it does not wait for a full local subscriber, and it
//! returns with its status events published, `closed` last.

mod common;

use std::time::Duration;

use busline::Bus;
use busline_nats::{NatsConfig, NatsTransport};
use common::*;

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

/// With status events configured, `shutdown` returns (the task publishing
/// them ends at the stop, although the live client keeps its channel open),
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
