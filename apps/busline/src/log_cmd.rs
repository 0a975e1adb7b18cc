//! `busline log ...`: append JSON lines to a durable log, read them back,
//! verify and describe a log directory.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use busline_log::{Log, Options};
use clap::Subcommand;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The `log` subcommands.
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Append JSON lines from stdin, one record per line; print each
    /// record's offset once it is durable (fsynced). Blank lines are
    /// skipped; a line that is not JSON stops with an error naming it
    /// (the lines before it are kept).
    Append {
        /// The log directory (created if missing).
        dir: PathBuf,
    },
    /// Print records as JSON lines: {"offset":..,"timestamp":..,"payload":..}.
    Read {
        /// The log directory.
        dir: PathBuf,
        /// The first offset to print.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Keep waiting for new records (appended by another process).
        #[arg(long)]
        follow: bool,
    },
    /// Check every record; exit non-zero at the first problem, naming its
    /// file, position and offset. Changes nothing (a torn tail is reported,
    /// not cut).
    Verify {
        /// The log directory.
        dir: PathBuf,
    },
    /// Describe the segments: offsets, sizes, timestamps.
    Info {
        /// The log directory.
        dir: PathBuf,
    },
}

/// Runs a `log` subcommand.
pub async fn run(cmd: LogCommand) -> anyhow::Result<()> {
    match cmd {
        LogCommand::Append { dir } => append(dir).await,
        LogCommand::Read { dir, from, follow } => read(dir, from, follow).await,
        LogCommand::Verify { dir } => verify(dir),
        LogCommand::Info { dir } => info(dir),
    }
}

async fn append(dir: PathBuf) -> anyhow::Result<()> {
    let log = Log::open(&dir, Options::default())
        .with_context(|| format!("cannot open log {}", dir.display()))?;
    if let Some(r) = log.recovery() {
        eprintln!(
            "recovery: cut a torn tail of {} bytes at offset {} in {}",
            r.bytes_cut,
            r.offset,
            r.segment.display()
        );
    }
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut batch: Vec<String> = Vec::new();
    let mut line_no = 0u64;
    let mut line = String::new();
    loop {
        line.clear();
        let n = match stdin.read_line(&mut line).await {
            Ok(n) => n,
            Err(e) => {
                // The lines before it are kept, as with a line that is not JSON.
                flush(&log, &mut batch).await?;
                bail!("reading line {} of stdin: {e}", line_no + 1);
            }
        };
        if n > 0 {
            line_no += 1;
            let text = line.trim();
            if !text.is_empty() {
                if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
                    flush(&log, &mut batch).await?;
                    bail!("line {line_no} is not valid JSON: {e}");
                }
                batch.push(text.to_owned());
            }
        }
        // Write when stdin has nothing more buffered (or a batch is full),
        // so a slow producer sees each offset promptly.
        if n == 0 || stdin.buffer().is_empty() || batch.len() >= 4096 {
            flush(&log, &mut batch).await?;
        }
        if n == 0 {
            return Ok(());
        }
    }
}

async fn flush(log: &Log, batch: &mut Vec<String>) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let range = log.append_batch(batch.iter()).await?;
    batch.clear();
    let mut out = std::io::stdout().lock();
    for offset in range {
        writeln!(out, "{offset}")?;
    }
    out.flush()?;
    Ok(())
}

async fn read(dir: PathBuf, from: u64, follow: bool) -> anyhow::Result<()> {
    let log = Log::open_read_only(&dir, Options::default())
        .with_context(|| format!("cannot open log {}", dir.display()))?;
    if log.segments().is_empty() {
        return Err(not_a_log(&dir));
    }
    let mut reader = log.read_from(from)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    loop {
        while let Some(rec) = reader.try_next()? {
            let payload: Box<serde_json::value::RawValue> = match serde_json::from_slice::<
                &serde_json::value::RawValue,
            >(&rec.payload)
            {
                Ok(raw) => raw.to_owned(),
                // Not JSON (written by another tool): show it as a string.
                Err(_) => serde_json::value::to_raw_value(&String::from_utf8_lossy(&rec.payload))?,
            };
            writeln!(
                out,
                r#"{{"offset":{},"timestamp":{},"payload":{}}}"#,
                rec.offset,
                rec.timestamp,
                payload.get()
            )?;
        }
        out.flush()?;
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        log.refresh()?;
    }
}

/// A directory without a single segment file is not a log (a typo, or
/// another directory): an error, not an empty log.
fn not_a_log(dir: &std::path::Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} holds no log (no segment files); `busline log append` or `busline monitor --data-dir` creates one",
        dir.display()
    )
}

fn verify(dir: PathBuf) -> anyhow::Result<()> {
    let report = busline_log::verify(&dir, &Options::default())
        .with_context(|| format!("log {} failed verification", dir.display()))?;
    if report.segments == 0 {
        return Err(not_a_log(&dir));
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "ok: {} records (offsets {}..{}) in {} segments, {} bytes",
        report.end_offset - report.first_offset,
        report.first_offset,
        report.end_offset,
        report.segments,
        report.bytes
    )
    .context("writing to stdout")?;
    Ok(())
}

fn info(dir: PathBuf) -> anyhow::Result<()> {
    let log = Log::open_read_only(&dir, Options::default())
        .with_context(|| format!("cannot open log {}", dir.display()))?;
    let segments = log.segments();
    if segments.is_empty() {
        return Err(not_a_log(&dir));
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: offsets {}..{}, {} segments, {} bytes",
        dir.display(),
        log.first_offset(),
        log.committed_end(),
        segments.len(),
        segments.iter().map(|s| s.bytes).sum::<u64>()
    )
    .context("writing to stdout")?;
    writeln!(
        out,
        "{:<28} {:>12} {:>12} {:>12} {:>15}",
        "segment", "first", "end", "bytes", "max_timestamp"
    )
    .context("writing to stdout")?;
    for s in segments {
        let name = s.path.file_name().unwrap_or_default().to_string_lossy();
        writeln!(
            out,
            "{name:<28} {:>12} {:>12} {:>12} {:>15}",
            s.base, s.end, s.bytes, s.max_timestamp
        )
        .context("writing to stdout")?;
    }
    if let Some(r) = log.recovery() {
        writeln!(
            out,
            "torn tail: {} bytes at position {} (offset {}) in {} would be cut by the next writer",
            r.bytes_cut,
            r.position,
            r.offset,
            r.segment.display()
        )
        .context("writing to stdout")?;
    }
    Ok(())
}
