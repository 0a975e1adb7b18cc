//! One conformance suite for every transport.
//!
//! Every way of running a bus — in memory, on the durable log, across
//! processes over NATS — runs the same behaviour tests through [`run`]. A
//! backend says what it promises in a [`Features`] struct; a test for a
//! feature it does not promise is skipped, and says so in the report.
//!
//! A backend provides a [`Harness`]: two bus handles (where events are
//! published, and where they are received; the same bus for the in-memory
//! backend, two processes' buses for a network transport), and, if it is
//! persistent, a way to restart.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use busline::conformance::{run, Features, MemoryHarness};
//! let report = run(&mut MemoryHarness::new(), Features::in_memory()).await;
//! assert!(report.failed.is_empty(), "{report}");
//! assert!(report.passed.contains(&"fan_out"));
//! # }
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::store::{MemoryStore, StartAt};
use crate::{Bus, RecvError};

/// The event the suite publishes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    /// Which publisher sent it.
    pub publisher: u32,
    /// Its number in that publisher's sequence.
    pub n: u64,
    /// Some bytes, to carry a payload.
    pub body: String,
}

/// What a backend promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Features {
    /// Events from one publisher arrive in publish order.
    pub ordered: bool,
    /// Events survive a restart and can be replayed.
    pub persistent: bool,
    /// Request/reply works across the harness's two sides.
    pub request_reply: bool,
    /// Queue groups deliver each event to exactly one member.
    pub queue_groups: bool,
    /// The receiving side sees the publisher's envelope metadata (id, source,
    /// correlation, causation, headers).
    pub metadata: bool,
}

impl Features {
    /// What the in-memory bus promises: everything but persistence.
    pub fn in_memory() -> Self {
        Features {
            ordered: true,
            persistent: false,
            request_reply: true,
            queue_groups: true,
            metadata: true,
        }
    }

    /// Everything.
    pub fn all() -> Self {
        Features {
            persistent: true,
            ..Self::in_memory()
        }
    }

    /// A copy with `persistent` set.
    pub fn with_persistent(mut self, on: bool) -> Self {
        self.persistent = on;
        self
    }

    /// A copy with `request_reply` set.
    pub fn with_request_reply(mut self, on: bool) -> Self {
        self.request_reply = on;
        self
    }

    /// A copy with `queue_groups` set.
    pub fn with_queue_groups(mut self, on: bool) -> Self {
        self.queue_groups = on;
        self
    }
}

/// A backend under test.
pub trait Harness: Send {
    /// The bus events are published on.
    fn publisher(&self) -> Bus<Probe>;
    /// The bus events are received on (may be the same bus).
    fn subscriber(&self) -> Bus<Probe>;
    /// Restarts the backend (persistent backends): afterwards the buses
    /// returned are new, and persisted events must still be there.
    fn restart(&mut self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Err("this backend cannot restart".to_string()) })
    }
    /// Lets events published so far cross to the subscriber side (a network
    /// transport waits for its in-flight messages). Default: nothing to wait for.
    fn settle(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The in-memory bus as a [`Harness`] (persistent through a [`MemoryStore`]
/// kept across "restarts", which stand in for a new bus on the same store).
pub struct MemoryHarness {
    bus: Bus<Probe>,
    store: Arc<MemoryStore<Probe>>,
}

impl MemoryHarness {
    /// A fresh bus persisting `conformance.>` to a memory store.
    pub fn new() -> Self {
        let store = Arc::new(MemoryStore::new());
        let bus = Bus::new();
        bus.persist("conformance.>", store.clone())
            .expect("valid pattern");
        MemoryHarness { bus, store }
    }
}

impl Default for MemoryHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness for MemoryHarness {
    fn publisher(&self) -> Bus<Probe> {
        self.bus.clone()
    }
    fn subscriber(&self) -> Bus<Probe> {
        self.bus.clone()
    }
    fn restart(&mut self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.bus.close();
            self.bus = Bus::new();
            self.bus
                .persist("conformance.>", self.store.clone())
                .map_err(|e| e.to_string())
        })
    }
}

/// What [`run`] found.
#[derive(Debug, Default)]
pub struct Report {
    /// Tests that passed.
    pub passed: Vec<&'static str>,
    /// Tests skipped, with the feature the backend does not promise.
    pub skipped: Vec<(&'static str, &'static str)>,
    /// Tests that failed, with what went wrong.
    pub failed: Vec<(&'static str, String)>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.passed {
            writeln!(f, "conformance {p}: passed")?;
        }
        for (t, why) in &self.skipped {
            writeln!(
                f,
                "conformance {t}: skipped (backend does not promise {why})"
            )?;
        }
        for (t, why) in &self.failed {
            writeln!(f, "conformance {t}: FAILED: {why}")?;
        }
        write!(
            f,
            "conformance: {} passed, {} failed, {} skipped",
            self.passed.len(),
            self.failed.len(),
            self.skipped.len()
        )
    }
}

const WAIT: Duration = Duration::from_secs(20);

fn probe(publisher: u32, n: u64) -> Probe {
    Probe {
        publisher,
        n,
        body: format!("probe {publisher}/{n}"),
    }
}

async fn recv_n(
    sub: &mut crate::Subscription<Probe>,
    n: usize,
) -> Result<Vec<Arc<crate::Envelope<Probe>>>, String> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(WAIT, sub.recv()).await {
            Ok(Ok(e)) => out.push(e),
            Ok(Err(RecvError::Lagged(k))) => {
                return Err(format!("lagged by {k} on a lossless subscription"))
            }
            Ok(Err(e)) => return Err(format!("after {} events: {e}", out.len())),
            Err(_) => return Err(format!("timed out after {} of {n} events", out.len())),
        }
    }
    Ok(out)
}

/// Runs every test the backend's features allow.
pub async fn run<H: Harness>(h: &mut H, features: Features) -> Report {
    let mut r = Report::default();
    macro_rules! case {
        ($name:literal, $cond:expr, $why:literal, $body:expr) => {
            if $cond {
                match $body.await {
                    Ok(()) => r.passed.push($name),
                    Err(e) => r.failed.push(($name, e)),
                }
            } else {
                r.skipped.push(($name, $why));
            }
        };
    }
    case!("fan_out", true, "", fan_out(h));
    case!("wildcards", true, "", wildcards(h));
    case!(
        "ordered_per_publisher",
        features.ordered,
        "ordering",
        ordered(h)
    );
    case!("metadata", features.metadata, "metadata", metadata(h));
    case!(
        "request_reply",
        features.request_reply,
        "request/reply",
        request_reply(h)
    );
    case!(
        "queue_group",
        features.queue_groups,
        "queue groups",
        queue_group(h)
    );
    case!(
        "keyed_group",
        features.queue_groups,
        "queue groups",
        keyed_group(h)
    );
    case!(
        "persistence",
        features.persistent,
        "persistence",
        persistence(h)
    );
    case!(
        "keyed_group_resumes",
        features.persistent && features.queue_groups,
        "persistence and queue groups",
        keyed_group_resumes(h)
    );
    r
}

async fn fan_out<H: Harness>(h: &mut H) -> Result<(), String> {
    let sb = h.subscriber();
    let mut subs: Vec<_> = (0..3)
        .map(|_| sb.subscribe("conformance.fan.>").map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let pb = h.publisher();
    for n in 0..100 {
        pb.publish_to("conformance.fan.out", probe(0, n))
            .await
            .map_err(|e| e.to_string())?;
    }
    h.settle().await;
    for s in &mut subs {
        let got = recv_n(s, 100).await?;
        let ns: HashSet<u64> = got.iter().map(|e| e.payload.n).collect();
        if ns.len() != 100 {
            return Err(format!("a subscriber got {} distinct of 100", ns.len()));
        }
    }
    Ok(())
}

async fn wildcards<H: Harness>(h: &mut H) -> Result<(), String> {
    let sb = h.subscriber();
    let mut one = sb
        .subscribe("conformance.wild.*")
        .map_err(|e| e.to_string())?;
    let mut rest = sb
        .subscribe("conformance.wild.>")
        .map_err(|e| e.to_string())?;
    let pb = h.publisher();
    for (i, t) in [
        "conformance.wild.a",
        "conformance.wild.a.b",
        "conformance.other.a",
    ]
    .iter()
    .enumerate()
    {
        pb.publish_to(t, probe(0, i as u64))
            .await
            .map_err(|e| e.to_string())?;
    }
    h.settle().await;
    let a = recv_n(&mut one, 1).await?;
    let b = recv_n(&mut rest, 2).await?;
    if a[0].payload.n != 0 || b.iter().map(|e| e.payload.n).collect::<Vec<_>>() != vec![0, 1] {
        return Err("wrong events matched the wildcards".into());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    if one.try_recv().map_err(|e| e.to_string())?.is_some() {
        return Err("`*` matched two tokens".into());
    }
    if let Some(e) = rest.try_recv().map_err(|e| e.to_string())? {
        return Err(format!(
            "`conformance.wild.>` got an event on `{}`, which it does not match",
            e.topic
        ));
    }
    Ok(())
}

async fn ordered<H: Harness>(h: &mut H) -> Result<(), String> {
    let sb = h.subscriber();
    let mut sub = sb
        .subscriber("conformance.order.*")
        .lossless(64)
        .subscribe()
        .map_err(|e| e.to_string())?;
    let mut tasks = Vec::new();
    for p in 0..3u32 {
        let pb = h.publisher();
        tasks.push(tokio::spawn(async move {
            for n in 0..300 {
                pb.publish_to(&format!("conformance.order.p{p}"), probe(p, n))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }));
    }
    let got = recv_n(&mut sub, 900).await?;
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let mut next = [0u64; 3];
    for e in got {
        let p = e.payload.publisher as usize;
        if e.payload.n != next[p] {
            return Err(format!(
                "publisher {p}: expected {} got {}",
                next[p], e.payload.n
            ));
        }
        next[p] += 1;
    }
    Ok(())
}

async fn metadata<H: Harness>(h: &mut H) -> Result<(), String> {
    let sb = h.subscriber();
    let mut sub = sb
        .subscribe("conformance.meta")
        .map_err(|e| e.to_string())?;
    let pb = h.publisher();
    let cause = crate::EventId::from_u128(0xfeed);
    let corr = crate::EventId::from_u128(0xbeef);
    let r = pb
        .send(
            crate::Message::new(probe(0, 0))
                .topic("conformance.meta")
                .source("conformance")
                .causation_id(cause)
                .correlation_id(corr)
                .header("x-test", "1"),
        )
        .await
        .map_err(|e| e.to_string())?;
    h.settle().await;
    let e = recv_n(&mut sub, 1).await?.remove(0);
    let ok = e.id == r.id
        && e.source.as_deref() == Some("conformance")
        && e.causation_id == Some(cause)
        && e.correlation_id == corr
        && e.header("x-test") == Some("1");
    if ok {
        Ok(())
    } else {
        Err(format!("metadata not intact: {e:?}"))
    }
}

async fn request_reply<H: Harness>(h: &mut H) -> Result<(), String> {
    let sb = h.subscriber();
    let mut svc = sb.subscribe("conformance.rpc").map_err(|e| e.to_string())?;
    let responder = tokio::spawn(async move {
        if let Ok(req) = svc.recv().await {
            let mut p = req.payload.clone();
            p.n += 1;
            let _ = sb.reply(&req, p).await;
        }
    });
    h.settle().await;
    let pb = h.publisher();
    let reply = pb
        .request("conformance.rpc", probe(0, 41), WAIT)
        .await
        .map_err(|e| e.to_string())?;
    responder.abort();
    if reply.payload.n != 42 {
        return Err(format!("wrong reply {:?}", reply.payload));
    }
    match pb
        .request("conformance.nobody", probe(0, 0), Duration::from_secs(2))
        .await
    {
        Err(crate::RequestError::NoResponders { .. })
        | Err(crate::RequestError::Timeout { .. }) => Ok(()),
        other => Err(format!("request with no responder: {other:?}")),
    }
}

async fn queue_group<H: Harness>(h: &mut H) -> Result<(), String> {
    let sb = h.subscriber();
    let mut members: Vec<_> = (0..3)
        .map(|_| {
            sb.subscriber("conformance.jobs")
                .queue("conformance-workers")
                .subscribe()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let pb = h.publisher();
    for n in 0..60 {
        pb.publish_to("conformance.jobs", probe(0, n))
            .await
            .map_err(|e| e.to_string())?;
    }
    h.settle().await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.len() < 60 && tokio::time::Instant::now() < deadline {
        for m in &mut members {
            while let Some(e) = m.try_recv().map_err(|e| e.to_string())? {
                seen.push(e.payload.n);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let unique: HashSet<u64> = seen.iter().copied().collect();
    if seen.len() != 60 || unique.len() != 60 {
        return Err(format!(
            "{} deliveries, {} distinct, want 60 each",
            seen.len(),
            unique.len()
        ));
    }
    Ok(())
}

/// Publishes `keys` publishers' events `ns` on `topic`, interleaved.
async fn publish_keys<H: Harness>(
    h: &H,
    topic: &str,
    keys: u32,
    ns: std::ops::Range<u64>,
) -> Result<(), String> {
    let pb = h.publisher();
    for n in ns {
        for k in 0..keys {
            pb.publish_to(topic, probe(k, n))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    h.settle().await;
    Ok(())
}

/// Members of a keyed group (key: the publisher) take events until `total`
/// were handled, committing those `commit` accepts; returns each key's
/// numbers in the order the group handled them.
async fn handle_keyed(
    members: &mut [crate::Subscription<Probe>],
    total: usize,
    commit: impl Fn(&Probe) -> bool,
) -> Result<std::collections::BTreeMap<u32, Vec<u64>>, String> {
    let mut per_key: std::collections::BTreeMap<u32, Vec<u64>> = Default::default();
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen < total {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("timed out after {seen} of {total} events"));
        }
        let mut idle = true;
        for m in members.iter_mut() {
            while let Some(e) = m.try_recv().map_err(|e| e.to_string())? {
                idle = false;
                seen += 1;
                per_key
                    .entry(e.payload.publisher)
                    .or_default()
                    .push(e.payload.n);
                if commit(&e.payload) {
                    m.commit(&e).await.map_err(|e| e.to_string())?;
                }
            }
        }
        if idle {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(per_key)
}

fn keyed_member(
    bus: &Bus<Probe>,
    topic: &str,
    durable: bool,
) -> Result<crate::Subscription<Probe>, String> {
    let b = bus
        .subscriber(topic)
        .queue("conformance-keyed")
        .key(|e| e.payload.publisher);
    let b = if durable {
        b.consumer("conformance-keyed").from(StartAt::Committed)
    } else {
        b
    };
    b.subscribe().map_err(|e| e.to_string())
}

/// Each key's events reach a keyed group once, in publish order.
async fn keyed_group<H: Harness>(h: &mut H) -> Result<(), String> {
    let sb = h.subscriber();
    let mut members: Vec<_> = (0..3)
        .map(|_| keyed_member(&sb, "conformance.keyed", false))
        .collect::<Result<_, _>>()?;
    publish_keys(h, "conformance.keyed", 8, 0..25).await?;
    let per_key = handle_keyed(&mut members, 200, |_| false).await?;
    for (k, ns) in per_key {
        if ns != (0..25).collect::<Vec<_>>() {
            return Err(format!("key {k}: {ns:?}"));
        }
    }
    Ok(())
}

/// After a restart a keyed group on persisted topics resumes from its
/// committed position: each key's uncommitted events again, in order, then
/// the live ones.
async fn keyed_group_resumes<H: Harness>(h: &mut H) -> Result<(), String> {
    const TOPIC: &str = "conformance.keyedlog";
    let mut members: Vec<_> = (0..3)
        .map(|_| keyed_member(&h.subscriber(), TOPIC, true))
        .collect::<Result<_, _>>()?;
    publish_keys(h, TOPIC, 4, 0..30).await?;
    handle_keyed(&mut members, 120, |p| p.n < 20).await?;
    drop(members);
    h.restart().await?;
    let sb = h.subscriber();
    let mut members: Vec<_> = (0..2)
        .map(|_| keyed_member(&sb, TOPIC, true))
        .collect::<Result<_, _>>()?;
    publish_keys(h, TOPIC, 4, 30..40).await?;
    let per_key = handle_keyed(&mut members, 80, |_| true).await?;
    for (k, ns) in per_key {
        if ns != (20..40).collect::<Vec<_>>() {
            return Err(format!("key {k} after the restart: {ns:?}"));
        }
    }
    Ok(())
}

async fn persistence<H: Harness>(h: &mut H) -> Result<(), String> {
    let pb = h.publisher();
    for n in 0..50 {
        pb.publish_to("conformance.durable", probe(7, n))
            .await
            .map_err(|e| e.to_string())?;
    }
    h.settle().await;
    drop(pb);
    h.restart().await?;
    let sb = h.subscriber();
    let mut sub = sb
        .subscriber("conformance.durable")
        .from(StartAt::Beginning)
        .subscribe()
        .map_err(|e| e.to_string())?;
    let got = recv_n(&mut sub, 50).await?;
    let ns: Vec<u64> = got.iter().map(|e| e.payload.n).collect();
    if ns != (0..50).collect::<Vec<_>>() {
        return Err(format!("replayed after restart: {ns:?}"));
    }
    Ok(())
}
