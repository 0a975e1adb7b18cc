//! `busline bench ingest`: what the monitor's ingest paths take per second,
//! beside the bare limit of the same input on this machine.
//!
//! Each protocol gives rows of the same shape ([`Row`]): the bare system (the
//! least work that still reads every unit) and busline's path through the
//! real listener, the bus and a subscriber that counts what arrives as the
//! dashboard would. Every unit sent must be counted, rejected or reported
//! dropped: `lost` is what is none of those, and any loss makes the command
//! fail. A protocol is one function returning its rows (`statsd_rows`,
//! [`otlp::otlp_rows`]); a new protocol adds its own beside it.
//!
//! ## StatsD
//!
//! A sender thread sends datagrams of `--per-datagram` lines (one of them
//! malformed, `--malformed 1`) over loopback UDP as fast as it can, to:
//!
//! - `bare-udp`: a thread reading the socket (the same settings as the
//!   listener's: [`socket::bind`], 8 MiB receive buffer asked for) and
//!   splitting each datagram into lines: the limit on this machine;
//! - `busline-monitor`: the monitor's [`Listener`] on a bus, publishing each
//!   burst's samples (folded into runs per series) lossless to a subscriber
//!   that counts them.
//!
//! When a receiver falls behind, the kernel drops datagrams; those are read
//! from the socket's drop count and reported as `kernel_dropped` (in lines).
//! `per_s` is the lines a receiver handled (counted + rejected) per second,
//! from the first send to the last line handled. The median round by time is
//! reported.
//!
//! ## OTLP
//!
//! See [`otlp`]: protobuf bodies decoded bare, and through the monitor's
//! OTLP receiver, converter and bus.

mod otlp;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use busline::{Bus, Context, Module, RecvError};
use clap::Args;
use serde::Serialize;

use crate::monitor::ingest_status::IngestStatus;
use crate::monitor::metric::Metric;
use crate::monitor::statsd::socket::{self, KernelDrops};
use crate::monitor::statsd::Listener;

/// Options of `bench ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// StatsD lines sent per round.
    #[arg(long, default_value_t = 500_000)]
    pub lines: u64,
    /// Lines per datagram.
    #[arg(long, default_value_t = 25)]
    pub per_datagram: usize,
    /// Malformed lines in each datagram (counted as rejected).
    #[arg(long, default_value_t = 1)]
    pub malformed: usize,
    /// OTLP bodies (export requests) per round.
    #[arg(long, default_value_t = 500)]
    pub bodies: usize,
    /// OTLP data points per body (about: whole groups of metrics).
    #[arg(long, default_value_t = 100)]
    pub points: usize,
    /// Rounds; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One system's result for one protocol.
#[derive(Debug, Serialize)]
pub struct Row {
    /// `bare-udp`, `busline-monitor`, …
    pub system: &'static str,
    /// `statsd`, …
    pub protocol: &'static str,
    /// Units (StatsD lines, OTLP data points) handled per second.
    pub per_s: f64,
    /// Units sent.
    pub sent: u64,
    /// Units that arrived at the counting subscriber (OTLP: plus the
    /// cumulative baselines the converter took without a sample).
    pub counted: u64,
    /// Units refused as malformed.
    pub rejected: u64,
    /// Units the kernel dropped (datagrams × lines per datagram).
    pub kernel_dropped: u64,
    /// sent − counted − rejected − kernel_dropped: must be 0.
    pub lost: i64,
    /// The median round's time.
    pub median_ms: f64,
    /// `per_s` over the bare system's of the same protocol.
    pub ratio_vs_bare: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Round {
    elapsed: Duration,
    sent: u64,
    counted: u64,
    rejected: u64,
    dropped: u64,
}

/// Runs `bench ingest`.
pub fn run(a: IngestArgs) -> Result<()> {
    if a.lines == 0 || a.rounds == 0 || a.per_datagram == 0 || a.bodies == 0 || a.points == 0 {
        bail!("--lines, --rounds, --per-datagram, --bodies and --points must be at least 1");
    }
    if a.malformed >= a.per_datagram {
        bail!("--malformed must be less than --per-datagram");
    }
    let mut results = statsd_rows(&a)?;
    results.extend(otlp::otlp_rows(&a)?);
    if a.json {
        let out = serde_json::json!({
            "bench": "ingest",
            "lines": a.lines,
            "per_datagram": a.per_datagram,
            "malformed_per_datagram": a.malformed,
            "otlp_bodies": a.bodies,
            "otlp_points_per_body": a.points,
            "rounds": a.rounds,
            "results": results,
        });
        println!("{out}");
    } else {
        println!(
            "ingest: {} StatsD lines per round, {} per datagram ({} malformed); \
             {} OTLP bodies of ~{} points; median of {} rounds",
            a.lines, a.per_datagram, a.malformed, a.bodies, a.points, a.rounds
        );
        println!(
            "{:<18} {:<8} {:>12} {:>10} {:>10} {:>9} {:>10} {:>5} {:>8}",
            "system",
            "protocol",
            "per s",
            "sent",
            "counted",
            "rejected",
            "k-dropped",
            "lost",
            "vs bare"
        );
        for r in &results {
            println!(
                "{:<18} {:<8} {:>12.0} {:>10} {:>10} {:>9} {:>10} {:>5} {:>7.2}x",
                r.system,
                r.protocol,
                r.per_s,
                r.sent,
                r.counted,
                r.rejected,
                r.kernel_dropped,
                r.lost,
                r.ratio_vs_bare
            );
        }
    }
    if let Some(r) = results.iter().find(|r| r.lost != 0) {
        bail!(
            "{} {}: {} units lost (sent {}, counted {}, rejected {}, dropped by the kernel {})",
            r.system,
            r.protocol,
            r.lost,
            r.sent,
            r.counted,
            r.rejected,
            r.kernel_dropped
        );
    }
    Ok(())
}

/// The rows of one protocol from its rounds, the bare system first.
fn rows(protocol: &'static str, systems: &[&'static str], rounds: Vec<Vec<Round>>) -> Vec<Row> {
    let mut rows: Vec<Row> = systems
        .iter()
        .zip(rounds)
        .map(|(system, mut rs)| {
            rs.sort_by_key(|r| r.elapsed);
            let m = rs[rs.len() / 2];
            let handled = m.counted + m.rejected;
            Row {
                system,
                protocol,
                per_s: handled as f64 / m.elapsed.as_secs_f64().max(1e-9),
                sent: m.sent,
                counted: m.counted,
                rejected: m.rejected,
                kernel_dropped: m.dropped,
                lost: m.sent as i64 - (m.counted + m.rejected + m.dropped) as i64,
                median_ms: m.elapsed.as_secs_f64() * 1e3,
                ratio_vs_bare: 0.0,
            }
        })
        .collect();
    let bare = rows[0].per_s;
    for r in &mut rows {
        r.ratio_vs_bare = r.per_s / bare;
    }
    rows
}

fn statsd_rows(a: &IngestArgs) -> Result<Vec<Row>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let datagrams = Arc::new(workload(a.per_datagram, a.malformed));
    let count = a.lines.div_ceil(a.per_datagram as u64);
    let systems = ["bare-udp", "busline-monitor"];
    let mut rounds = vec![Vec::new(); systems.len()];
    for _ in 0..a.rounds {
        // Interleaved, so drift on a shared machine hits both alike.
        rounds[0].push(bare_udp(&datagrams, count, a.per_datagram)?);
        rounds[1].push(rt.block_on(monitor(&datagrams, count, a.per_datagram))?);
    }
    Ok(rows("statsd", &systems, rounds))
}

/// 64 different datagrams of `per` lines each, `bad` of them malformed:
/// counters (some sampled), timers, histograms, gauges and deltas, sets,
/// with tags, from two sources.
fn workload(per: usize, bad: usize) -> Vec<Vec<u8>> {
    (0..64)
        .map(|d| {
            let mut text = String::new();
            for j in 0..per {
                let v = (d * per + j) % 97;
                let line = if j < bad {
                    format!("bench.bad:{v}x|c")
                } else {
                    match (d + j) % 8 {
                        0 => "bench.requests:1|c|#route:/api,service:shop".to_owned(),
                        1 => format!("bench.latency:{v}.5|ms|#route:/api,service:shop"),
                        2 => "bench.sampled:1|c|@0.5|#service:shop".to_owned(),
                        3 => "bench.queue:+1|g|#service:shop".to_owned(),
                        4 => format!("bench.pool:{v}|g|#service:shop"),
                        5 => format!("bench.size:{v}|h|#service:shop"),
                        6 => format!("bench.users:u{v}|s|#service:shop"),
                        _ => "bench.cache.hits:1|c".to_owned(),
                    }
                };
                if j > 0 {
                    text.push('\n');
                }
                text.push_str(&line);
            }
            text.into_bytes()
        })
        .collect()
}

/// Sends `count` datagrams to `to` from a thread; the lines sent, once done.
fn sender(
    datagrams: Arc<Vec<Vec<u8>>>,
    count: u64,
    per: usize,
    to: SocketAddr,
) -> std::thread::JoinHandle<std::io::Result<u64>> {
    std::thread::spawn(move || {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.connect(to)?;
        let mut sent = 0u64;
        for i in 0..count {
            // A datagram the kernel would not take is not sent.
            if s.send(&datagrams[i as usize % datagrams.len()]).is_ok() {
                sent += per as u64;
            }
        }
        Ok(sent)
    })
}

/// Waits until `accounted()` reaches `sent`, or stops moving for two seconds.
fn settle(sent: u64, accounted: impl Fn() -> u64) {
    let (mut last, mut since) = (u64::MAX, Instant::now());
    loop {
        let now = accounted();
        if now >= sent || since.elapsed() > Duration::from_secs(2) {
            return;
        }
        if now != last {
            (last, since) = (now, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The time from `start` to the instant in `last` (nanoseconds after it).
fn since(last: &AtomicU64) -> Duration {
    Duration::from_nanos(last.load(Ordering::Relaxed))
}

fn bare_udp(datagrams: &Arc<Vec<Vec<u8>>>, count: u64, per: usize) -> Result<Round> {
    let socket = socket::bind("127.0.0.1:0".parse()?)?;
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let drops = KernelDrops::of(&socket);
    let to = socket.local_addr()?;
    let lines = Arc::new(AtomicU64::new(0));
    let last = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let receiver = {
        let (lines, last, stop) = (lines.clone(), last.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                let Ok(n) = socket.recv(&mut buf) else {
                    continue;
                };
                let got = buf[..n]
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count();
                lines.fetch_add(got as u64, Ordering::Relaxed);
                last.store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
        })
    };
    let sent = sender(datagrams.clone(), count, per, to)
        .join()
        .map_err(|_| anyhow::anyhow!("the sender panicked"))??;
    let dropped = || drops.as_ref().and_then(KernelDrops::read).unwrap_or(0) * per as u64;
    settle(sent, || lines.load(Ordering::Relaxed) + dropped());
    // Read while the socket is open: a closed one has no line in /proc.
    let dropped = dropped();
    stop.store(true, Ordering::Relaxed);
    let _ = receiver.join();
    Ok(Round {
        elapsed: since(&last),
        sent,
        counted: lines.load(Ordering::Relaxed),
        rejected: 0,
        dropped,
    })
}

async fn monitor(datagrams: &Arc<Vec<Vec<u8>>>, count: u64, per: usize) -> Result<Round> {
    let bus: Bus<Metric> = Bus::new();
    let status = Arc::new(IngestStatus::default());
    let Some(mut listener) = Listener::bind("127.0.0.1:0".parse()?, true, status.clone())? else {
        bail!("the listener did not bind");
    };
    let to = listener.addr();
    let counter = counting_subscriber(&bus, Instant::now())?;
    let counted = counter.counted.clone();
    let ctx = Context::detached("statsd", bus.clone());
    let stop = ctx.shutdown_token();
    let probe = listener.clone();
    let running = tokio::spawn(async move { listener.run(ctx).await.map_err(|e| e.to_string()) });
    let sent = tokio::task::spawn_blocking({
        let datagrams = datagrams.clone();
        move || sender(datagrams, count, per, to).join()
    })
    .await?
    .map_err(|_| anyhow::anyhow!("the sender panicked"))??;
    let dropped = move || probe.kernel_drops().unwrap_or(0) * per as u64;
    let accounted = {
        let (counted, status, dropped) = (counted.clone(), status.clone(), dropped.clone());
        move || counted.load(Ordering::Relaxed) + status.statsd.snapshot().malformed + dropped()
    };
    tokio::task::spawn_blocking(move || settle(sent, accounted)).await?;
    let dropped = dropped();
    stop.cancel();
    running
        .await?
        .map_err(|e| anyhow::anyhow!("the listener failed: {e}"))?;
    bus.close();
    let _ = counter.task.await;
    let rejected = status.statsd.snapshot().malformed;
    Ok(Round {
        elapsed: since(&counter.last),
        sent,
        counted: counted.load(Ordering::Relaxed),
        rejected,
        dropped,
    })
}

/// A lossless subscriber to every metric, counting samples as the dashboard
/// would take them (so every sample is counted or waited for).
struct Counter {
    /// Samples counted.
    counted: Arc<AtomicU64>,
    /// When the last one was, in nanoseconds after `start`.
    last: Arc<AtomicU64>,
    /// Ends when the bus closes.
    task: tokio::task::JoinHandle<()>,
}

/// Subscribes a [`Counter`] on `bus` (within a runtime).
fn counting_subscriber(bus: &Bus<Metric>, start: Instant) -> Result<Counter> {
    let counted = Arc::new(AtomicU64::new(0));
    let last = Arc::new(AtomicU64::new(0));
    let mut sub = bus
        .subscriber("metrics.>")
        .name("counter")
        .lossless(crate::monitor::logger::LOGGER_QUEUE)
        .subscribe()?;
    let task = {
        let (counted, last) = (counted.clone(), last.clone());
        tokio::spawn(async move {
            loop {
                match sub.recv().await {
                    Ok(env) => {
                        counted.fetch_add(env.payload.sample_count() as u64, Ordering::Relaxed);
                        last.store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
        })
    };
    Ok(Counter {
        counted,
        last,
        task,
    })
}
