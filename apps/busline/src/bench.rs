//! `busline bench`: busline next to its peers, same workload, same process.

use anyhow::Result;
use clap::Subcommand;

use crate::bench_fanout::{FanoutArgs, WorkArg};
use crate::bench_runtime::runtime;

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Fan-out: one publisher, N subscribers, M events; busline beside
    /// tokio::sync::broadcast and one bounded tokio::sync::mpsc per subscriber.
    Fanout(FanoutArgs),
    /// Routing: publish cost with 1 matching subscriber among N unrelated ones.
    Routing(crate::bench_routing::RoutingArgs),
    /// NATS: the transport beside raw async-nats, core and JetStream.
    Nats(crate::bench_nats::NatsArgs),
    /// The durable log: append throughput (fsync per batch and OS-buffered),
    /// replay throughput, time to open a large log.
    Log(crate::bench_log::BenchLogArgs),
    /// Event sourcing: aggregate load with/without snapshots, projection catch-up.
    Es(crate::bench_es::EsArgs),
    /// Request/reply: round trips to an actor module beside a hand-written
    /// mpsc + oneshot actor.
    Request(crate::bench_request::RequestArgs),
    /// Keyed queue groups: a keyed group beside a plain queue group and
    /// beside mpsc workers with hash routing.
    Keyed(crate::bench_keyed::KeyedArgs),
    /// Ingest: StatsD lines/s through the monitor's listener and bus, beside
    /// a bare UDP receive-and-split loop.
    Ingest(crate::bench_ingest::IngestArgs),
}

/// Runs a benchmark command.
pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Fanout(a) => fanout(&a),
        BenchCommand::Routing(a) => crate::bench_routing::run(a),
        BenchCommand::Nats(a) => runtime(None)?.block_on(crate::bench_nats::run(a)),
        BenchCommand::Log(a) => runtime(None)?.block_on(crate::bench_log::run(a)),
        BenchCommand::Es(a) => tokio::runtime::Runtime::new()?.block_on(crate::bench_es::run(a)),
        BenchCommand::Ingest(a) => crate::bench_ingest::run(a),
        BenchCommand::Keyed(a) => crate::bench_keyed::run(a),
        BenchCommand::Request(a) => crate::bench_request::run(a),
    }
}

/// `bench fanout`: the shared checks, then the case `--work` picks.
fn fanout(a: &FanoutArgs) -> Result<()> {
    a.check()?;
    match a.work {
        WorkArg::None => crate::bench_fanout::run(a),
        WorkArg::Format => {
            crate::bench_work::check(a)?;
            crate::bench_work::run(a)
        }
    }
}
