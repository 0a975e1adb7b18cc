//! The shared conformance suite across two buses joined by NATS JetStream:
//! events are published on one bus, exported, stored by the server, imported
//! by the other bus and received there.
//!
//! Request/reply is promised: the request crosses to the other bus, the reply
//! comes back (across real processes: `two_process.rs`).
//!
//! `persistent` is promised by the second harness, whose buses both persist
//! `conformance.>` to a [`JetStreamStore`] on one stream of the same server:
//! the publishing bus appends before it exports; the importing bus appends
//! the imported copy, which the server recognises by its `Nats-Msg-Id` and
//! answers with the first copy's offset, so both buses see one log. Its
//! `restart` shuts both buses and transports down and builds new ones with
//! new stores (new connections) on the same server.

mod common;

use busline::conformance::{run, Features, Harness, Probe};
use busline::Bus;
use busline_nats::server::NatsServer;
use busline_nats::{Codec, JetStreamStore, JetStreamStoreConfig, NatsConfig, NatsTransport};
use futures::future::BoxFuture;
use std::sync::Arc;

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

/// Two buses over JetStream, each persisting `conformance.>` to a JetStream store.
struct PersistentHarness {
    server: NatsServer,
    sides: Sides,
}

/// What a restart replaces: the buses, their stores and transports.
struct Sides {
    a: Bus<Probe>,
    b: Bus<Probe>,
    ta: NatsTransport<Probe>,
    tb: NatsTransport<Probe>,
}

async fn persisting_bus(url: &str) -> Bus<Probe> {
    let store = JetStreamStore::open(JetStreamStoreConfig::new(url).stream("CONFORMANCE_STORE"))
        .await
        .expect("store opens");
    let bus = Bus::new();
    bus.persist("conformance.>", Arc::new(store)).unwrap();
    bus
}

impl Sides {
    async fn start(url: &str) -> Self {
        let a = persisting_bus(url).await;
        let b = persisting_bus(url).await;
        let ta = NatsTransport::connect(
            &a,
            NatsConfig::new(url)
                .export("conformance.>")
                .jetstream(common::js("a")),
        )
        .await
        .unwrap();
        let tb = NatsTransport::connect(
            &b,
            NatsConfig::new(url)
                .import("conformance.>")
                .jetstream(common::js("b")),
        )
        .await
        .unwrap();
        Sides { a, b, ta, tb }
    }

    async fn stop(self) -> Result<(), String> {
        self.ta.shutdown().await.map_err(|e| e.to_string())?;
        self.tb.shutdown().await.map_err(|e| e.to_string())?;
        self.a.close();
        self.b.close();
        Ok(())
    }
}

impl PersistentHarness {
    async fn start() -> Self {
        let server = common::server();
        let sides = Sides::start(&server.url()).await;
        PersistentHarness { server, sides }
    }
}

impl Harness for PersistentHarness {
    fn publisher(&self) -> Bus<Probe> {
        self.sides.a.clone()
    }
    fn subscriber(&self) -> Bus<Probe> {
        self.sides.b.clone()
    }
    fn settle(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.sides.ta.flush().await.expect("flush") })
    }
    fn restart(&mut self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let fresh = Sides::start(&self.server.url()).await;
            std::mem::replace(&mut self.sides, fresh).stop().await
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_buses_persisting_to_a_jetstream_store_pass_the_whole_suite() {
    let mut h = PersistentHarness::start().await;
    let report = run(&mut h, Features::in_memory().with_persistent(true)).await;
    println!("{report}");
    assert!(report.failed.is_empty(), "{report}");
    assert!(report.passed.contains(&"persistence"), "{report}");
    assert!(report.skipped.is_empty(), "{report}");
}

/// The importing bus's append of an imported event is recognised by its
/// `Nats-Msg-Id`: it gets the publishing bus's offset, and the log holds it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_buses_see_one_log_with_the_same_offsets() {
    let h = PersistentHarness::start().await;
    let mut here = h.sides.a.subscribe("conformance.one").unwrap();
    let mut there = h.sides.b.subscribe("conformance.one").unwrap();
    for n in 0..100 {
        h.sides
            .a
            .publish_to(
                "conformance.one",
                Probe {
                    publisher: 0,
                    n,
                    body: String::new(),
                },
            )
            .await
            .unwrap();
    }
    h.settle().await;
    let mut offsets = Vec::new();
    for _ in 0..100 {
        let a = tokio::time::timeout(std::time::Duration::from_secs(30), here.recv())
            .await
            .expect("a receives")
            .unwrap();
        let b = tokio::time::timeout(std::time::Duration::from_secs(30), there.recv())
            .await
            .expect("b receives")
            .unwrap();
        assert_eq!((a.id, a.offset()), (b.id, b.offset()));
        offsets.push(a.offset().unwrap());
    }
    assert_eq!(offsets, (0..100).collect::<Vec<_>>());
    let store = h.sides.b.store_for("conformance.one").unwrap();
    assert_eq!(
        store.end(),
        100,
        "the imported copies were not stored again"
    );
}
