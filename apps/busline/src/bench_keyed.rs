//! `busline bench keyed`: a keyed queue group's throughput beside a plain
//! queue group and beside hand-made workers on tokio mpsc with hash routing,
//! the same events through each.
//!
//! One publisher publishes `--events` jobs over `--keys` keys (round robin);
//! `--members` workers take them. Each worker checks what it can: in the
//! keyed group and the mpsc workers every key's jobs arrive in order (a
//! worker keeps each key's last job number); in every system the jobs
//! handled add up to the jobs published. The systems take turns, round by
//! round; the median round is reported.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use busline::{Bus, Subscription};
use clap::Args;
use serde::Serialize;

/// Options of `bench keyed`.
#[derive(Debug, Args)]
pub struct KeyedArgs {
    /// Workers (group members, or mpsc workers).
    #[arg(long, default_value_t = 4)]
    pub members: usize,
    /// Jobs published per round.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Distinct keys the jobs carry.
    #[arg(long, default_value_t = 1024)]
    pub keys: u64,
    /// Queue capacity: the group's, and each mpsc worker's.
    #[arg(long, default_value_t = 1024)]
    pub capacity: usize,
    /// Rounds; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A job: its key, and its number among that key's jobs.
#[derive(Debug, Clone, Copy)]
struct Job {
    key: u64,
    n: u64,
}

const SYSTEMS: [&str; 3] = [
    "busline-keyed-group",
    "busline-queue-group",
    "mpsc-hash-workers",
];

#[derive(Debug, Serialize)]
struct KeyedResult {
    system: &'static str,
    events_per_s: f64,
    handled: u64,
    median_ms: f64,
    ratio_vs_queue_group: f64,
}

/// Runs `bench keyed`.
pub fn run(a: KeyedArgs) -> Result<()> {
    if a.members == 0 || a.events == 0 || a.keys == 0 || a.rounds == 0 || a.capacity == 0 {
        bail!("--members, --events, --keys, --rounds and --capacity must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); SYSTEMS.len()];
    for _ in 0..a.rounds {
        for (i, sys) in SYSTEMS.iter().enumerate() {
            let (elapsed, handled) = rt.block_on(round(sys, &a))?;
            ensure!(
                handled == a.events,
                "{sys}: {handled} jobs handled of {} published",
                a.events
            );
            times[i].push(elapsed);
        }
    }
    let results: Vec<KeyedResult> = SYSTEMS
        .iter()
        .zip(times)
        .map(|(sys, mut t)| {
            t.sort();
            let median = t[t.len() / 2];
            KeyedResult {
                system: sys,
                events_per_s: a.events as f64 / median.as_secs_f64(),
                handled: a.events,
                median_ms: median.as_secs_f64() * 1e3,
                ratio_vs_queue_group: 0.0,
            }
        })
        .collect();
    let results = with_ratios(results);
    print(&a, &results)
}

fn with_ratios(mut results: Vec<KeyedResult>) -> Vec<KeyedResult> {
    let group = results[1].events_per_s;
    for r in &mut results {
        r.ratio_vs_queue_group = r.events_per_s / group;
    }
    results
}

fn print(a: &KeyedArgs, results: &[KeyedResult]) -> Result<()> {
    if a.json {
        let out = serde_json::json!({
            "bench": "keyed",
            "members": a.members,
            "events": a.events,
            "keys": a.keys,
            "capacity": a.capacity,
            "rounds": a.rounds,
            "results": results,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{:<22} {:>14} {:>10} {:>16}",
        "system", "events/s", "ms", "vs queue group"
    );
    for r in results {
        println!(
            "{:<22} {:>14.0} {:>10.1} {:>15.2}x",
            r.system, r.events_per_s, r.median_ms, r.ratio_vs_queue_group
        );
    }
    Ok(())
}

/// One round of `sys`: the time from the first publish to the last job
/// handled, and the jobs handled.
async fn round(sys: &str, a: &KeyedArgs) -> Result<(Duration, u64)> {
    let start = Instant::now();
    let workers = match sys {
        "mpsc-hash-workers" => mpsc_workers(a).await,
        _ => bus_workers(a, sys == "busline-keyed-group").await?,
    };
    let mut handled = 0;
    for w in workers {
        handled += w.await??;
    }
    Ok((start.elapsed(), handled))
}

type Worker = tokio::task::JoinHandle<Result<u64>>;

/// Publishes the jobs to a queue group of `members`, keyed or not; returns
/// the members' tasks.
async fn bus_workers(a: &KeyedArgs, keyed: bool) -> Result<Vec<Worker>> {
    let bus = Bus::<Job>::new();
    let mut workers = Vec::new();
    for _ in 0..a.members {
        let b = bus.subscriber("jobs").queue("workers").capacity(a.capacity);
        let sub = if keyed { b.key(|e| e.payload.key) } else { b }.subscribe()?;
        workers.push(tokio::spawn(bus_worker(sub, keyed)));
    }
    for i in 0..a.events {
        let job = Job {
            key: i % a.keys,
            n: i / a.keys,
        };
        bus.publish_to("jobs", job)
            .await
            .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
    }
    bus.close();
    Ok(workers)
}

async fn bus_worker(mut sub: Subscription<Job>, keyed: bool) -> Result<u64> {
    let mut order = InOrder::default();
    let mut handled = 0;
    while let Ok(e) = sub.recv().await {
        if keyed {
            order.check(e.payload)?;
        }
        handled += 1;
    }
    Ok(handled)
}

/// Publishes the jobs to `members` workers, each on its own bounded mpsc,
/// routed by a hash of the key; returns the workers' tasks.
async fn mpsc_workers(a: &KeyedArgs) -> Vec<Worker> {
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..a.members {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Job>(a.capacity);
        senders.push(tx);
        workers.push(tokio::spawn(async move {
            let mut order = InOrder::default();
            let mut handled = 0;
            while let Some(job) = rx.recv().await {
                order.check(job)?;
                handled += 1;
            }
            Ok(handled)
        }));
    }
    let members = senders.len() as u64;
    for i in 0..a.events {
        let key = i % a.keys;
        let to = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) % members;
        let job = Job { key, n: i / a.keys };
        if senders[to as usize].send(job).await.is_err() {
            break;
        }
    }
    workers
}

/// A worker's check that each key's jobs come in order with none missing.
#[derive(Default)]
struct InOrder {
    next: HashMap<u64, u64>,
}

impl InOrder {
    fn check(&mut self, job: Job) -> Result<()> {
        let next = self.next.entry(job.key).or_insert(0);
        ensure!(
            job.n == *next,
            "key {}: job {} arrived where {} was due",
            job.key,
            job.n,
            next
        );
        *next += 1;
        Ok(())
    }
}
