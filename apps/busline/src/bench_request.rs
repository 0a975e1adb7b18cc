//! `busline bench request`: request/reply round trips to an actor — a
//! module on the bus answering `GetStatus` with `Context::reply`, as in
//! `examples/actor.rs` — beside the same actor written by hand on a tokio
//! mpsc inbox with a oneshot per request.
//!
//! `--requesters` tasks each send requests one after another until
//! `--requests` were answered between them; every round trip's latency goes
//! into a histogram. The systems take turns, round by round; the median
//! round (by throughput) is reported with its latencies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use busline::{Bus, Context};
use clap::Args;

use crate::bench_runtime::runtime;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

/// Options of `bench request`.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// Round trips per round (shared by the requesters).
    #[arg(long, default_value_t = 200_000)]
    pub requests: u64,
    /// Concurrent requesters, one case each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub requesters: Vec<usize>,
    /// Rounds; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run only the systems whose name contains this (for profiling; no ratio).
    #[arg(long)]
    pub only: Option<String>,
    /// Worker threads of the multi-thread runtime (default: one per core;
    /// 1 makes instruction counts repeatable under callgrind).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// What the actor is asked and answers.
#[derive(Debug, Clone)]
enum Msg {
    GetStatus,
    Status { answered: u64 },
}

const SYSTEMS: [&str; 2] = ["busline-module", "mpsc-oneshot-actor"];

#[derive(Debug, Serialize)]
struct RequestResult {
    system: &'static str,
    requesters: usize,
    round_trips_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    ratio_vs_mpsc_oneshot: f64,
}

struct Round {
    per_s: f64,
    latency: Histogram<u64>,
}

/// Runs `bench request`.
pub fn run(a: RequestArgs) -> Result<()> {
    if a.requests == 0 || a.rounds == 0 || a.requesters.contains(&0) || a.threads == Some(0) {
        bail!("--requests, --rounds, --threads and every --requesters must be at least 1");
    }
    let mut results = Vec::new();
    for &n in &a.requesters {
        let mut rounds: Vec<Vec<Round>> = vec![Vec::new(), Vec::new()];
        let chosen = |sys: &str| a.only.as_deref().is_none_or(|o| sys.contains(o));
        for _ in 0..a.rounds {
            for (i, sys) in SYSTEMS.iter().enumerate() {
                if chosen(sys) {
                    let rt = runtime(a.threads)?;
                    rounds[i].push(rt.block_on(round(sys, n, a.requests))?);
                }
            }
        }
        let mut rows: Vec<RequestResult> = SYSTEMS
            .iter()
            .zip(rounds)
            .filter(|(sys, _)| chosen(sys))
            .map(|(sys, mut rs)| {
                rs.sort_by(|x, y| x.per_s.total_cmp(&y.per_s));
                let m = &rs[rs.len() / 2];
                RequestResult {
                    system: sys,
                    requesters: n,
                    round_trips_per_s: m.per_s,
                    p50_us: m.latency.value_at_quantile(0.5) as f64 / 1e3,
                    p99_us: m.latency.value_at_quantile(0.99) as f64 / 1e3,
                    ratio_vs_mpsc_oneshot: 0.0,
                }
            })
            .collect();
        if let [_, peer] = &rows[..] {
            let base = peer.round_trips_per_s;
            rows.iter_mut()
                .for_each(|r| r.ratio_vs_mpsc_oneshot = r.round_trips_per_s / base);
        }
        results.extend(rows);
    }
    if a.json {
        let out = serde_json::json!({
            "bench": "request",
            "requests": a.requests,
            "rounds": a.rounds,
            "results": results,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{:<20} {:>10} {:>16} {:>9} {:>9} {:>10}",
        "system", "requesters", "round trips/s", "p50 µs", "p99 µs", "vs mpsc"
    );
    for r in &results {
        println!(
            "{:<20} {:>10} {:>16.0} {:>9.1} {:>9.1} {:>9.2}x",
            r.system,
            r.requesters,
            r.round_trips_per_s,
            r.p50_us,
            r.p99_us,
            r.ratio_vs_mpsc_oneshot
        );
    }
    Ok(())
}

/// One round of `sys` with `requesters` tasks sharing `requests` round trips.
async fn round(sys: &str, requesters: usize, requests: u64) -> Result<Round> {
    let left = Arc::new(AtomicU64::new(requests));
    // Made before the clock starts, at their full size: a histogram that
    // grows as it records would charge its reallocations (and the fresh
    // pages they touch) to the system whose latencies reach further.
    let mut histograms = (0..requesters)
        .map(|_| latency_histogram())
        .collect::<Result<Vec<_>>>()?;
    let start = Instant::now();
    let tasks: Vec<tokio::task::JoinHandle<Result<Histogram<u64>>>> = match sys {
        "busline-module" => {
            let bus = Bus::<Msg>::new();
            let actor = Context::detached("actor", bus.clone());
            let mut inbox = actor.subscribe("actor.>")?;
            tokio::spawn(async move {
                let mut answered = 0u64;
                while let Ok(env) = inbox.recv().await {
                    if let Msg::GetStatus = env.payload {
                        answered += 1;
                        let _ = actor.reply(&env, Msg::Status { answered }).await;
                    }
                }
            });
            (0..requesters)
                .map(|_| {
                    let (bus, left) = (bus.clone(), left.clone());
                    let h = histograms.pop().expect("one per requester");
                    tokio::spawn(requester(left, h, move || {
                        let bus = bus.clone();
                        async move {
                            let r = bus
                                .request("actor.status", Msg::GetStatus, Duration::from_secs(10))
                                .await?;
                            Ok(r.payload.clone())
                        }
                    }))
                })
                .collect()
        }
        _ => {
            let (tx, mut rx) = mpsc::channel::<(Msg, oneshot::Sender<Msg>)>(1024);
            tokio::spawn(async move {
                let mut answered = 0u64;
                while let Some((msg, reply)) = rx.recv().await {
                    if let Msg::GetStatus = msg {
                        answered += 1;
                        let _ = reply.send(Msg::Status { answered });
                    }
                }
            });
            (0..requesters)
                .map(|_| {
                    let (tx, left) = (tx.clone(), left.clone());
                    let h = histograms.pop().expect("one per requester");
                    tokio::spawn(requester(left, h, move || {
                        let tx = tx.clone();
                        async move {
                            let (reply, answer) = oneshot::channel();
                            tx.send((Msg::GetStatus, reply)).await?;
                            Ok(answer.await?)
                        }
                    }))
                })
                .collect()
        }
    };
    let mut latency = latency_histogram()?;
    for t in tasks {
        latency.add(t.await??)?;
    }
    let elapsed = start.elapsed();
    ensure!(
        latency.len() == requests,
        "{sys}: {} of {requests} answered",
        latency.len()
    );
    Ok(Round {
        per_s: requests as f64 / elapsed.as_secs_f64(),
        latency,
    })
}

/// A histogram of round-trip latencies in nanoseconds, from 1 ns to a
/// minute (past the requests' timeout) at three significant digits,
/// allocated whole and with its pages touched (`reset` writes every count).
fn latency_histogram() -> Result<Histogram<u64>> {
    let mut h = Histogram::new_with_bounds(1, 60_000_000_000, 3)?;
    h.reset();
    Ok(h)
}

/// Sends requests with `ask` until `left` runs out; returns the latencies
/// (ns) recorded into `h`.
async fn requester<F, Fut>(
    left: Arc<AtomicU64>,
    mut h: Histogram<u64>,
    ask: F,
) -> Result<Histogram<u64>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Msg>>,
{
    while left
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
    {
        let t = Instant::now();
        let answer = ask().await?;
        h.record(t.elapsed().as_nanos() as u64)?;
        ensure!(
            matches!(answer, Msg::Status { answered } if answered > 0),
            "not a status: {answer:?}"
        );
    }
    Ok(h)
}
