//! `busline bench routing`: publish cost with one matching subscriber among
//! N unrelated ones, and the resident memory each of them takes.

use std::time::Instant;

use anyhow::{bail, Result};
use busline::Bus;
use clap::Args;
use serde::Serialize;

use crate::bench_proc::vm_rss;

/// Options of `bench routing`.
#[derive(Debug, Args)]
pub struct RoutingArgs {
    /// Unrelated subscribers (the cost is also measured with 10, for the ratio).
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Publishes per round.
    #[arg(long, default_value_t = 200_000)]
    pub publishes: u64,
    /// Rounds; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct RoutingResult {
    subscribers: usize,
    ns_per_publish: f64,
    /// The process's resident memory (VmRSS) after subscribing the
    /// unrelated subscribers, less before, per subscriber (handles included).
    rss_bytes_per_subscription: f64,
}

/// Runs `bench routing`.
pub(crate) fn run(a: RoutingArgs) -> Result<()> {
    if a.publishes == 0 || a.rounds == 0 {
        bail!("--publishes and --rounds must be at least 1");
    }
    let mut counts = vec![10, a.subscribers];
    counts.dedup();
    let mut results = Vec::new();
    for &n in &counts {
        let bus: Bus<u64> = Bus::new();
        // Unrelated subscribers: literal and wildcard patterns on other topics.
        let rss = vm_rss();
        let mut keep = Vec::with_capacity(n);
        for i in 0..n {
            let p = match i % 3 {
                0 => format!("other.{i}.latency"),
                1 => format!("other.{i}.*"),
                _ => format!("svc{i}.>"),
            };
            keep.push(bus.subscriber(&p).lossy(1).subscribe()?);
        }
        let rss = vm_rss().saturating_sub(rss) as f64 / n.max(1) as f64;
        let mut target = bus
            .subscriber("metrics.web.latency")
            .name("target")
            .lossy(1024)
            .subscribe()?;
        let mut times = Vec::new();
        for _ in 0..a.rounds {
            let start = Instant::now();
            for i in 0..a.publishes {
                bus.try_publish_to("metrics.web.latency", i)
                    .expect("publish");
            }
            times.push(start.elapsed().as_nanos() as f64 / a.publishes as f64);
            while let Ok(Some(_)) | Err(_) = target.try_recv() {}
        }
        times.sort_by(f64::total_cmp);
        results.push(RoutingResult {
            subscribers: n,
            ns_per_publish: times[times.len() / 2],
            rss_bytes_per_subscription: rss,
        });
        // The cost measured must be of real deliveries.
        let delivered = bus.stats().subscriber("target").map(|s| s.delivered);
        if delivered != Some(a.publishes * a.rounds as u64) {
            bail!("routing bench: the target subscriber got {delivered:?} events, not every one");
        }
    }
    let last = results.last().expect("one count at least");
    let ratio = last.ns_per_publish / results[0].ns_per_publish;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "routing",
                "subscribers": a.subscribers,
                "ns_per_publish": last.ns_per_publish,
                "ratio_vs_10": ratio,
                "rss_bytes_per_subscription": last.rss_bytes_per_subscription,
                "results": results,
            })
        );
    } else {
        println!("routing: publish cost with 1 matching subscriber among N unrelated ones");
        for r in &results {
            println!(
                "{:>8} unrelated: {:>8.1} ns/publish, {:>8.0} resident bytes each",
                r.subscribers, r.ns_per_publish, r.rss_bytes_per_subscription
            );
        }
        println!("ratio {} vs 10: {ratio:.2}x", a.subscribers);
    }
    Ok(())
}
