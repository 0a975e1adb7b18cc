//! `busline bench nats`: the NATS transport next to raw `async-nats`
//! publishing the same events, in the same run, against the same server.
//!
//! Cases: core NATS (publish, then flush) and JetStream (pipelined publishes,
//! until every ack is in). Both sides serialize each event to JSON, as a user
//! of either would; the transport also builds its metadata headers.

use std::future::IntoFuture;
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
    Ev { n, host: "web-1".into(), text: text.to_string() }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn raw_core(client: &async_nats::Client, events: u64, text: &str) -> Result<Duration> {
    let start = Instant::now();
    let hdr = std::env::var("BENCH_HDR").is_ok();
    for n in 0..events {
        let payload = serde_json::to_vec(&event(n, text))?;
        if hdr {
            let mut h = async_nats::HeaderMap::new();
            h.insert("Nats-Msg-Id", format!("{:032x}", n as u128 | 1 << 100));
            if std::env::var("BENCH_HDR").unwrap() == "5" {
            h.insert("Busline-Time", "1763794800123456789");
            h.insert("Busline-Type", "busline_cli::bench_nats::Ev");
            h.insert("Busline-Version", "1");
            h.insert("Content-Type", "application/json");
            } else if std::env::var("BENCH_HDR").unwrap() == "2" {
            h.insert("Busline", "v=1;t=1763794800123456789;ty=busline_cli::bench_nats::Ev;ct=json");
            }
            client.publish_with_headers("bench.raw.core", h, payload.into()).await?;
        } else {
            client.publish("bench.raw.core", payload.into()).await?;
        }
    }
    client.flush().await?;
    Ok(start.elapsed())
}

async fn raw_js(js: &async_nats::jetstream::Context, events: u64, text: &str, in_flight: usize) -> Result<Duration> {
    let start = Instant::now();
    let mut acks = FuturesUnordered::new();
    for n in 0..events {
        while acks.len() >= in_flight {
            acks.next().await.context("ack")??;
        }
        let payload = serde_json::to_vec(&event(n, text))?;
        acks.push(js.publish("bench.raw.js", payload.into()).await?.into_future());
    }
    while let Some(a) = acks.next().await {
        a?;
    }
    Ok(start.elapsed())
}

async fn transport(bus: &Bus<Ev>, t: &NatsTransport<Ev>, topic: &str, events: u64, text: &str) -> Result<Duration> {
    let start = Instant::now();
    for n in 0..events {
        bus.publish_to(topic, event(n, text)).await.map_err(|e| anyhow::anyhow!("{e}"))?;
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
    let text = "x".repeat(a.size);
    let client = async_nats::connect(url.as_str()).await.with_context(|| format!("connecting to {url}"))?;
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
    let core_t = NatsTransport::connect(&core_bus, NatsConfig::new(url.as_str()).export("bench.bus.core")).await?;
    let js_bus: Bus<Ev> = Bus::new();
    let js_t = NatsTransport::connect(&js_bus, NatsConfig::new(url.as_str()).export("bench.bus.js").jetstream(js_cfg)).await?;
    let bus_stream = js.get_stream("BENCH_BUS").await?;

    let (mut rc, mut tc, mut rj, mut tj) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..a.rounds {
        // Interleaved, so drift on a shared machine hits both sides alike.
        rc.push(raw_core(&client, a.events, &text).await?);
        tc.push(transport(&core_bus, &core_t, "bench.bus.core", a.events, &text).await?);
        rj.push(raw_js(&js, a.events, &text, a.in_flight).await?);
        tj.push(transport(&js_bus, &js_t, "bench.bus.js", a.events, &text).await?);
        raw_stream.purge().await?;
        bus_stream.purge().await?;
    }
    let stats = js_t.stats();
    if stats.acked != a.events * a.rounds as u64 {
        bail!("the transport acked {} of {} events", stats.acked, a.events * a.rounds as u64);
    }
    let rate = |d: Duration| a.events as f64 / d.as_secs_f64();
    let mut results = Vec::new();
    for (mode, raw, bus) in [("core", rc, tc), ("jetstream", rj, tj)] {
        let (raw, bus) = (median(raw), median(bus));
        results.push(CaseResult {
            system: "async-nats",
            mode,
            msgs_per_s: rate(raw),
            median_ms: raw.as_secs_f64() * 1e3,
            ratio_vs_async_nats: 1.0,
        });
        results.push(CaseResult {
            system: "busline-nats",
            mode,
            msgs_per_s: rate(bus),
            median_ms: bus.as_secs_f64() * 1e3,
            ratio_vs_async_nats: rate(bus) / rate(raw),
        });
    }
    let report = Report { server: url, events: a.events, size: a.size, rounds: a.rounds, results };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("bench nats: {} events x {} rounds, {} B text, server {}", report.events, report.rounds, report.size, report.server);
        println!("{:<14} {:<10} {:>14} {:>10} {:>8}", "system", "mode", "msgs/s", "median ms", "ratio");
        for r in &report.results {
            println!("{:<14} {:<10} {:>14.0} {:>10.1} {:>8.2}", r.system, r.mode, r.msgs_per_s, r.median_ms, r.ratio_vs_async_nats);
        }
    }
    core_t.shutdown().await?;
    js_t.shutdown().await?;
    Ok(())
}
