//! The `busline` command.

mod allocator;
mod bench;
mod bench_es;
mod bench_fanout;
mod bench_ingest;
mod bench_keyed;
mod bench_log;
mod bench_nats;
mod bench_peers;
mod bench_proc;
mod bench_request;
mod bench_round;
mod bench_routing;
mod bench_runtime;
mod bench_work;
mod log_cmd;
mod monitor;

/// mimalloc (see `allocator`).
#[global_allocator]
static GLOBAL: allocator::Allocator = allocator::Allocator;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// busline: an event bus for tokio, and the live metrics monitor built on it.
#[derive(Debug, Parser)]
#[command(
    name = "busline",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no command, busline runs the monitor with these options.
    #[command(flatten)]
    monitor: monitor::MonitorArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The live metrics monitor (the default): simulated services, a terminal
    /// dashboard, a logger, an alerter and a web dashboard on one bus.
    Monitor(Box<monitor::MonitorArgs>),
    /// POST metrics (JSON, from arguments or stdin) to a running monitor.
    Publish(monitor::ingest::PublishArgs),
    /// Benchmarks, busline beside its peers in one process.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Durable log tools: append, read, verify, info.
    #[command(subcommand)]
    Log(log_cmd::LogCommand),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Bench(b)) => bench::run(b),
        Some(Command::Monitor(m)) => monitor::run(*m),
        Some(Command::Publish(p)) => monitor::ingest::run_publish(p),
        Some(Command::Log(c)) => tokio::runtime::Runtime::new()?.block_on(log_cmd::run(c)),
        None => monitor::run(cli.monitor),
    }
}
