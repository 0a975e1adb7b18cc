//! The `busline` command.

mod bench;
mod bench_log;
mod bench_nats;
mod log_cmd;

/// Events are allocated on one thread and freed on another; mimalloc handles
/// that far better than glibc's malloc (see `busline bench fanout`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// busline: an event bus for tokio, and the live metrics monitor built on it.
#[derive(Debug, Parser)]
#[command(name = "busline", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
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
        Some(Command::Log(c)) => tokio::runtime::Runtime::new()?.block_on(log_cmd::run(c)),
        None => {
            println!("busline: try `busline --help`");
            Ok(())
        }
    }
}
