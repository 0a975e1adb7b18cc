//! The exporter's wire connection: exports written straight onto a
//! connection of its own.
//!
//! The exporter does not hand each event to `async-nats`
//! (a channel send per message, a header map with its allocations, and the
//! client's connection task serializing it again): it encodes the event as
//! protocol text (`HPUB`, see [`codec`](crate::codec)) into a buffer and
//! writes a batch at a time to a second connection it opens itself, with the
//! same server, credentials and TLS settings, resolved once for both
//! ([`Settings`](crate::connection::Settings)). Everything else, imports,
//! JetStream acks (an inbox the client subscribes to) and retries,
//! requests' reply inboxes, status, stays on the `async-nats` client.
//!
//! The connection speaks the least of the protocol a publisher needs:
//! `INFO`, `CONNECT` (user and password, token, nkey or credentials file,
//! signed nonce), TLS (before `CONNECT`, with the configured CA and client
//! certificate, or the system's roots), `PING`/`PONG` both ways, `-ERR`
//! (logged and published as a `$sys.nats.error` status event). It never
//! subscribes. It reconnects by itself, to the configured server (a
//! comma-separated list is tried in turn), while the exporter waits (and so,
//! once its queue is full, local publishers: backpressure). Servers a
//! cluster announces in `INFO` are not used.
//!
//! A network gone quiet rather than closed is found out within four times
//! the connect timeout (the stall limit, 20 s by default): a write the
//! server does not take within it breaks the connection, and so does a
//! keepalive `PING`, sent every stall limit, still unanswered at the next;
//! the connection is then made again when there is something to write.
//! Bytes the kernel took for a connection that then broke are lost: on
//! core NATS (at-most-once) a flush after a reconnect says so
//! ([`NatsError::Reconnected`]); on JetStream their acks never come, and the
//! exporter sends them again.

mod addr;
mod handshake;
mod info;
mod io;
#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};

use self::addr::{parse_servers, Addr};
use self::handshake::handshake;
use self::io::{keepalive, read_loop, send, Conn, Shared};
use crate::connection::Settings;
use crate::error::{ConnectCause, NatsError};
use crate::status::StatusEvent;

/// Buffered bytes that are written at once, batch or not.
pub(crate) const WRITE_AT: usize = 64 * 1024;

/// What the wire connection is made with.
pub(crate) struct WireConfig {
    /// The server, credentials, TLS and connect timeout, shared with the client.
    pub(crate) settings: Arc<Settings>,
    /// The connection name the server's monitoring shows.
    pub(crate) name: String,
    /// Where `-ERR`s from the server go as status events.
    pub(crate) events: mpsc::UnboundedSender<StatusEvent>,
}

/// The exporter's own connection for its publishes: a buffer of
/// protocol text and the connection it is written to.
pub(crate) struct WireConnection {
    cfg: WireConfig,
    servers: Vec<Addr>,
    /// The server to try next.
    next: usize,
    conn: Option<Conn>,
    /// Protocol text not yet written.
    pub(crate) buf: Vec<u8>,
    /// Core NATS events in `buf` (JetStream publishes in it are counted
    /// by their acks).
    pub(crate) pending: u64,
    /// Connections made, the first one included.
    pub(crate) connects: u64,
    /// Scratch space for the encoder (payload, `Busline` value).
    pub(crate) scratch: Vec<u8>,
    pub(crate) meta: String,
}

impl std::fmt::Debug for WireConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireConnection")
            .field("server", &self.cfg.settings.server)
            .field("connected", &self.conn.is_some())
            .field("pending", &self.pending)
            .field("connects", &self.connects)
            .finish()
    }
}

impl WireConnection {
    /// Connects to the first server that takes the connection; a failure
    /// is a startup error naming the server and the cause.
    pub(crate) async fn connect(cfg: WireConfig) -> Result<WireConnection, NatsError> {
        let servers = parse_servers(&cfg.settings.server).map_err(|detail| NatsError::Connect {
            server: cfg.settings.server.clone(),
            cause: ConnectCause::Address,
            detail,
        })?;
        let mut d = WireConnection {
            cfg,
            servers,
            next: 0,
            conn: None,
            buf: Vec::with_capacity(WRITE_AT + 4096),
            pending: 0,
            connects: 0,
            scratch: Vec::new(),
            meta: String::new(),
        };
        let mut first = None;
        for _ in 0..d.servers.len() {
            match d.try_connect().await {
                Ok(()) => return Ok(d),
                Err((cause, detail)) => {
                    first.get_or_insert((cause, detail));
                }
            }
        }
        let (cause, detail) = first.unwrap_or((ConnectCause::Unreachable, String::new()));
        Err(NatsError::Connect {
            server: d.cfg.settings.server.clone(),
            cause,
            detail,
        })
    }

    /// The server's `max_payload` on the current connection (0 when not connected).
    pub(crate) fn max_payload(&self) -> usize {
        self.conn
            .as_ref()
            .map_or(0, |c| c.shared.max_payload.load(Ordering::Relaxed))
    }

    /// How long one write may wait for the server to take it: four times
    /// the connect timeout.
    fn stall_limit(&self) -> Duration {
        self.cfg.settings.connect_timeout.saturating_mul(4)
    }

    /// Whether a connection is up (as far as its reader knows) and usable
    /// (no write was cut off half-way on it).
    pub(crate) fn is_live(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| {
            !c.shared.dirty.load(Ordering::Acquire) && !c.shared.dead.load(Ordering::Acquire)
        })
    }

    /// One attempt on the next server of the list.
    async fn try_connect(&mut self) -> Result<(), (ConnectCause, String)> {
        let addr = self.servers[self.next % self.servers.len()].clone();
        self.next = self.next.wrapping_add(1);
        let timeout = self.cfg.settings.connect_timeout;
        let (writer, reader, info) = match tokio::time::timeout(
            timeout,
            handshake(&addr, &self.cfg.settings, &self.cfg.name),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => {
                return Err((
                    ConnectCause::TimedOut,
                    format!(
                        "no handshake with {}:{} within {timeout:?}",
                        addr.host, addr.port
                    ),
                ))
            }
        };
        let shared = Arc::new(Shared::default());
        shared
            .max_payload
            .store(info.max_payload, Ordering::Relaxed);
        let writer = Arc::new(Mutex::new(writer));
        let task = tokio::spawn(read_loop(
            reader,
            writer.clone(),
            shared.clone(),
            self.cfg.settings.server.clone(),
            self.cfg.events.clone(),
            self.stall_limit(),
        ));
        let keepalive = tokio::spawn(keepalive(
            writer.clone(),
            shared.clone(),
            self.stall_limit(),
            self.cfg.settings.server.clone(),
        ));
        self.conn = Some(Conn {
            writer,
            shared,
            reader: task,
            keepalive,
        });
        self.connects += 1;
        Ok(())
    }

    /// Returns once a connection is up: at once if it is, else after
    /// connecting again, trying the servers in turn with a growing pause
    /// (50 ms more per attempt, at most 1 s), until one takes it.
    pub(crate) async fn connected(&mut self) {
        if self.is_live() {
            return;
        }
        self.conn = None;
        let mut attempt: u64 = 0;
        loop {
            match self.try_connect().await {
                Ok(()) => {
                    tracing::info!(server = %self.cfg.settings.server, attempt, "nats export connection re-established");
                    return;
                }
                Err((cause, detail)) => {
                    attempt += 1;
                    if attempt == 1 || attempt % 20 == 0 {
                        tracing::warn!(server = %self.cfg.settings.server, %cause, %detail, attempt, "nats export connection: reconnecting");
                    }
                    tokio::time::sleep(Duration::from_millis((attempt * 50).min(1000))).await;
                }
            }
        }
    }

    /// Writes what is buffered, connecting first if the connection is
    /// gone (waiting as long as that takes). Returns the core NATS events
    /// written ([`pending`](Self::pending)), `Err` with their number if the
    /// write failed: the connection broke under it, and what it took may be
    /// lost (core NATS is at-most-once; the buffer is not sent again, which
    /// could duplicate a prefix; JetStream publishes in it are sent again
    /// when their acks are overdue). Until it returns, the buffer and
    /// `pending` are as they were: a caller that drops this future (a
    /// shutdown giving up) still finds the events there to count.
    pub(crate) async fn write(&mut self) -> Result<u64, u64> {
        if self.buf.is_empty() {
            return Ok(0);
        }
        self.connected().await;
        let stall = self.stall_limit();
        let r = match &self.conn {
            Some(c) => send(&c.writer, &c.shared, &self.buf, stall, false)
                .await
                .map(|_| ()),
            None => Err(std::io::Error::other("not connected")),
        };
        let n = std::mem::take(&mut self.pending);
        self.buf.clear();
        match r {
            Ok(()) => Ok(n),
            Err(e) => {
                tracing::warn!(server = %self.cfg.settings.server, error = %e, events = n, "nats export connection broke during a write");
                if let Some(c) = &self.conn {
                    c.shared.end();
                }
                Err(n)
            }
        }
    }

    /// Waits until the server has processed everything written on this
    /// connection (a `PING` answered by its `PONG`), for at most `timeout`.
    /// What is still buffered is not written: callers write it first.
    pub(crate) async fn round_trip(&mut self, timeout: Duration) -> Result<(), String> {
        let stall = self.stall_limit();
        let trip = async {
            self.connected().await;
            let conn = self.conn.as_ref().ok_or("not connected")?;
            let want = send(&conn.writer, &conn.shared, b"PING\r\n", stall, true)
                .await
                .map_err(|e| format!("writing PING: {e}"))?;
            let shared = conn.shared.clone();
            loop {
                let woken = shared.wake.notified();
                if shared.pongs.load(Ordering::Acquire) >= want {
                    return Ok(());
                }
                if shared.dead.load(Ordering::Acquire) {
                    return Err("connection closed before the server answered".to_string());
                }
                woken.await;
            }
        };
        tokio::time::timeout(timeout, trip)
            .await
            .unwrap_or_else(|_| Err(format!("no answer from the server within {timeout:?}")))
    }
}
