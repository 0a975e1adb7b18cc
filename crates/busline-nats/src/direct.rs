//! Exports written straight onto a connection of the exporter's own.
//!
//! The exporter does not hand each event to `async-nats`
//! (a channel send per message, a header map with its allocations, and the
//! client's connection task serializing it again): it encodes the event as
//! protocol text (`HPUB`, see [`codec`](crate::codec)) into a buffer and
//! writes a batch at a time to a second connection it opens itself, with the
//! same server, credentials and TLS settings. Everything else, imports,
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

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex, Notify};
use tokio::task::JoinHandle;

use crate::config::{Auth, Tls};
use crate::error::{ConnectCause, NatsError};
use crate::transport::StatusEvent;

/// Longest protocol line read from the server (its `INFO` can be long in a cluster).
const MAX_LINE: usize = 1 << 20;

/// Buffered bytes that are written at once, batch or not.
pub(crate) const WRITE_AT: usize = 64 * 1024;

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<S: AsyncRead + AsyncWrite + Send + Unpin> Io for S {}

type Writer = tokio::io::WriteHalf<Box<dyn Io>>;
type Reader = BufReader<tokio::io::ReadHalf<Box<dyn Io>>>;

/// One server of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Addr {
    host: String,
    port: u16,
    /// `tls://`: TLS whatever the server says.
    tls: bool,
    /// `nats://user:pass@host`.
    user: Option<(String, String)>,
}

/// Parses `nats://host:port`, `tls://host:port`, `host:port`, `host`, and
/// lists of them separated by commas.
fn parse_servers(s: &str) -> Result<Vec<Addr>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (tls, rest) = if let Some(r) = part.strip_prefix("tls://") {
            (true, r)
        } else if let Some(r) = part.strip_prefix("nats://") {
            (false, r)
        } else if part.contains("://") {
            return Err(format!("`{part}`: the scheme must be nats:// or tls://"));
        } else {
            (false, part)
        };
        let rest = rest.trim_end_matches('/');
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => {
                let (name, pass) = u.split_once(':').unwrap_or((u, ""));
                (Some((name.to_string(), pass.to_string())), h)
            }
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            // `[::1]:4222`, `host:4222`; a bare IPv6 address has more colons.
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("`{part}`: `{p}` is not a port"))?;
                (h, port)
            }
            _ => (hostport, 4222),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("`{part}`: no host"));
        }
        out.push(Addr {
            host: host.to_string(),
            port,
            tls,
            user,
        });
    }
    if out.is_empty() {
        return Err("no server given".into());
    }
    Ok(out)
}

/// What the direct connection is made with.
pub(crate) struct DirectConfig {
    /// The server list as configured (for errors and status events).
    pub server: String,
    pub auth: Auth,
    pub tls: Tls,
    pub name: String,
    pub connect_timeout: Duration,
    /// Where `-ERR`s from the server go as status events.
    pub events: mpsc::UnboundedSender<StatusEvent>,
}

/// The parts of the server's `INFO` used here.
#[derive(Debug, Default, serde::Deserialize)]
struct Info {
    #[serde(default)]
    max_payload: usize,
    #[serde(default)]
    tls_required: bool,
    #[serde(default)]
    tls_available: bool,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    headers: bool,
}

/// What the connection's reader task and its user share.
#[derive(Default)]
struct Shared {
    /// `PONG`s received (answers to our `PING`s).
    pongs: AtomicU64,
    /// The connection ended (read error or end of stream).
    dead: AtomicBool,
    /// Woken on every `PONG` and when the connection ends.
    wake: Notify,
    /// The server's `max_payload` (it can change in a later `INFO`).
    max_payload: AtomicUsize,
    /// `PING`s written, counted under the writer's lock once written: the
    /// server answers each with a `PONG`, in order.
    pings: AtomicU64,
    /// A write started and did not finish (failed, timed out, or its
    /// future was dropped): what the server read of it is unknown.
    dirty: AtomicBool,
}

impl Shared {
    fn end(&self) {
        self.dead.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }
}

/// One live connection.
struct Conn {
    writer: Arc<Mutex<Writer>>,
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
    keepalive: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
        self.keepalive.abort();
    }
}

/// The exporter's own connection for its publishes: a buffer of
/// protocol text and the connection it is written to.
pub(crate) struct Direct {
    cfg: DirectConfig,
    servers: Vec<Addr>,
    /// The server to try next.
    next: usize,
    conn: Option<Conn>,
    /// Protocol text not yet written.
    pub buf: Vec<u8>,
    /// Core NATS events in `buf` (JetStream publishes in it are counted
    /// by their acks).
    pub pending: u64,
    /// Connections made, the first one included.
    pub connects: u64,
    /// Scratch space for the encoder (payload, `Busline` value).
    pub scratch: Vec<u8>,
    pub meta: String,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct")
            .field("server", &self.cfg.server)
            .field("connected", &self.conn.is_some())
            .field("pending", &self.pending)
            .field("connects", &self.connects)
            .finish()
    }
}

impl Direct {
    /// Connects to the first server that takes the connection; a failure
    /// is a startup error naming the server and the cause.
    pub(crate) async fn connect(cfg: DirectConfig) -> Result<Direct, NatsError> {
        let servers = parse_servers(&cfg.server).map_err(|detail| NatsError::Connect {
            server: cfg.server.clone(),
            cause: ConnectCause::Address,
            detail,
        })?;
        let mut d = Direct {
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
            server: d.cfg.server.clone(),
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
        self.cfg.connect_timeout.saturating_mul(4)
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
        let timeout = self.cfg.connect_timeout;
        let (writer, reader, info) =
            match tokio::time::timeout(timeout, handshake(&addr, &self.cfg)).await {
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
            self.cfg.server.clone(),
            self.cfg.events.clone(),
            self.stall_limit(),
        ));
        let keepalive = tokio::spawn(keepalive(
            writer.clone(),
            shared.clone(),
            self.stall_limit(),
            self.cfg.server.clone(),
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
                    tracing::info!(server = %self.cfg.server, attempt, "nats export connection re-established");
                    return;
                }
                Err((cause, detail)) => {
                    attempt += 1;
                    if attempt == 1 || attempt % 20 == 0 {
                        tracing::warn!(server = %self.cfg.server, %cause, %detail, attempt, "nats export connection: reconnecting");
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
                tracing::warn!(server = %self.cfg.server, error = %e, events = n, "nats export connection broke during a write");
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

/// Writes `bytes`, a piece at a time, each within `stall` (a server that
/// stops reading, as over a network gone quiet rather than closed, would
/// otherwise hold the write for as long as TCP retransmits); `ping`: the
/// bytes are a `PING`, counted once written (returned: the count). A write
/// that fails, times out or is dropped half-way leaves the connection
/// unusable ([`Direct::is_live`] says no): the server would read the next
/// bytes as the rest of a cut message.
async fn send(
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
async fn keepalive(w: Arc<Mutex<Writer>>, shared: Arc<Shared>, every: Duration, server: String) {
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

fn tls_error(e: impl std::fmt::Display) -> (ConnectCause, String) {
    (ConnectCause::Tls, e.to_string())
}

/// TCP, `INFO`, TLS if wanted or required, `CONNECT` and a `PING` that must
/// come back as `PONG` (so a refused credential fails here).
async fn handshake(
    addr: &Addr,
    cfg: &DirectConfig,
) -> Result<(Writer, Reader, Info), (ConnectCause, String)> {
    let target = format!("{}:{}", addr.host, addr.port);
    let tcp = TcpStream::connect((addr.host.as_str(), addr.port))
        .await
        .map_err(|e| (ConnectCause::Unreachable, format!("{target}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let mut tcp = BufReader::new(tcp);
    let line = read_line(&mut tcp)
        .await
        .map_err(|e| (ConnectCause::Unreachable, format!("{target}: {e}")))?;
    let info: Info = line
        .strip_prefix("INFO ")
        .and_then(|j| serde_json::from_str(j).ok())
        .ok_or_else(|| {
            (
                ConnectCause::Unreachable,
                format!("{target} did not answer with a NATS INFO: `{line}`"),
            )
        })?;
    if !info.headers {
        return Err((
            ConnectCause::Unreachable,
            format!("{target} does not support headers (nats-server 2.2 or later needed)"),
        ));
    }
    let want_tls =
        addr.tls || cfg.tls.required || cfg.tls.ca_file.is_some() || cfg.tls.client_cert.is_some();
    let io: Box<dyn Io> = if want_tls || info.tls_required {
        if !(info.tls_required || info.tls_available) {
            return Err((
                ConnectCause::Tls,
                format!("{target} does not offer TLS, and TLS is required here"),
            ));
        }
        // The server sent only its INFO and waits: nothing is buffered.
        let tcp = tcp.into_inner();
        let connector = tls_connector(&cfg.tls)?;
        let name = rustls::pki_types::ServerName::try_from(addr.host.clone())
            .map_err(|e| tls_error(format!("`{}` as a TLS server name: {e}", addr.host)))?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| tls_error(format!("{target}: {e}")))?;
        Box::new(tls)
    } else {
        Box::new(tcp.into_inner())
    };
    let (r, mut w) = tokio::io::split(io);
    let mut r = BufReader::new(r);
    let connect = connect_json(addr, cfg, &info, want_tls || info.tls_required)?;
    let mut hello = Vec::with_capacity(connect.len() + 20);
    hello.extend_from_slice(b"CONNECT ");
    hello.extend_from_slice(connect.as_bytes());
    hello.extend_from_slice(b"\r\nPING\r\n");
    w.write_all(&hello)
        .await
        .map_err(|e| (ConnectCause::Unreachable, format!("{target}: {e}")))?;
    w.flush()
        .await
        .map_err(|e| (ConnectCause::Unreachable, format!("{target}: {e}")))?;
    loop {
        let line = read_line(&mut r)
            .await
            .map_err(|e| (ConnectCause::Unreachable, format!("{target}: {e}")))?;
        if line == "PONG" {
            return Ok((w, r, info));
        }
        if line == "PING" {
            let _ = w.write_all(b"PONG\r\n").await;
            continue;
        }
        if let Some(err) = line.strip_prefix("-ERR") {
            let err = err.trim().trim_matches('\'').to_string();
            let low = err.to_ascii_lowercase();
            let cause = if low.contains("authorization") || low.contains("authentication") {
                ConnectCause::Authorization
            } else if low.contains("tls") || low.contains("secure") {
                ConnectCause::Tls
            } else {
                ConnectCause::Unreachable
            };
            return Err((cause, format!("{target}: {err}")));
        }
        // `+OK`, a later `INFO`: nothing to do before the `PONG`.
    }
}

/// The `CONNECT` options, with the credentials (and the nonce signed).
fn connect_json(
    addr: &Addr,
    cfg: &DirectConfig,
    info: &Info,
    tls: bool,
) -> Result<String, (ConnectCause, String)> {
    let mut o = serde_json::json!({
        "verbose": false,
        "pedantic": false,
        "tls_required": tls,
        "name": cfg.name,
        "lang": "rust",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": 1,
        "echo": true,
        "headers": true,
        "no_responders": false,
    });
    let sign = |seed: &str| -> Result<(String, String), (ConnectCause, String)> {
        let kp = nkeys::KeyPair::from_seed(seed.trim()).map_err(|e| {
            (
                ConnectCause::Authentication,
                format!("the nkey seed is not valid: {e}"),
            )
        })?;
        let nonce = info.nonce.as_deref().ok_or((
            ConnectCause::Authentication,
            "the server sent no nonce to sign".to_string(),
        ))?;
        let sig = kp.sign(nonce.as_bytes()).map_err(|e| {
            (
                ConnectCause::Authentication,
                format!("signing the nonce: {e}"),
            )
        })?;
        Ok((
            kp.public_key(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig),
        ))
    };
    match &cfg.auth {
        Auth::None => {
            if let Some((user, pass)) = &addr.user {
                o["user"] = user.clone().into();
                o["pass"] = pass.clone().into();
            }
        }
        Auth::UserPassword { user, password } => {
            o["user"] = user.clone().into();
            o["pass"] = password.clone().into();
        }
        Auth::Token(t) => o["auth_token"] = t.clone().into(),
        Auth::NKey(seed) => {
            let (public, sig) = sign(seed)?;
            o["nkey"] = public.into();
            o["sig"] = sig.into();
        }
        Auth::CredentialsFile(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                (
                    ConnectCause::Authentication,
                    format!("credentials file {}: {e}", path.display()),
                )
            })?;
            let (jwt, seed) = parse_creds(&text).map_err(|e| {
                (
                    ConnectCause::Authentication,
                    format!("credentials file {}: {e}", path.display()),
                )
            })?;
            let (_, sig) = sign(&seed)?;
            o["jwt"] = jwt.into();
            o["sig"] = sig.into();
        }
    }
    Ok(o.to_string())
}

/// The user JWT and the nkey seed of a `.creds` file: the first line after
/// each `-----BEGIN …-----` marker.
fn parse_creds(text: &str) -> Result<(String, String), String> {
    let block = |what: &str| -> Option<String> {
        let mut lines = text.lines().map(str::trim);
        lines.find(|l| l.starts_with("-----BEGIN") && l.contains(what))?;
        lines
            .find(|l| !l.is_empty())
            .filter(|l| !l.starts_with("---"))
            .map(str::to_string)
    };
    let jwt = block("JWT").ok_or("no user JWT block")?;
    let seed = block("SEED").ok_or("no nkey seed block")?;
    Ok((jwt, seed))
}

fn tls_connector(tls: &Tls) -> Result<tokio_rustls::TlsConnector, (ConnectCause, String)> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(ca) => {
            let pem = std::fs::read(ca)
                .map_err(|e| tls_error(format!("tls ca file {}: {e}", ca.display())))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert =
                    cert.map_err(|e| tls_error(format!("tls ca file {}: {e}", ca.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| tls_error(format!("tls ca file {}: {e}", ca.display())))?;
            }
            if roots.is_empty() {
                return Err(tls_error(format!(
                    "tls ca file {} holds no certificate",
                    ca.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs()
                .map_err(|e| tls_error(format!("the system's root certificates: {e}")))?;
            for cert in found {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_root_certificates(roots);
    let config = match &tls.client_cert {
        Some((cert, key)) => {
            let certs = std::fs::read(cert)
                .map_err(|e| tls_error(format!("client certificate {}: {e}", cert.display())))?;
            let certs = rustls_pemfile::certs(&mut certs.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls_error(format!("client certificate {}: {e}", cert.display())))?;
            let k = std::fs::read(key)
                .map_err(|e| tls_error(format!("client key {}: {e}", key.display())))?;
            let k = rustls_pemfile::private_key(&mut k.as_slice())
                .map_err(|e| tls_error(format!("client key {}: {e}", key.display())))?
                .ok_or_else(|| tls_error(format!("client key {}: no key in it", key.display())))?;
            builder
                .with_client_auth_cert(certs, k)
                .map_err(|e| tls_error(format!("client certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Reads one `\r\n`-ended line (without it).
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<String> {
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
async fn read_loop(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_parse() {
        let a = parse_servers("nats://127.0.0.1:4223, tls://u:p@example.com, host").unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(
            (a[0].host.as_str(), a[0].port, a[0].tls),
            ("127.0.0.1", 4223, false)
        );
        assert_eq!(
            (a[1].host.as_str(), a[1].port, a[1].tls),
            ("example.com", 4222, true)
        );
        assert_eq!(a[1].user, Some(("u".into(), "p".into())));
        assert_eq!((a[2].host.as_str(), a[2].port), ("host", 4222));
        let v6 = parse_servers("nats://[::1]:5000").unwrap();
        assert_eq!((v6[0].host.as_str(), v6[0].port), ("::1", 5000));
        assert!(parse_servers("http://x").unwrap_err().contains("scheme"));
        assert!(parse_servers("nats://x:port")
            .unwrap_err()
            .contains("not a port"));
        assert!(parse_servers(" , ").is_err());
    }

    use crate::server::NatsServer;

    fn cfg(server: &str, auth: Auth, tls: Tls) -> DirectConfig {
        DirectConfig {
            server: server.to_string(),
            auth,
            tls,
            name: "test".into(),
            connect_timeout: Duration::from_secs(10),
            events: mpsc::unbounded_channel().0,
        }
    }

    fn srv(conf: &str) -> NatsServer {
        NatsServer::with_config(conf).expect("these tests need a real nats-server")
    }

    /// Connects, or returns the startup error's cause and text.
    async fn try_connect(
        server: &str,
        auth: Auth,
        tls: Tls,
    ) -> Result<Direct, (ConnectCause, String)> {
        match Direct::connect(cfg(server, auth, tls)).await {
            Ok(d) => Ok(d),
            Err(e @ NatsError::Connect { .. }) => {
                let NatsError::Connect {
                    cause,
                    server: named,
                    ..
                } = &e
                else {
                    unreachable!()
                };
                assert_eq!(named, server, "{e}");
                Err((*cause, e.to_string()))
            }
            Err(e) => panic!("not a connect error: {e}"),
        }
    }

    /// One event through the connection: written, and confirmed by a round trip.
    async fn publishes(d: &mut Direct) {
        d.buf
            .extend_from_slice(b"HPUB t.x 12 14\r\nNATS/1.0\r\n\r\nhi\r\n");
        d.pending += 1;
        assert_eq!(d.write().await, Ok(1));
        d.round_trip(Duration::from_secs(10)).await.unwrap();
        assert_eq!(d.connects, 1);
    }

    #[tokio::test]
    async fn credentials_are_sent_and_refusals_are_startup_errors() {
        let up = |u: &str, p: &str| Auth::UserPassword {
            user: u.into(),
            password: p.into(),
        };
        let s = srv("authorization { user: alice, password: wonderland }");
        let url = s.url();
        let mut d = try_connect(&url, up("alice", "wonderland"), Tls::default())
            .await
            .unwrap();
        publishes(&mut d).await;
        for auth in [
            up("alice", "guess"),
            Auth::None,
            Auth::Token("wonderland".into()),
        ] {
            let (cause, msg) = try_connect(&url, auth, Tls::default()).await.err().unwrap();
            assert_eq!(cause, ConnectCause::Authorization, "{msg}");
        }

        let s = srv("authorization { token: s3cret }");
        let url = s.url();
        publishes(
            &mut try_connect(&url, Auth::Token("s3cret".into()), Tls::default())
                .await
                .unwrap(),
        )
        .await;
        let (cause, _) = try_connect(&url, Auth::Token("nope".into()), Tls::default())
            .await
            .err()
            .unwrap();
        assert_eq!(cause, ConnectCause::Authorization);

        let user = nkeys::KeyPair::new_user();
        let s = srv(&format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}",
            user.public_key()
        ));
        let url = s.url();
        let seed = user.seed().unwrap();
        publishes(
            &mut try_connect(&url, Auth::NKey(seed), Tls::default())
                .await
                .unwrap(),
        )
        .await;
        let other = nkeys::KeyPair::new_user().seed().unwrap();
        let (cause, _) = try_connect(&url, Auth::NKey(other), Tls::default())
            .await
            .err()
            .unwrap();
        assert_eq!(cause, ConnectCause::Authorization);
        let (cause, msg) = try_connect(&url, Auth::NKey("SUNOTASEED".into()), Tls::default())
            .await
            .err()
            .unwrap();
        assert_eq!(cause, ConnectCause::Authentication, "{msg}");
        assert!(msg.contains("nkey seed is not valid"), "{msg}");
        // A creds file that is not one: named, never a fallback.
        let creds = s.dir().join("bad.creds");
        std::fs::write(&creds, "not a creds file").unwrap();
        let (cause, msg) = try_connect(&url, Auth::CredentialsFile(creds.clone()), Tls::default())
            .await
            .err()
            .unwrap();
        assert_eq!(cause, ConnectCause::Authentication, "{msg}");
        assert!(msg.contains(&creds.display().to_string()), "{msg}");
    }

    #[tokio::test]
    async fn tls_is_verified_and_never_given_up() {
        let certs =
            std::env::temp_dir().join(format!("busline-direct-certs-{}", std::process::id()));
        std::fs::create_dir_all(&certs).unwrap();
        crate::server::make_test_certs(&certs).expect("the tls test needs the openssl command");
        let s = srv(&format!(
            "tls {{ cert_file: {:?}, key_file: {:?} }}",
            certs.join("server.pem").display().to_string(),
            certs.join("server.key").display().to_string()
        ));
        let url = s.url();
        let ca = |f: &str| Tls {
            ca_file: Some(certs.join(f)),
            ..Tls::default()
        };
        publishes(&mut try_connect(&url, Auth::None, ca("ca.pem")).await.unwrap()).await;
        for (tls, what) in [
            (ca("other.pem"), "UnknownIssuer"),
            (Tls::default(), "UnknownIssuer"),
            (ca("missing.pem"), "missing.pem"),
        ] {
            let (cause, msg) = try_connect(&url, Auth::None, tls).await.err().unwrap();
            assert_eq!(cause, ConnectCause::Tls, "{msg}");
            assert!(msg.contains(what), "{msg}");
        }
        // TLS required here, plaintext there.
        let plain = srv("");
        let required = Tls {
            required: true,
            ..Tls::default()
        };
        let (cause, msg) = try_connect(&plain.url(), Auth::None, required)
            .await
            .err()
            .unwrap();
        assert_eq!(cause, ConnectCause::Tls, "{msg}");
        let tls_url = plain.url().replace("nats://", "tls://");
        let (cause, msg) = try_connect(&tls_url, Auth::None, Tls::default())
            .await
            .err()
            .unwrap();
        assert_eq!(cause, ConnectCause::Tls, "{msg}");
        let _ = std::fs::remove_dir_all(&certs);
    }

    #[tokio::test]
    async fn what_is_not_a_nats_server_is_named() {
        // Nothing listening.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("nats://127.0.0.1:{port}");
        let (cause, _) = try_connect(&url, Auth::None, Tls::default())
            .await
            .err()
            .unwrap();
        assert_eq!(cause, ConnectCause::Unreachable);
        // Something that speaks another protocol.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("nats://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut c, _) = l.accept().await.unwrap();
            let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let (cause, msg) = try_connect(&url, Auth::None, Tls::default())
            .await
            .err()
            .unwrap();
        assert_eq!(cause, ConnectCause::Unreachable);
        assert!(msg.contains("did not answer with a NATS INFO"), "{msg}");
        let (cause, _) = try_connect("http://x", Auth::None, Tls::default())
            .await
            .err()
            .unwrap();
        assert_eq!(cause, ConnectCause::Address);
    }

    /// Several servers: the first that answers is used, and after it dies
    /// the connection moves on to the next.
    #[tokio::test]
    async fn a_server_list_is_tried_in_turn() {
        let mut a = srv("");
        let b = srv("");
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let list = format!("nats://127.0.0.1:{dead}, {}, {}", a.url(), b.url());
        let mut d = try_connect(&list, Auth::None, Tls::default())
            .await
            .unwrap();
        publishes(&mut d).await;
        a.kill();
        // The reader notices, the next write reconnects (to b).
        let shared = d.conn.as_ref().unwrap().shared.clone();
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let woken = shared.wake.notified();
                if shared.dead.load(Ordering::Acquire) {
                    break;
                }
                woken.await;
            }
        })
        .await
        .expect("the connection's end is noticed");
        d.round_trip(Duration::from_secs(30)).await.unwrap();
        assert_eq!(d.connects, 2);
    }

    #[test]
    fn creds_files_parse() {
        let text = "-----BEGIN NATS USER JWT-----\neyJ0.abc.def\n------END NATS USER JWT------\n\n************************* IMPORTANT *************************\n\n-----BEGIN USER NKEY SEED-----\nSUAKEY\n------END USER NKEY SEED------\n";
        assert_eq!(
            parse_creds(text).unwrap(),
            ("eyJ0.abc.def".to_string(), "SUAKEY".to_string())
        );
        assert!(parse_creds("nothing").is_err());
    }
}
