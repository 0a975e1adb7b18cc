//! `busline bench log`: append throughput of the durable log (group commit
//! with concurrent publishers, and OS-buffered), replay throughput, and the
//! time to open a large log.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use busline_log::{Log, Options, Persist};
use clap::Args;
use serde_json::json;

/// Options of `bench log`.
#[derive(Debug, Args)]
pub struct BenchLogArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Events appended per case.
    #[arg(long, default_value_t = 500_000)]
    pub events: u64,
    /// Events per `append_batch` call of each publisher.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Directory for the logs (a temporary one if not given); each case
    /// uses and then removes a subdirectory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Size of the log whose open (recovery) time is measured, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub open_mib: u64,
}

struct Case {
    persist: Persist,
    event_bytes: usize,
    publishers: usize,
    batch: usize,
    events: u64,
    /// Batches each publisher keeps in flight (`submit_batch`); 1 = await
    /// each `append_batch`.
    window: usize,
}

/// Runs the benchmark and prints the results.
pub async fn run(args: BenchLogArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.batch >= 1 && args.events >= 1,
        "--batch and --events must be at least 1"
    );
    let tmp_root;
    let root = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp_root =
                std::env::temp_dir().join(format!("busline-bench-log-{}", std::process::id()));
            tmp_root.clone()
        }
    };
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;

    let cases = cases(&args);

    let mut results = Vec::new();
    let mut replay = None;
    for (i, case) in cases.iter().enumerate() {
        let dir = root.join(format!("case-{i}"));
        let _ = std::fs::remove_dir_all(&dir);
        let elapsed = append_case(&dir, case).await?;
        let secs = elapsed.as_secs_f64();
        let payload_bytes = case.events as f64 * case.event_bytes as f64;
        let mode = match case.persist {
            Persist::Fsync => "fsync",
            Persist::Buffered => "buffered",
        };
        results.push(json!({
            "mode": mode,
            "event_bytes": case.event_bytes,
            "publishers": case.publishers,
            "batch": case.batch,
            "in_flight": case.window,
            "events": case.events,
            "seconds": secs,
            "events_per_s": case.events as f64 / secs,
            "mb_per_s": payload_bytes / secs / 1e6,
        }));
        if case.persist == Persist::Buffered && case.event_bytes == 1024 && replay.is_none() {
            replay = Some(replay_case(&dir)?);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let open = open_case(&root.join("open"), args.open_mib).await?;
    let _ = std::fs::remove_dir_all(root.join("open"));
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }

    let report = json!({
        "bench": "log",
        "results": results,
        "replay": replay,
        "open": open,
    });
    print(&report, &results, args.json)?;
    Ok(())
}

/// The cases measured: fsync and buffered, small and large events, one
/// and eight publishers; one append per await; one pipelining publisher.
fn cases(args: &BenchLogArgs) -> Vec<Case> {
    let mut cases = Vec::new();
    for persist in [Persist::Fsync, Persist::Buffered] {
        for event_bytes in [128, 1024] {
            for publishers in [1, 8] {
                cases.push(Case {
                    persist,
                    event_bytes,
                    publishers,
                    batch: args.batch,
                    events: args.events,
                    window: 1,
                });
            }
        }
    }
    // One append per await: what a publisher that waits for each event gets.
    cases.push(Case {
        persist: Persist::Fsync,
        event_bytes: 128,
        publishers: 8,
        batch: 1,
        events: args.events.min(20_000),
        window: 1,
    });
    // One publisher that pipelines: 16 batches in flight.
    for event_bytes in [128, 1024] {
        cases.push(Case {
            persist: Persist::Fsync,
            event_bytes,
            publishers: 1,
            batch: args.batch,
            events: args.events,
            window: 16,
        });
    }

    cases
}

fn print(
    report: &serde_json::Value,
    results: &[serde_json::Value],
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!(
            "{:<9} {:>6} {:>5} {:>6} {:>6} {:>10} {:>14} {:>9}",
            "mode", "bytes", "pubs", "batch", "flight", "events", "events/s", "MB/s"
        );
        for r in results {
            println!(
                "{:<9} {:>6} {:>5} {:>6} {:>6} {:>10} {:>14.0} {:>9.1}",
                r["mode"].as_str().unwrap_or(""),
                r["event_bytes"].as_u64().unwrap_or(0),
                r["publishers"].as_u64().unwrap_or(0),
                r["batch"].as_u64().unwrap_or(0),
                r["in_flight"].as_u64().unwrap_or(0),
                r["events"].as_u64().unwrap_or(0),
                r["events_per_s"].as_f64().unwrap_or(0.0),
                r["mb_per_s"].as_f64().unwrap_or(0.0)
            );
        }
        println!("replay: {}", report["replay"]);
        println!("open:   {}", report["open"]);
    }
    Ok(())
}

async fn append_case(dir: &Path, case: &Case) -> anyhow::Result<Duration> {
    let log = Log::open(
        dir,
        Options {
            persist: case.persist,
            ..Options::default()
        },
    )?;
    let payload: &'static [u8] = Vec::leak(vec![b'x'; case.event_bytes]);
    let per_publisher = case.events / case.publishers as u64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..case.publishers {
        let log = log.clone();
        let batch = case.batch as u64;
        let window = case.window;
        let mine = if p == 0 {
            case.events - per_publisher * (case.publishers as u64 - 1)
        } else {
            per_publisher
        };
        tasks.push(tokio::spawn(async move {
            let mut left = mine;
            let mut in_flight = std::collections::VecDeque::new();
            while left > 0 {
                let n = left.min(batch);
                let ticket = log
                    .submit_batch(
                        busline_log::now_millis(),
                        std::iter::repeat_n(payload, n as usize),
                    )
                    .await?;
                in_flight.push_back(ticket);
                if in_flight.len() >= window {
                    in_flight.pop_front().unwrap().acknowledged().await?;
                }
                left -= n;
            }
            for t in in_flight {
                t.acknowledged().await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed();
    anyhow::ensure!(log.committed_end() == case.events, "lost events");
    Ok(elapsed)
}

fn replay_case(dir: &Path) -> anyhow::Result<serde_json::Value> {
    let log = Log::open(dir, Options::default())?;
    let start = Instant::now();
    let (mut events, mut bytes) = (0u64, 0u64);
    for rec in log.read_from(0)? {
        let rec = rec?;
        events += 1;
        bytes += rec.payload.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(json!({
        "events": events,
        "payload_bytes": bytes,
        "seconds": secs,
        "events_per_s": events as f64 / secs,
        "mb_per_s": bytes as f64 / secs / 1e6,
    }))
}

async fn open_case(dir: &Path, mib: u64) -> anyhow::Result<serde_json::Value> {
    let _ = std::fs::remove_dir_all(dir);
    let event = vec![b'o'; 1024];
    {
        let log = Log::open(
            dir,
            Options {
                persist: Persist::Buffered,
                ..Options::default()
            },
        )?;
        let events = mib * 1024;
        let mut done = 0;
        while done < events {
            let n = (events - done).min(4096);
            log.append_batch(std::iter::repeat_n(&event, n as usize))
                .await?;
            done += n;
        }
        log.sync().await?;
    }
    let start = Instant::now();
    let log = Log::open(dir, Options::default())?;
    let secs = start.elapsed().as_secs_f64();
    let bytes: u64 = log.segments().iter().map(|s| s.bytes).sum();
    Ok(json!({
        "bytes": bytes,
        "records": log.committed_end(),
        "segments": log.segments().len(),
        "seconds": secs,
        "mb_per_s": bytes as f64 / secs / 1e6,
        "note": "page cache warm: the log was just written",
    }))
}
