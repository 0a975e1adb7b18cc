//! The wire connection's I/O: writes bounded by the stall limit, the
//! keepalive `PING`, and the reader task that answers the server.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, Mutex, Notify};
use tokio::task::JoinHandle;

use super::info::Info;
use super::WRITE_AT;
use crate::status::StatusEvent;

/// Longest protocol line read from the server (its `INFO` can be long in a cluster).
const MAX_LINE: usize = 1 << 20;

pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<S: AsyncRead + AsyncWrite + Send + Unpin> Io for S {}

pub(crate) type Writer = tokio::io::WriteHalf<Box<dyn Io>>;
pub(crate) type Reader = BufReader<tokio::io::ReadHalf<Box<dyn Io>>>;

/// What the connection's reader task and its user share.
#[derive(Default)]
pub(crate) struct Shared {
    /// `PONG`s received (answers to our `PING`s).
    pub(crate) pongs: AtomicU64,
    /// The connection ended (read error or end of stream).
    pub(crate) dead: AtomicBool,
    /// Woken on every `PONG` and when the connection ends.
    pub(crate) wake: Notify,
    /// The server's `max_payload` (it can change in a later `INFO`).
    pub(crate) max_payload: AtomicUsize,
    /// `PING`s written, counted under the writer's lock once written: the
    /// server answers each with a `PONG`, in order.
    pub(crate) pings: AtomicU64,
    /// A write started and did not finish (failed, timed out, or its
    /// future was dropped): what the server read of it is unknown.
    pub(crate) dirty: AtomicBool,
}

impl Shared {
    pub(crate) fn end(&self) {
        self.dead.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }
}

/// One live connection.
pub(crate) struct Conn {
    pub(crate) writer: Arc<Mutex<Writer>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) reader: JoinHandle<()>,
    pub(crate) keepalive: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
        self.keepalive.abort();
    }
}

/// Writes `bytes`, a piece at a time, each within `stall` (a server that
/// stops reading, as over a network gone quiet rather than closed, would
/// otherwise hold the write for as long as TCP retransmits); `ping`: the
/// bytes are a `PING`, counted once written (returned: the count). A write
/// that fails, times out or is dropped half-way leaves the connection
/// unusable ([`WireConnection::is_live`](super::WireConnection::is_live) says no): the server would read the next
/// bytes as the rest of a cut message.
pub(crate) async fn send(
    writer: &Mutex<Writer>,
    shared: &Shared,
    bytes: &[u8],
    stall: Duration,
    ping: bool,
) -> std::io::Result<u64> {
    let stalled = || {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the server took nothing for {stall:?}"),
        )
    };
    // The reader answering the server's `PING` may hold it, stalled too.
    let mut w = tokio::time::timeout(stall, writer.lock())
        .await
        .map_err(|_| stalled())?;
    shared.dirty.store(true, Ordering::Release);
    for piece in bytes.chunks(WRITE_AT) {
        tokio::time::timeout(stall, w.write_all(piece))
            .await
            .map_err(|_| stalled())??;
    }
    tokio::time::timeout(stall, w.flush())
        .await
        .map_err(|_| stalled())??;
    shared.dirty.store(false, Ordering::Release);
    Ok(if ping {
        shared.pings.fetch_add(1, Ordering::AcqRel) + 1
    } else {
        0
    })
}

/// Every `every`, a `PING` (unless a write holds the connection: the stall
/// limit watches that one); a `PING` still unanswered one `every` later
/// ends the connection. Catches a connection gone quiet while idle, which
/// no write would find out about for as long as TCP retransmits.
pub(crate) async fn keepalive(
    w: Arc<Mutex<Writer>>,
    shared: Arc<Shared>,
    every: Duration,
    server: String,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut sent = 0;
    loop {
        tick.tick().await;
        if shared.dead.load(Ordering::Acquire) {
            return;
        }
        if sent > shared.pongs.load(Ordering::Acquire) {
            tracing::warn!(%server, after = ?every, "nats export connection: no PONG, connection given up");
            shared.end();
            return;
        }
        if w.try_lock().is_err() {
            continue;
        }
        match send(&w, &shared, b"PING\r\n", every, true).await {
            Ok(n) => sent = n,
            Err(_) => {
                shared.end();
                return;
            }
        }
    }
}

/// Reads one `\r\n`-ended line (without it).
pub(crate) async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> std::io::Result<String> {
    let mut line = Vec::new();
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed by the server",
            ));
        }
        match memchr_newline(chunk) {
            Some(i) => {
                line.extend_from_slice(&chunk[..i]);
                r.consume(i + 1);
                break;
            }
            None => {
                let n = chunk.len();
                line.extend_from_slice(chunk);
                r.consume(n);
            }
        }
        if line.len() > MAX_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "protocol line too long",
            ));
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

/// Reads what the server sends on the export connection: answers its
/// `PING`s, counts `PONG`s, reports `-ERR`s, follows `max_payload`.
pub(crate) async fn read_loop(
    mut r: Reader,
    w: Arc<Mutex<Writer>>,
    shared: Arc<Shared>,
    server: String,
    events: mpsc::UnboundedSender<StatusEvent>,
    stall: Duration,
) {
    loop {
        let line = match read_line(&mut r).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(%server, error = %e, "nats export connection ended");
                break;
            }
        };
        if line == "PING" {
            if send(&w, &shared, b"PONG\r\n", stall, false).await.is_err() {
                break;
            }
        } else if line == "PONG" {
            shared.pongs.fetch_add(1, Ordering::AcqRel);
            shared.wake.notify_waiters();
        } else if let Some(err) = line.strip_prefix("-ERR") {
            let message = err.trim().trim_matches('\'').to_string();
            tracing::error!(%server, %message, "nats server error on the export connection");
            let _ = events.send(StatusEvent::Error {
                server: server.clone(),
                message,
            });
        } else if let Some(json) = line.strip_prefix("INFO ") {
            if let Ok(info) = serde_json::from_str::<Info>(json) {
                if info.max_payload > 0 {
                    shared
                        .max_payload
                        .store(info.max_payload, Ordering::Relaxed);
                }
            }
        }
        // `+OK` and anything else: nothing to do (it never subscribes).
    }
    shared.end();
}
