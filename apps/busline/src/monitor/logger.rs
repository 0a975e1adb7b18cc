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
                        .timestamp()
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
                let open = |read: bool| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .read(read)
                        .open(path)
                        .with_context(|| format!("cannot open log file {}", path.display()))
                };
                // A file this process may only write to cannot be checked.
                let (f, readable) = match open(true) {
                    Ok(f) => (f, true),
                    Err(_) => (open(false)?, false),
                };
                let cut = if readable {
                    drop_cut_off_line(&f).with_context(|| {
                        format!("cannot check the end of log file {}", path.display())
                    })?
                } else {
                    0
                };
                if cut > 0 {
                    eprintln!(
                        "[logger] {} ended in a line cut off by a failed write ({cut} bytes): removed it",
                        path.display()
                    );
                }
                Out::File(BufWriter::with_capacity(64 * 1024, f), path.clone())
            }
        })
    }
}

/// Truncates `f` after its last complete line, so that lines appended from
/// now on are whole lines of their own (a write that failed halfway, a full
/// disk say, left part of one behind). Returns the bytes removed.
fn drop_cut_off_line(f: &std::fs::File) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut r = f;
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        r.seek(SeekFrom::Start(start))?;
        r.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            if keep < len {
                f.set_len(keep)?;
            }
            return Ok(len - keep);
        }
        end = start;
    }
    f.set_len(0)?;
    Ok(len)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A line cut off by a failed write (a full disk) is removed when the
    /// log is opened again, so the next line is not glued onto it.
    #[test]
    fn a_cut_off_last_line_is_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.log");
        std::fs::write(&path, b"{\"seq\":1}\n{\"seq\":2}\n{\"seq\":3,\"metr").unwrap();
        let logger = Logger::new(Sink::File(path.clone()));
        let Out::File(mut f, _) = logger.open().unwrap() else {
            panic!("a file sink")
        };
        f.write_all(b"{\"seq\":4}\n").unwrap();
        f.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"seq\":1}\n{\"seq\":2}\n{\"seq\":4}\n");
        // A whole file is left as it is; one without any newline is emptied.
        drop(f);
        let _ = logger.open().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        std::fs::write(&path, b"partial").unwrap();
        let _ = logger.open().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }
}
