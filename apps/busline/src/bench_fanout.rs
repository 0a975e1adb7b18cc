//! `busline bench fanout`: one publisher, N subscribers, M events; busline
//! beside the channels of [`bench_peers`] (the `--work format` case is
//! [`bench_work`]'s).
//!
//! busline has two rows: `busline-<policy>` publishes through a
//! [`Publisher`](busline::Publisher) (the topic's route kept, as a
//! channel's sender keeps its channel), `busline-<policy>-publish-to`
//! names the topic at every publish (`Bus::publish_to`).
//!
//! [`bench_peers`]: crate::bench_peers
//! [`bench_work`]: crate::bench_work

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};
use busline::{Bus, RecvError};
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::bench_peers;
use crate::bench_proc::process_cpu_time;
use crate::bench_round::{collect, Payload, Round};
use crate::bench_runtime::{cores, runtime};

/// Options of `bench fanout`.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// Subscribers.
    #[arg(long, default_value_t = 4)]
    pub subscribers: usize,
    /// Events published per round.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// busline's delivery policy.
    #[arg(long, value_enum, default_value_t = PolicyArg::Lossless)]
    pub policy: PolicyArg,
    /// Queue capacity, the same for every system.
    #[arg(long, default_value_t = 1024)]
    pub capacity: usize,
    /// Rounds; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Worker threads of the multi-thread runtime (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Per-event work at one subscriber: `format` runs the slow-subscriber
    /// case (two publishers; one subscriber formats each event, as a logger
    /// does), beside the same work in a plain loop.
    #[arg(long, value_enum, default_value_t = WorkArg::None)]
    pub work: WorkArg,
    /// Run only the system of this name, or if none has it, those whose
    /// name contains it (for profiling).
    #[arg(long, hide = true)]
    pub only: Option<String>,
}

impl FanoutArgs {
    /// Whether `--only` leaves system `sys` of `systems` out.
    pub(crate) fn skips(&self, sys: &str, systems: &[&str]) -> bool {
        self.only.as_deref().is_some_and(|o| {
            if systems.contains(&o) {
                sys != o
            } else {
                !sys.contains(o)
            }
        })
    }
}

/// busline's delivery policy in `bench fanout`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum PolicyArg {
    /// Bounded queue, publisher waits.
    Lossless,
    /// Bounded queue, oldest dropped and reported.
    Lossy,
}

/// Per-event work at a subscriber in `bench fanout`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum WorkArg {
    /// Subscribers only count.
    None,
    /// One subscriber formats each event to a `String`.
    Format,
}

impl FanoutArgs {
    /// Checks the options every case of `bench fanout` shares.
    pub(crate) fn check(&self) -> Result<()> {
        if self.subscribers == 0 || self.events == 0 || self.rounds == 0 || self.capacity == 0 {
            bail!("--subscribers, --events, --rounds and --capacity must be at least 1");
        }
        if self.threads == Some(0) {
            bail!("--threads must be at least 1");
        }
        Ok(())
    }
}

#[derive(Debug, Serialize)]
struct FanoutResult {
    system: &'static str,
    deliveries_per_s: f64,
    delivered: u64,
    lagged: u64,
    lost: u64,
    median_ms: f64,
    /// CPU time (all threads) per delivery in the median round: less
    /// sensitive than throughput to a shared machine's other load.
    cpu_ns_per_delivery: f64,
    ratio_vs_broadcast_best: f64,
    ratio_vs_mpsc: f64,
    /// Against the faster of the per-subscriber channels (tokio mpsc, flume).
    ratio_vs_per_subscriber_best: f64,
    ratio_vs_async_broadcast: f64,
    /// Against a flume channel per subscriber that carries an envelope
    /// like busline's (`flume-envelope-per-subscriber`): the same metadata
    /// made per event, so what is left is the bus against the channel.
    ratio_vs_flume_envelope: f64,
    /// CPU ns per delivery against tokio broadcast's at its best
    /// (`tokio-broadcast-yield64`): read it with `--threads 1`.
    cpu_ratio_vs_broadcast_best: f64,
}

/// Runs `bench fanout` without per-event work: busline beside its peers.
pub(crate) fn run(a: &FanoutArgs) -> Result<()> {
    let mut systems: Vec<&'static str> = match a.policy {
        PolicyArg::Lossless => vec!["busline-lossless", "busline-lossless-publish-to"],
        PolicyArg::Lossy => vec!["busline-lossy", "busline-lossy-publish-to"],
    };
    systems.extend(bench_peers::PEERS);
    let mut rounds: Vec<Vec<Round>> = vec![Vec::new(); systems.len()];
    for _ in 0..a.rounds {
        // Interleave the systems each round so drift on a shared machine hits all alike.
        for (i, sys) in systems.iter().enumerate() {
            if a.skips(sys, &systems) {
                // Not run (profiling another system), and not reported.
                continue;
            }
            let rt = runtime(a.threads)?;
            let cpu = process_cpu_time();
            let mut r = rt.block_on(run_fanout(
                sys,
                a.subscribers,
                a.events,
                a.capacity,
                a.policy,
            ));
            r.cpu = process_cpu_time().saturating_sub(cpu);
            rounds[i].push(r);
        }
    }
    let expected = a.events * a.subscribers as u64;
    let mut results: Vec<FanoutResult> = systems
        .iter()
        .zip(rounds)
        .filter(|(_, rs)| !rs.is_empty())
        .map(|(sys, mut rs)| {
            rs.sort_by_key(|r| r.elapsed);
            let m = rs[rs.len() / 2];
            FanoutResult {
                system: sys,
                deliveries_per_s: m.delivered as f64 / m.elapsed.as_secs_f64(),
                delivered: m.delivered,
                lagged: m.lagged,
                lost: expected.saturating_sub(m.delivered + m.lagged),
                median_ms: m.elapsed.as_secs_f64() * 1e3,
                cpu_ns_per_delivery: m.cpu.as_nanos() as f64 / m.delivered.max(1) as f64,
                ratio_vs_broadcast_best: 0.0,
                ratio_vs_mpsc: 0.0,
                ratio_vs_per_subscriber_best: 0.0,
                ratio_vs_async_broadcast: 0.0,
                ratio_vs_flume_envelope: 0.0,
                cpu_ratio_vs_broadcast_best: 0.0,
            }
        })
        .collect();
    let row = |name: &str| results.iter().find(|r| r.system == name);
    let rate = |name: &str| row(name).map_or(f64::NAN, |r| r.deliveries_per_s);
    let best_cpu = row("tokio-broadcast-yield64").map_or(f64::NAN, |r| r.cpu_ns_per_delivery);
    let best = rate("tokio-broadcast-yield64");
    let mpsc = rate("tokio-mpsc-per-subscriber");
    let per_subscriber = mpsc.max(rate("flume-per-subscriber"));
    let async_broadcast = rate("async-broadcast");
    let flume_envelope = rate("flume-envelope-per-subscriber");
    for r in &mut results {
        r.ratio_vs_broadcast_best = r.deliveries_per_s / best;
        r.ratio_vs_mpsc = r.deliveries_per_s / mpsc;
        r.ratio_vs_per_subscriber_best = r.deliveries_per_s / per_subscriber;
        r.ratio_vs_async_broadcast = r.deliveries_per_s / async_broadcast;
        r.ratio_vs_flume_envelope = r.deliveries_per_s / flume_envelope;
        r.cpu_ratio_vs_broadcast_best = r.cpu_ns_per_delivery / best_cpu;
    }
    print(a, &results);
    Ok(())
}

/// Prints the rows, as a table or (`--json`) one JSON object.
fn print(a: &FanoutArgs, results: &[FanoutResult]) {
    if a.json {
        let out = serde_json::json!({
            "bench": "fanout",
            "subscribers": a.subscribers,
            "events": a.events,
            "capacity": a.capacity,
            "rounds": a.rounds,
            "threads": a.threads.unwrap_or_else(cores),
            "policy": format!("{:?}", a.policy).to_lowercase(),
            "results": results,
        });
        println!("{out}");
    } else {
        println!(
            "fan-out: 1 publisher -> {} subscribers, {} events, capacity {}, median of {} rounds",
            a.subscribers, a.events, a.capacity, a.rounds
        );
        println!(
            "{:<28} {:>14} {:>12} {:>10} {:>6} {:>9} {:>9} {:>11}",
            "system",
            "deliveries/s",
            "delivered",
            "lagged",
            "lost",
            "vs best",
            "vs mpsc",
            "cpu ns/del"
        );
        for r in results {
            println!(
                "{:<28} {:>14.0} {:>12} {:>10} {:>6} {:>8.2}x {:>8.2}x {:>11.0}",
                r.system,
                r.deliveries_per_s,
                r.delivered,
                r.lagged,
                r.lost,
                r.ratio_vs_broadcast_best,
                r.ratio_vs_mpsc,
                r.cpu_ns_per_delivery
            );
        }
    }
}

async fn run_fanout(sys: &str, subs: usize, events: u64, cap: usize, policy: PolicyArg) -> Round {
    let payload: Payload = Arc::new([7; 8]);
    match sys {
        busline if busline.starts_with("busline-") => {
            let bus: Bus<Payload> = Bus::new();
            let mut handles = Vec::new();
            for i in 0..subs {
                let b = bus.subscriber("bench.fanout").name(format!("s{i}"));
                let mut sub = match policy {
                    PolicyArg::Lossless => b.lossless(cap),
                    PolicyArg::Lossy => b.lossy(cap),
                }
                .subscribe()
                .expect("subscribe");
                handles.push(tokio::spawn(async move {
                    let (mut got, mut lag) = (0u64, 0u64);
                    loop {
                        match sub.recv().await {
                            Ok(_) => got += 1,
                            Err(RecvError::Lagged(n)) => lag += n,
                            Err(_) => break,
                        }
                    }
                    (got, lag)
                }));
            }
            let start = Instant::now();
            let publisher = if sys.ends_with("-publish-to") {
                // The topic named at every publish.
                tokio::spawn(async move {
                    for _ in 0..events {
                        bus.publish_to("bench.fanout", payload.clone())
                            .await
                            .expect("publish");
                    }
                })
            } else {
                // A publisher handle: the topic's route looked up once.
                let mut to = bus.publisher("bench.fanout").expect("a valid topic");
                drop(bus);
                tokio::spawn(async move {
                    for _ in 0..events {
                        to.publish(payload.clone()).await.expect("publish");
                    }
                })
            };
            publisher.await.expect("publisher");
            collect(start, handles).await
        }
        peer => bench_peers::run(peer, subs, events, cap, payload).await,
    }
}
