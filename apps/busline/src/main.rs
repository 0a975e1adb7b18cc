//! Temporary wiring of the `log` and `bench log` commands (the lead redoes
//! this file).

mod bench_log;
mod log_cmd;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "busline")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Durable log tools.
    #[command(subcommand)]
    Log(log_cmd::LogCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// Durable log throughput.
    Log(bench_log::BenchLogArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Log(c) => log_cmd::run(c).await,
        Cmd::Bench(BenchCmd::Log(a)) => bench_log::run(a).await,
    }
}
