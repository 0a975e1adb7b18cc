//! `busline bench fanout --work format`: a slow lossless subscriber sets the
//! pace.
//!
//! Two publishers publish lossless to `--subscribers` subscribers; one of
//! them (the logger) formats every event to a `String`, as the monitor's
//! logger does, the others only count. Lossless publishers wait
//! for the logger, so the most any system can do is what the logger could
//! do alone: the same events built and formatted in a plain loop on one
//! thread (`plain-loop-limit`), the row every other is compared with.
//! busline's publishers each hold a [`Publisher`](busline::Publisher) for
//! the topic, as the peers' hold their senders. Beside busline: a bounded
//! tokio mpsc per subscriber and `async-broadcast`, both lossless as well.
//!
//! Each row also counts the context switches of every thread of the
//! process during its median round (`/proc/self/task/*/status`) and the
//! process's CPU time per event; the bytes the logger formatted must be the
//! same in every row (the same work was done).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use busline::{Bus, RecvError};
use serde::Serialize;

use crate::bench_fanout::{FanoutArgs, PolicyArg};
use crate::bench_proc::{ctxt_switches, process_cpu_time};
use crate::bench_runtime::{cores, runtime};

/// The event: a served HTTP request, like the seed's `Metric::Request`.
#[derive(Debug, Clone)]
struct Request {
    source: &'static str,
    path: &'static str,
    latency_ms: f64,
    status: u16,
    bytes: u64,
}

const PUBLISHERS: u64 = 2;
const SOURCES: [&str; 2] = ["web-sim", "api-sim"];
const PATHS: [&str; 4] = ["/api/data", "/api/users/42", "/health", "/static/app.js"];
const STATUS: [u16; 4] = [200, 200, 404, 500];
const TOPIC: &str = "metrics.web.request";

/// The `i`th event of publisher `p`.
fn request(p: u64, i: u64) -> Request {
    Request {
        source: SOURCES[p as usize % 2],
        path: PATHS[(i % 4) as usize],
        latency_ms: (i % 997) as f64 * 0.37 + 1.5,
        status: STATUS[(i % 4) as usize],
        bytes: i * 37 % 65_536,
    }
}

/// The logger's line, as the monitor's logger writes one to stdout.
impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Request {
            source,
            path,
            latency_ms,
            status,
            bytes,
        } = self;
        write!(
            f,
            "[logger] Request {{ source: {source:?}, path: {path:?}, latency_ms: {latency_ms}, status: {status}, bytes: {bytes} }}"
        )
    }
}

/// The logger's work on one event: the bytes of its line.
fn format_event(r: &Request) -> u64 {
    black_box(r.to_string()).len() as u64
}

/// The events publisher `p` publishes of `events`.
fn share(p: u64, events: u64) -> u64 {
    events / PUBLISHERS + u64::from(p < events % PUBLISHERS)
}

/// The systems, by the name their rows carry; the limit first.
const SYSTEMS: [&str; 4] = [
    "plain-loop-limit",
    "busline-lossless",
    "tokio-mpsc-per-subscriber",
    "async-broadcast",
];

#[derive(Debug, Clone, Copy, Default)]
struct Round {
    elapsed: Duration,
    cpu: Duration,
    delivered: u64,
    /// Bytes the logger formatted.
    formatted: u64,
    voluntary: u64,
    nonvoluntary: u64,
}

#[derive(Debug, Serialize)]
struct WorkResult {
    system: &'static str,
    events_per_s: f64,
    deliveries_per_s: f64,
    delivered: u64,
    lost: u64,
    formatted_bytes: u64,
    median_ms: f64,
    /// CPU time of the whole process (all threads) per event published.
    cpu_ns_per_event: f64,
    cpu_ns_per_delivery: f64,
    /// Context switches of all the process's threads in the median round.
    voluntary_ctxt_switches: u64,
    nonvoluntary_ctxt_switches: u64,
    /// Events per second against the plain loop's.
    ratio_vs_limit: f64,
}

/// Runs `bench fanout --work format`.
pub(crate) fn run(a: &FanoutArgs) -> Result<()> {
    let subs = a.subscribers;
    let mut rounds: Vec<Vec<Round>> = vec![Vec::new(); SYSTEMS.len()];
    for _ in 0..a.rounds {
        // The systems take turns, round by round.
        for (i, sys) in SYSTEMS.iter().enumerate() {
            if i > 0 && a.skips(sys, &SYSTEMS) {
                // Not run (profiling another system), and not reported.
                continue;
            }
            let rt = runtime(a.threads)?;
            let (cpu, switches) = (process_cpu_time(), ctxt_switches());
            let mut r = if *sys == "plain-loop-limit" {
                limit(a.events)
            } else {
                rt.block_on(fanout(sys, subs, a.events, a.capacity))
            };
            let after = ctxt_switches();
            r.cpu = process_cpu_time().saturating_sub(cpu);
            r.voluntary = after.0.saturating_sub(switches.0);
            r.nonvoluntary = after.1.saturating_sub(switches.1);
            rounds[i].push(r);
        }
    }
    let mut results: Vec<WorkResult> = SYSTEMS
        .iter()
        .zip(rounds)
        .filter(|(_, rs)| !rs.is_empty())
        .map(|(sys, mut rs)| {
            rs.sort_by_key(|r| r.elapsed);
            let m = rs[rs.len() / 2];
            let expected = if *sys == "plain-loop-limit" {
                a.events
            } else {
                a.events * subs as u64
            };
            let secs = m.elapsed.as_secs_f64();
            WorkResult {
                system: sys,
                events_per_s: a.events as f64 / secs,
                deliveries_per_s: m.delivered as f64 / secs,
                delivered: m.delivered,
                lost: expected.saturating_sub(m.delivered),
                formatted_bytes: m.formatted,
                median_ms: secs * 1e3,
                cpu_ns_per_event: m.cpu.as_nanos() as f64 / a.events as f64,
                cpu_ns_per_delivery: m.cpu.as_nanos() as f64 / m.delivered.max(1) as f64,
                voluntary_ctxt_switches: m.voluntary,
                nonvoluntary_ctxt_switches: m.nonvoluntary,
                ratio_vs_limit: 0.0,
            }
        })
        .collect();
    let limit = results[0].events_per_s;
    for r in &mut results {
        r.ratio_vs_limit = r.events_per_s / limit;
    }
    let want = results[0].formatted_bytes;
    for r in &results {
        ensure!(
            r.formatted_bytes == want,
            "{}: the logger formatted {} bytes, the plain loop {want}: not the same work",
            r.system,
            r.formatted_bytes
        );
    }
    if a.json {
        let out = serde_json::json!({
            "bench": "fanout",
            "work": "format",
            "publishers": PUBLISHERS,
            "subscribers": subs,
            "events": a.events,
            "capacity": a.capacity,
            "rounds": a.rounds,
            "threads": a.threads.unwrap_or_else(cores),
            "policy": "lossless",
            "results": results,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "slow subscriber: {PUBLISHERS} publishers -> {subs} subscribers (one formats each event), {} events, capacity {}, median of {} rounds",
        a.events, a.capacity, a.rounds
    );
    println!(
        "{:<26} {:>12} {:>14} {:>6} {:>9} {:>11} {:>10} {:>10}",
        "system", "events/s", "deliveries/s", "lost", "vs limit", "cpu ns/ev", "vol cs", "invol cs"
    );
    for r in &results {
        println!(
            "{:<26} {:>12.0} {:>14.0} {:>6} {:>8.2}x {:>11.0} {:>10} {:>10}",
            r.system,
            r.events_per_s,
            r.deliveries_per_s,
            r.lost,
            r.ratio_vs_limit,
            r.cpu_ns_per_event,
            r.voluntary_ctxt_switches,
            r.nonvoluntary_ctxt_switches
        );
    }
    Ok(())
}

/// Checks the options of the case.
pub(crate) fn check(a: &FanoutArgs) -> Result<()> {
    if a.policy != PolicyArg::Lossless {
        bail!("--work format measures lossless publishers: leave --policy at lossless");
    }
    Ok(())
}

/// The limit: the logger's work alone, the events built and formatted in a
/// plain loop on this thread.
fn limit(events: u64) -> Round {
    let start = Instant::now();
    let mut formatted = 0;
    for p in 0..PUBLISHERS {
        for i in 0..share(p, events) {
            formatted += format_event(&black_box(request(p, i)));
        }
    }
    Round {
        elapsed: start.elapsed(),
        delivered: events,
        formatted,
        ..Round::default()
    }
}

/// A subscriber's loop ends with (events received, bytes formatted).
type Counts = tokio::task::JoinHandle<(u64, u64)>;

/// Subscriber 0 is the logger: it formats; the others count.
fn work(logger: bool, r: &Request) -> u64 {
    if logger {
        format_event(r)
    } else {
        0
    }
}

async fn fanout(sys: &str, subs: usize, events: u64, cap: usize) -> Round {
    let (start, handles) = match sys {
        "busline-lossless" => busline(subs, events, cap),
        "tokio-mpsc-per-subscriber" => mpsc(subs, events, cap),
        "async-broadcast" => async_broadcast(subs, events, cap),
        other => unreachable!("unknown system {other}"),
    };
    let mut r = Round::default();
    for h in handles {
        let (got, formatted) = h.await.expect("subscriber");
        r.delivered += got;
        r.formatted += formatted;
    }
    r.elapsed = start.elapsed();
    r
}

/// Spawns the two publishers, each running `publish(p, events of its own)`.
fn publishers<F, Fut>(events: u64, publish: F) -> Instant
where
    F: Fn(u64, u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    for p in 0..PUBLISHERS {
        tokio::spawn(publish(p, share(p, events)));
    }
    start
}

fn busline(subs: usize, events: u64, cap: usize) -> (Instant, Vec<Counts>) {
    let bus: Bus<Request> = Bus::new();
    let handles = (0..subs)
        .map(|s| {
            let name = if s == 0 {
                "logger".into()
            } else {
                format!("s{s}")
            };
            let mut sub = bus
                .subscriber("metrics.>")
                .name(name)
                .lossless(cap)
                .subscribe()
                .expect("subscribe");
            tokio::spawn(async move {
                let (mut got, mut formatted) = (0, 0);
                loop {
                    match sub.recv().await {
                        Ok(env) => {
                            got += 1;
                            formatted += work(s == 0, &env.payload);
                        }
                        Err(RecvError::Lagged(n)) => panic!("a lossless subscriber lagged {n}"),
                        Err(_) => break,
                    }
                }
                (got, formatted)
            })
        })
        .collect();
    // The subscribers end when the last publisher's handle is gone.
    let to = bus.publisher(TOPIC).expect("a valid topic");
    drop(bus);
    let start = publishers(events, |p, n| {
        let mut to = to.clone();
        async move {
            for i in 0..n {
                to.publish(request(p, i)).await.expect("publish");
            }
        }
    });
    (start, handles)
}

fn mpsc(subs: usize, events: u64, cap: usize) -> (Instant, Vec<Counts>) {
    let mut senders = Vec::new();
    let mut handles = Vec::new();
    for s in 0..subs {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<Request>>(cap);
        senders.push(tx);
        handles.push(tokio::spawn(async move {
            let (mut got, mut formatted) = (0, 0);
            while let Some(r) = rx.recv().await {
                got += 1;
                formatted += work(s == 0, &r);
            }
            (got, formatted)
        }));
    }
    let start = publishers(events, |p, n| {
        let senders = senders.clone();
        async move {
            for i in 0..n {
                let r = Arc::new(request(p, i));
                for tx in &senders {
                    tx.send(r.clone()).await.expect("a subscriber went away");
                }
            }
        }
    });
    (start, handles)
}

fn async_broadcast(subs: usize, events: u64, cap: usize) -> (Instant, Vec<Counts>) {
    let (tx, rx) = async_broadcast::broadcast::<Arc<Request>>(cap);
    let handles = (0..subs)
        .map(|s| {
            let mut rx = rx.clone();
            tokio::spawn(async move {
                let (mut got, mut formatted) = (0, 0);
                while let Ok(r) = rx.recv().await {
                    got += 1;
                    formatted += work(s == 0, &r);
                }
                (got, formatted)
            })
        })
        .collect();
    // The spare receiver must not hold the channel full.
    drop(rx);
    let start = publishers(events, |p, n| {
        let tx = tx.clone();
        async move {
            for i in 0..n {
                tx.broadcast(Arc::new(request(p, i)))
                    .await
                    .expect("broadcast");
            }
        }
    });
    (start, handles)
}
