//! Shared test support: a managed server, an event type, receive helpers.
//! Written so the lead's conformance suite can lift these behaviours as they are.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use busline::{Bus, Envelope, Subscription};
use busline_nats::server::NatsServer;
use busline_nats::{JetStreamConfig, NatsConfig, NatsTransport};
use serde::{Deserialize, Serialize};

/// The test event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ev {
    pub publisher: u32,
    pub n: u64,
    pub body: String,
}

pub fn ev(publisher: u32, n: u64) -> Ev {
    Ev {
        publisher,
        n,
        body: format!("p{publisher}-{n}"),
    }
}

/// A fresh server; fails loudly (no skip) when nats-server is missing.
pub fn server() -> NatsServer {
    NatsServer::start().unwrap_or_else(|e| panic!("these tests need a real nats-server: {e}"))
}

pub fn server_with(conf: &str) -> NatsServer {
    NatsServer::with_config(conf)
        .unwrap_or_else(|e| panic!("these tests need a real nats-server: {e}"))
}

/// JetStream settings with short timers, so redelivery after a kill is quick.
pub fn js(durable: &str) -> JetStreamConfig {
    JetStreamConfig {
        durable: durable.into(),
        ack_wait: Duration::from_secs(2),
        ack_timeout: Duration::from_secs(2),
        ..JetStreamConfig::default()
    }
}

pub async fn exporter(url: &str, pattern: &str) -> (Bus<Ev>, NatsTransport<Ev>) {
    let bus = Bus::new();
    let t = NatsTransport::connect(
        &bus,
        NatsConfig::new(url).export(pattern).jetstream(js("exp")),
    )
    .await
    .expect("exporter connects");
    (bus, t)
}

/// Publishes an undecodable message (a `Busline` header, a payload that is
/// not JSON) on `subject` through JetStream, acknowledged.
pub async fn publish_undecodable(js: &async_nats::jetstream::Context, subject: &str) {
    let mut h = async_nats::HeaderMap::new();
    h.insert("Busline", "v=1;ts=1;ct=json");
    js.publish_with_headers(subject.to_string(), h, "{not json".into())
        .await
        .expect("published")
        .await
        .expect("stored");
}

/// Messages stream `name` holds now.
pub async fn stream_messages(js: &async_nats::jetstream::Context, name: &str) -> u64 {
    js.get_stream(name)
        .await
        .expect("the stream exists")
        .info()
        .await
        .expect("stream info")
        .state
        .messages
}

/// A JetStream transport importing `pattern` into an existing `bus` with
/// durable consumer `durable` (see [`js`]).
pub async fn import_into(
    bus: &Bus<Ev>,
    url: &str,
    pattern: &str,
    durable: &str,
) -> NatsTransport<Ev> {
    import_with(bus, url, pattern, js(durable)).await
}

/// A JetStream transport importing `pattern` into `bus` with `jetstream`.
pub async fn import_with(
    bus: &Bus<Ev>,
    url: &str,
    pattern: &str,
    jetstream: JetStreamConfig,
) -> NatsTransport<Ev> {
    NatsTransport::connect(
        bus,
        NatsConfig::new(url).import(pattern).jetstream(jetstream),
    )
    .await
    .expect("importer connects")
}

pub async fn importer(
    url: &str,
    pattern: &str,
    durable: &str,
) -> (Bus<Ev>, Subscription<Ev>, NatsTransport<Ev>) {
    let bus = Bus::new();
    let sub = bus
        .subscriber(pattern)
        .lossless(100_000)
        .subscribe()
        .unwrap();
    let t = import_into(&bus, url, pattern, durable).await;
    (bus, sub, t)
}

/// Receives `n` events, failing (not hanging) if they do not come within a generous guard.
pub async fn recv_n(sub: &mut Subscription<Ev>, n: usize) -> Vec<Arc<Envelope<Ev>>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(60), sub.recv()).await {
            Ok(Ok(e)) => out.push(e),
            Ok(Err(e)) => panic!("recv failed after {} of {n}: {e}", out.len()),
            Err(_) => panic!("only {} of {n} events arrived within 60 s", out.len()),
        }
    }
    out
}

/// Receives until every id in `want` has arrived; returns how many duplicates were seen.
pub async fn recv_all(sub: &mut Subscription<Ev>, want: &HashSet<(u32, u64)>) -> usize {
    let mut seen = HashSet::new();
    let mut dups = 0;
    while !want.is_subset(&seen) {
        match tokio::time::timeout(Duration::from_secs(60), sub.recv()).await {
            Ok(Ok(e)) => {
                if !seen.insert((e.payload.publisher, e.payload.n)) {
                    dups += 1;
                }
            }
            Ok(Err(e)) => panic!("recv failed: {e}"),
            Err(_) => {
                let missing: Vec<_> = want.difference(&seen).take(10).collect();
                panic!(
                    "{} of {} events missing after 60 s idle, e.g. {missing:?}",
                    want.difference(&seen).count(),
                    want.len()
                )
            }
        }
    }
    dups
}

/// Waits until `f` holds (counters are bumped just after delivery, so a
/// subscriber can see an event a moment before its counter moves).
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not true within 30 s");
}

/// A local store that fails its first `fail` appends (a transient error,
/// "disk busy"), then appends (it keeps nothing).
pub struct Flaky {
    pub fail: std::sync::atomic::AtomicU64,
    pub end: std::sync::atomic::AtomicU64,
}

impl Flaky {
    /// A store whose first `n` appends fail.
    pub fn failing(n: u64) -> Arc<Flaky> {
        Arc::new(Flaky {
            fail: std::sync::atomic::AtomicU64::new(n),
            end: std::sync::atomic::AtomicU64::new(0),
        })
    }
}

impl busline::EventStore<Ev> for Flaky {
    fn append<'a>(
        &'a self,
        _env: &'a Envelope<Ev>,
    ) -> futures::future::BoxFuture<'a, Result<u64, busline::StoreError>> {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            if self
                .fail
                .fetch_update(SeqCst, SeqCst, |f| f.checked_sub(1))
                .is_ok()
            {
                return Err(busline::StoreError::new("append", "transient: disk busy"));
            }
            Ok(self.end.fetch_add(1, SeqCst))
        })
    }
    fn end(&self) -> u64 {
        self.end.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn read(&self, _from: u64, _to: u64) -> Result<busline::StoredEvents<Ev>, busline::StoreError> {
        Ok(Box::new(std::iter::empty()))
    }
    fn offset_for_time(&self, _at: std::time::SystemTime) -> Result<u64, busline::StoreError> {
        Ok(self.end())
    }
    fn commit_offset<'a>(
        &'a self,
        _n: &'a str,
        _o: u64,
    ) -> futures::future::BoxFuture<'a, Result<(), busline::StoreError>> {
        Box::pin(async { Ok(()) })
    }
    fn committed_offset(&self, _n: &str) -> Result<Option<u64>, busline::StoreError> {
        Ok(None)
    }
}

/// A JetStream context on a client of its own (to look at or change what
/// the server holds behind a transport's back).
pub async fn jsctx(url: &str) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(url).await.unwrap())
}

/// An envelope on `orders.new` with a fixed id (from `n`) and time, and
/// the given metadata.
pub fn envelope<P>(
    n: u64,
    source: Option<&str>,
    reply: Option<&str>,
    headers: &[(&str, &str)],
    payload: P,
) -> Envelope<P> {
    let id = busline::EventId::from_u128(0xabc0_0000_0000_0000_0000_0000_0000_0000 + n as u128);
    Envelope::from_parts(
        0,
        id,
        busline::Topic::new("orders.new").unwrap(),
        std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        source.map(Into::into),
        id,
        None,
        reply.map(|r| busline::Topic::new(r).unwrap()),
        headers
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        payload,
    )
}
