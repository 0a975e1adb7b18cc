//! The shared conformance suite across two buses joined by NATS JetStream:
//! events are published on one bus, exported, stored by the server, imported
//! by the other bus and received there.
//!
//! Not promised here: replay from the bus's own event store after a restart
//! (`persistent`: JetStream's durability is tested in `faults.rs` instead).
//! Request/reply is: the request crosses to the other bus, the reply comes
//! back (across real processes: `two_process.rs`).

mod common;

use busline::conformance::{run, Features, Harness, Probe};
use busline::Bus;
use busline_nats::server::NatsServer;
use busline_nats::{Codec, NatsConfig, NatsTransport};
use futures::future::BoxFuture;

struct NatsHarness {
    _server: NatsServer,
    a: Bus<Probe>,
    b: Bus<Probe>,
    ta: NatsTransport<Probe>,
    _tb: NatsTransport<Probe>,
}

impl Harness for NatsHarness {
    fn publisher(&self) -> Bus<Probe> {
        self.a.clone()
    }
    fn subscriber(&self) -> Bus<Probe> {
        self.b.clone()
    }
    fn settle(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.ta.flush().await.expect("flush") })
    }
}

async fn harness(codec: Codec) -> NatsHarness {
    let server = common::server();
    let a = Bus::new();
    let b = Bus::new();
    let ta = NatsTransport::connect(
        &a,
        NatsConfig::new(server.url())
            .export("conformance.>")
            .codec(codec)
            .jetstream(common::js("a")),
    )
    .await
    .unwrap();
    let tb = NatsTransport::connect(
        &b,
        NatsConfig::new(server.url())
            .import("conformance.>")
            .jetstream(common::js("b")),
    )
    .await
    .unwrap();
    NatsHarness {
        _server: server,
        a,
        b,
        ta,
        _tb: tb,
    }
}

fn features() -> Features {
    Features::in_memory().with_persistent(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_buses_over_jetstream_pass_the_conformance_suite() {
    let mut h = harness(Codec::Json).await;
    let report = run(&mut h, features()).await;
    println!("{report}");
    assert!(report.failed.is_empty(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_passes_with_postcard_too() {
    let mut h = harness(Codec::Postcard).await;
    let report = run(&mut h, features()).await;
    assert!(report.failed.is_empty(), "{report}");
}
