//! The `busline` command.

mod bench;
mod bench_nats;

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
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Bench(b)) => bench::run(b),
        None => {
            println!("busline: try `busline --help`");
            Ok(())
        }
    }
}
