//! The `busline` command.

mod bench;
mod monitor;

/// Events are allocated on one thread and freed on another; mimalloc handles
/// that far better than glibc's malloc (see `busline bench fanout`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Monitor(monitor::MonitorArgs),
    /// POST metrics (JSON, from arguments or stdin) to a running monitor.
    Publish(monitor::ingest::PublishArgs),
    /// Benchmarks, busline beside its peers in one process.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Bench(b)) => bench::run(b),
        Some(Command::Monitor(m)) => monitor::run(m),
        Some(Command::Publish(p)) => monitor::ingest::run_publish(p),
        None => monitor::run(cli.monitor),
    }
}
