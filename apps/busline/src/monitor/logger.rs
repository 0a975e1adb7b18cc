//! The logger: every metric, to stdout or a JSON Lines file.
//!
//! ## Lossless on purpose
//!
//! The logger subscribes *lossless*: when it falls behind, publishers wait
//! for it (backpressure) rather than lose a line. On shutdown it first takes
//! everything already queued for it, writes it, flushes and (for a file)
//! fsyncs, so nothing published before the stop is missing from the log.
//!
//! ## Formats
//!
//! - stdout: `[logger] Request { path: "/api/data", latency_ms: 42, status: 200 }`
//! - `--log-file PATH`: one JSON object per line, appended:
//!   `{"seq":7,"ts_ms":1763791200123,"topic":"metrics.web.request","source":"web-sim","metric":{"type":"request",...}}`

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use anyhow::Context as _;
use busline::{BoxError, Context, Envelope, Module, RecvError};
use serde::Serialize;

use super::metric::Metric;

/// Queue capacity of the logger's lossless subscription.
pub const LOGGER_QUEUE: usize = 4096;

/// Where the logger writes.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Human-readable lines on stdout.
    Stdout,
    /// JSON Lines appended to a file.
    File(PathBuf),
}

/// The logger module.
#[derive(Debug, Clone)]
pub struct Logger {
    sink: Sink,
}

#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    ts_ms: u64,
    topic: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    metric: &'a Metric,
}

enum Out {
    Stdout(std::io::Stdout),
    File(BufWriter<File>, PathBuf),
}

impl Out {
    fn write(&mut self, env: &Envelope<Metric>) -> std::io::Result<()> {
        match self {
            Out::Stdout(s) => writeln!(s.lock(), "[logger] {}", env.payload),
            Out::File(f, _) => {
                let line = Line {
                    seq: env.seq,
                    ts_ms: env
                        .timestamp
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0),
                    topic: env.topic.as_str(),
                    source: env.source.as_deref(),
                    metric: &env.payload,
                };
                serde_json::to_writer(&mut *f, &line)?;
                f.write_all(b"\n")
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Out::Stdout(s) => s.flush(),
            Out::File(f, _) => f.flush(),
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        match self {
            Out::Stdout(s) => s.flush(),
            Out::File(f, _) => {
                f.flush()?;
                f.get_ref().sync_data()
            }
        }
    }
}

impl Logger {
    /// A logger writing to `sink`.
    pub fn new(sink: Sink) -> Self {
        Logger { sink }
    }

    fn open(&self) -> anyhow::Result<Out> {
        Ok(match &self.sink {
            Sink::Stdout => Out::Stdout(std::io::stdout()),
            Sink::File(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open log file {}", path.display()))?;
                Out::File(BufWriter::with_capacity(64 * 1024, f), path.clone())
            }
        })
    }
}

impl Module<Metric> for Logger {
    fn name(&self) -> &str {
        "logger"
    }

    /// Logs until shutdown, then drains what is queued and syncs.
    async fn run(&mut self, ctx: Context<Metric>) -> Result<(), BoxError> {
        let mut out = self.open()?;
        let mut sub = ctx
            .subscriber("metrics.>")
            .lossless(LOGGER_QUEUE)
            .subscribe()?;
        let io = |e: std::io::Error, out: &Out| -> anyhow::Error {
            match out {
                Out::File(_, p) => anyhow::anyhow!("writing log file {}: {e}", p.display()),
                Out::Stdout(_) => anyhow::anyhow!("writing to stdout: {e}"),
            }
        };
        loop {
            let env: Arc<Envelope<Metric>> = tokio::select! {
                biased;
                r = sub.recv() => match r {
                    Ok(env) => env,
                    Err(RecvError::Closed) => break,
                    Err(e) => return Err(e.into()),
                },
                _ = ctx.shutdown_requested() => break,
            };
            out.write(&env).map_err(|e| io(e, &out))?;
            // Write the whole batch that is ready, then flush once.
            while let Ok(Some(env)) = sub.try_recv() {
                out.write(&env).map_err(|e| io(e, &out))?;
            }
            out.flush().map_err(|e| io(e, &out))?;
        }
        // Shutdown: everything already queued goes to the log too.
        for env in sub.drain() {
            out.write(&env).map_err(|e| io(e, &out))?;
        }
        out.sync().map_err(|e| io(e, &out))?;
        Ok(())
    }
}
