//! `busline bench nats`: the NATS transport next to raw `async-nats`
//! publishing the same events, in the same run, against the same server.
//!
//! Cases: core NATS (publish, then flush) and JetStream (pipelined publishes,
//! until every ack is in). Every system serializes each event to JSON, as a
//! user of it would. Peers: `async-nats` publishing the bare payload, and
//! `async-nats+meta` publishing it with the same metadata headers the
//! transport sends (`Nats-Msg-Id` on JetStream and one `Busline` header), so
//! the table separates the cost of carrying an envelope from the cost of the
//! transport itself. Ratios are against bare `async-nats`.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use busline::Bus;
use busline_nats::server::NatsServer;
use busline_nats::{JetStreamConfig, NatsConfig, NatsTransport};
use clap::Args;
use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};

/// Options of `bench nats`.
#[derive(Debug, Args)]
pub struct NatsArgs {
    /// Server URL; by default a private `nats-server` is started on a free port.
    #[arg(long)]
    pub server: Option<String>,
    /// Events per round and case.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Size of the event's text field, bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// JetStream publishes awaiting their ack at once (both systems).
    #[arg(long, default_value_t = 1024)]
    pub in_flight: usize,
    /// Rounds; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run only the core NATS cases or only the JetStream ones (for profiling).
    #[arg(long, hide = true, value_parser = ["core", "jetstream"])]
    pub only: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ev {
    n: u64,
    host: String,
    text: String,
}

#[derive(Debug, Serialize)]
struct CaseResult {
    system: &'static str,
    mode: &'static str,
    msgs_per_s: f64,
    median_ms: f64,
    ratio_vs_async_nats: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    server: String,
    events: u64,
    size: usize,
    rounds: usize,
    results: Vec<CaseResult>,
}

fn event(n: u64, text: &str) -> Ev {
    Ev {
        n,
        host: "web-1".into(),
        text: text.to_string(),
    }
}

/// Runs one system's publisher loop as a task on the runtime's workers, as
/// an application's publishers run (and as in `bench fanout`), not on the
/// thread that drives the benchmark.
async fn task(
    f: impl std::future::Future<Output = Result<Duration>> + Send + 'static,
) -> Result<Duration> {
    tokio::spawn(f).await.context("publisher task")?
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The headers a hand-written publisher would add to carry the same metadata
/// the transport carries (`Nats-Msg-Id` on JetStream, one metadata header).
fn meta_headers(n: u64, js: bool) -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    let id = format!("{:032x}", (0xb5u128 << 120) | n as u128);
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let meta = if js {
        h.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        format!("v=1;ts={ts};ct=json;ty=bench::Ev")
    } else {
        format!("v=1;ts={ts};ct=json;ty=bench::Ev;id={id}")
    };
    h.insert("Busline", meta);
    h
}

/// One minimal header, built per message as any publisher would.
fn one_header() -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    h.insert("Busline", "v=1");
    h
}

/// What a raw publish carries besides the payload.
#[derive(Debug, Clone, Copy)]
enum Extra {
    /// Nothing: bare `PUB`.
    Bare,
    /// One minimal header.
    OneHeader,
    /// The transport's metadata headers.
    Meta,
}

async fn raw_core(
    client: async_nats::Client,
    events: u64,
    text: Arc<str>,
    extra: Extra,
) -> Result<Duration> {
    let text = &*text;
    let start = Instant::now();
    for n in 0..events {
        let payload = serde_json::to_vec(&event(n, text))?;
        match extra {
            Extra::Bare => client.publish("bench.raw.core", payload.into()).await?,
            Extra::OneHeader => {
                client
                    .publish_with_headers("bench.raw.core", one_header(), payload.into())
                    .await?
            }
            Extra::Meta => {
                client
                    .publish_with_headers("bench.raw.core", meta_headers(n, false), payload.into())
                    .await?
            }
        }
    }
    client.flush().await?;
    Ok(start.elapsed())
}

async fn raw_js(
    js: async_nats::jetstream::Context,
    events: u64,
    text: Arc<str>,
    in_flight: usize,
    extra: Extra,
    round: u64,
) -> Result<Duration> {
    let text = &*text;
    let start = Instant::now();
    let mut acks = FuturesUnordered::new();
    for n in 0..events {
        while acks.len() >= in_flight {
            acks.next().await.context("ack")??;
        }
        let payload = serde_json::to_vec(&event(n, text))?;
        let ack = match extra {
            Extra::Bare => js.publish("bench.raw.js", payload.into()).await?,
            Extra::OneHeader => {
                js.publish_with_headers("bench.raw.js", one_header(), payload.into())
                    .await?
            }
            // Ids unique per round, so the server stores (not de-duplicates) each one.
            Extra::Meta => {
                js.publish_with_headers(
                    "bench.raw.js",
                    meta_headers(round * events + n, true),
                    payload.into(),
                )
                .await?
            }
        };
        acks.push(ack.into_future());
    }
    while let Some(a) = acks.next().await {
        a?;
    }
    Ok(start.elapsed())
}

async fn transport(
    bus: Bus<Ev>,
    t: Arc<NatsTransport<Ev>>,
    topic: &'static str,
    events: u64,
    text: Arc<str>,
) -> Result<Duration> {
    let text = &*text;
    let start = Instant::now();
    for n in 0..events {
        bus.publish_to(topic, event(n, text))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    t.flush().await?;
    Ok(start.elapsed())
}

/// Runs `bench nats`.
pub async fn run(a: NatsArgs) -> Result<()> {
    if a.events == 0 || a.rounds == 0 || a.in_flight == 0 {
        bail!("--events, --rounds and --in-flight must be at least 1");
    }
    let own;
    let url = match &a.server {
        Some(u) => u.clone(),
        None => {
            own = NatsServer::start().context("starting a private nats-server")?;
            own.url()
        }
    };
    let text: Arc<str> = "x".repeat(a.size).into();
    let client = async_nats::connect(url.as_str())
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let js = async_nats::jetstream::new(client.clone());
    let raw_stream = js
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "BENCH_RAW".into(),
            subjects: vec!["bench.raw.js".into()],
            ..Default::default()
        })
        .await?;
    let js_cfg = JetStreamConfig {
        stream: "BENCH_BUS".into(),
        max_in_flight: a.in_flight,
        ..JetStreamConfig::default()
    };
    let core_bus: Bus<Ev> = Bus::new();
    let core_t = Arc::new(
        NatsTransport::connect(
            &core_bus,
            NatsConfig::new(url.as_str()).export("bench.bus.core"),
        )
        .await?,
    );
    let js_bus: Bus<Ev> = Bus::new();
    let js_t = Arc::new(
        NatsTransport::connect(
            &js_bus,
            NatsConfig::new(url.as_str())
                .export("bench.bus.js")
                .jetstream(js_cfg),
        )
        .await?,
    );
    let bus_stream = js.get_stream("BENCH_BUS").await?;

    let (mut rc, mut hc, mut mc, mut tc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut rj, mut hj, mut mj, mut tj) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..a.rounds {
        // Interleaved, so drift on a shared machine hits every system alike.
        let r = round as u64;
        let (n, f) = (a.events, a.in_flight);
        let (c, t) = (&client, &text);
        if a.only.as_deref() != Some("jetstream") {
            rc.push(task(raw_core(c.clone(), n, t.clone(), Extra::Bare)).await?);
            hc.push(task(raw_core(c.clone(), n, t.clone(), Extra::OneHeader)).await?);
            mc.push(task(raw_core(c.clone(), n, t.clone(), Extra::Meta)).await?);
            let (b, tr) = (core_bus.clone(), core_t.clone());
            tc.push(task(transport(b, tr, "bench.bus.core", n, t.clone())).await?);
        }
        if a.only.as_deref() == Some("core") {
            continue;
        }
        rj.push(task(raw_js(js.clone(), n, t.clone(), f, Extra::Bare, r)).await?);
        hj.push(task(raw_js(js.clone(), n, t.clone(), f, Extra::OneHeader, r)).await?);
        mj.push(task(raw_js(js.clone(), n, t.clone(), f, Extra::Meta, r)).await?);
        let (b, tr) = (js_bus.clone(), js_t.clone());
        tj.push(task(transport(b, tr, "bench.bus.js", n, t.clone())).await?);
        raw_stream.purge().await?;
        bus_stream.purge().await?;
    }
    check_acked(&a, &core_t, &js_t)?;
    let results = results(
        &a,
        [("core", rc, hc, mc, tc), ("jetstream", rj, hj, mj, tj)],
    );
    let report = Report {
        server: url,
        events: a.events,
        size: a.size,
        rounds: a.rounds,
        results,
    };
    print(&report, a.json)?;
    for t in [core_t, js_t] {
        Arc::into_inner(t)
            .context("the transport is still shared")?
            .shutdown()
            .await?;
    }
    Ok(())
}

/// Core: `flush` returned Ok after each round, so the server processed every
/// event handed to the connection, and all must have been handed;
/// JetStream: every event acked.
fn check_acked(a: &NatsArgs, core_t: &NatsTransport<Ev>, js_t: &NatsTransport<Ev>) -> Result<()> {
    let want = a.events * a.rounds as u64;
    for (mode, other, t) in [
        ("core NATS", "jetstream", core_t),
        ("JetStream", "core", js_t),
    ] {
        let acked = t.stats().acked;
        if a.only.as_deref() != Some(other) && acked != want {
            bail!("the transport had {acked} of {want} events acknowledged on {mode}");
        }
    }
    Ok(())
}

/// Timings of one mode: plain async-nats, with one header, with busline's
/// metadata, and through the transport.
type ModeTimings = (
    &'static str,
    Vec<Duration>,
    Vec<Duration>,
    Vec<Duration>,
    Vec<Duration>,
);

/// Each system's median per mode, and its ratio to plain async-nats.
fn results(a: &NatsArgs, modes: [ModeTimings; 2]) -> Vec<CaseResult> {
    let rate = |d: Duration| a.events as f64 / d.as_secs_f64();
    let mut results = Vec::new();
    for (mode, raw, one, meta, bus) in modes {
        if raw.is_empty() {
            continue; // left out with --only
        }
        let raw = median(raw);
        for (system, d) in [
            ("async-nats", raw),
            ("async-nats+1hdr", median(one)),
            ("async-nats+meta", median(meta)),
            ("busline-nats", median(bus)),
        ] {
            results.push(CaseResult {
                system,
                mode,
                msgs_per_s: rate(d),
                median_ms: d.as_secs_f64() * 1e3,
                ratio_vs_async_nats: rate(d) / rate(raw),
            });
        }
    }
    results
}

fn print(report: &Report, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "bench nats: {} events x {} rounds, {} B text, server {}",
            report.events, report.rounds, report.size, report.server
        );
        println!(
            "{:<16} {:<10} {:>14} {:>10} {:>8}",
            "system", "mode", "msgs/s", "median ms", "ratio"
        );
        for r in &report.results {
            println!(
                "{:<16} {:<10} {:>14.0} {:>10.1} {:>8.2}",
                r.system, r.mode, r.msgs_per_s, r.median_ms, r.ratio_vs_async_nats
            );
        }
    }
    Ok(())
}
