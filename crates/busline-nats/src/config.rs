//! Configuration: the server, credentials, what to export and import, and how.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::Codec;
use crate::status::{StatusEvent, StatusMap};

/// How to authenticate. Exactly one is used; a wrong one is a startup error,
/// never a fallback to anonymous access.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// User name and password.
    UserPassword {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// A token.
    Token(String),
    /// An nkey seed (`SU…`): the server checks the signature of its nonce.
    NKey(String),
    /// A `.creds` file (user JWT + nkey seed), as issued by an operator/account setup.
    CredentialsFile(PathBuf),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets are never printed.
        match self {
            Auth::None => f.write_str("None"),
            Auth::UserPassword { user, .. } => write!(f, "UserPassword {{ user: {user:?}, .. }}"),
            Auth::Token(_) => f.write_str("Token(..)"),
            Auth::NKey(_) => f.write_str("NKey(..)"),
            Auth::CredentialsFile(p) => write!(f, "CredentialsFile({p:?})"),
        }
    }
}

/// Transport security.
#[derive(Debug, Clone, Default)]
pub struct Tls {
    /// Require TLS: the connection fails rather than run in plaintext.
    pub required: bool,
    /// PEM file with the CA(s) that sign the server's certificate (a private CA).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Delivery guarantee.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Mode {
    /// Core NATS: at-most-once, nothing stored; for throw-away streams (live
    /// metrics where the next value replaces a lost one).
    Core,
    /// JetStream: at-least-once, stored by the server, acknowledged both ways.
    JetStream(JetStreamConfig),
}

/// JetStream settings. Every process that shares a stream should use the same ones.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// Stream name (created if missing).
    pub stream: String,
    /// Subjects the stream stores; empty = the union of exports and imports.
    pub subjects: Vec<String>,
    /// How long the server remembers message ids to drop duplicates (`Nats-Msg-Id`).
    pub duplicate_window: Duration,
    /// File storage (durable) or memory. A memory stream, and everything
    /// acknowledged in it, is gone when the server restarts; the transport
    /// then makes it again and goes on (see the crate docs).
    pub file_storage: bool,
    /// Maximum age of stored messages (zero = unlimited).
    pub max_age: Duration,
    /// Name prefix of the durable consumers this process uses for its imports;
    /// processes with the same prefix share (compete for) the messages, a
    /// different prefix gets its own copy of every message.
    pub durable: String,
    /// Deliveries of one message before it is dead-lettered.
    pub max_deliver: i64,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// How long a publish waits for its ack before it is retried.
    pub ack_timeout: Duration,
    /// Publishes in flight (awaiting their ack) at once.
    pub max_in_flight: usize,
    /// Ids remembered per import pattern to drop redelivered duplicates
    /// locally (the imports share one memory of this size times their number).
    pub dedup_window: usize,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        JetStreamConfig {
            stream: "BUSLINE".into(),
            subjects: Vec::new(),
            duplicate_window: Duration::from_secs(120),
            file_storage: true,
            max_age: Duration::ZERO,
            durable: "busline".into(),
            max_deliver: 5,
            ack_wait: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(5),
            max_in_flight: 1024,
            dedup_window: 65_536,
        }
    }
}

/// Everything the transport needs: build with [`NatsConfig::new`] and chained setters.
///
/// ```
/// use busline_nats::{NatsConfig, Auth, JetStreamConfig};
/// let cfg: NatsConfig<String> = NatsConfig::new("nats://127.0.0.1:4222")
///     .auth(Auth::Token("s3cret".into()))
///     .export("metrics.>")
///     .import("alerts.>")
///     .jetstream(JetStreamConfig::default());
/// assert_eq!(format!("{:?}", cfg.auth_ref()), "Token(..)"); // secrets are not printed
/// ```
pub struct NatsConfig<T> {
    pub(crate) server: String,
    pub(crate) auth: Auth,
    pub(crate) tls: Tls,
    pub(crate) exports: Vec<String>,
    pub(crate) imports: Vec<String>,
    pub(crate) mode: Mode,
    pub(crate) codec: Codec,
    pub(crate) buffer: usize,
    pub(crate) dead_letter_prefix: String,
    pub(crate) name: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) status_map: Option<StatusMap<T>>,
}

impl<T> std::fmt::Debug for NatsConfig<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("server", &self.server)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("exports", &self.exports)
            .field("imports", &self.imports)
            .field("mode", &self.mode)
            .field("codec", &self.codec)
            .field("buffer", &self.buffer)
            .finish_non_exhaustive()
    }
}

impl<T> NatsConfig<T> {
    /// A configuration for `server` (`nats://host:port`, `tls://host:port`;
    /// several separated by commas), core NATS, JSON, nothing exported or imported yet.
    pub fn new(server: impl Into<String>) -> Self {
        NatsConfig {
            server: server.into(),
            auth: Auth::None,
            tls: Tls::default(),
            exports: Vec::new(),
            imports: Vec::new(),
            mode: Mode::Core,
            codec: Codec::Json,
            buffer: 1024,
            dead_letter_prefix: "busline-dead".into(),
            name: "busline".into(),
            connect_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
            status_map: None,
        }
    }

    /// Credentials.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// The credentials chosen.
    pub fn auth_ref(&self) -> &Auth {
        &self.auth
    }

    /// TLS settings.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// Sends local events whose topic matches `pattern` to NATS (same subject).
    pub fn export(mut self, pattern: impl Into<String>) -> Self {
        self.exports.push(pattern.into());
        self
    }

    /// Brings NATS messages whose subject matches `pattern` onto the local bus.
    /// A pattern another one covers (`o.b` beside `o.>`) adds nothing, so
    /// each message comes once. Patterns that only partly overlap (`a.*`
    /// and `*.b`) each receive the messages they share; the imports share
    /// one memory of delivered ids, so the second copy is dropped and
    /// counted as `import_duplicates`.
    pub fn import(mut self, pattern: impl Into<String>) -> Self {
        self.imports.push(pattern.into());
        self
    }

    /// At-least-once over JetStream with these settings.
    pub fn jetstream(mut self, js: JetStreamConfig) -> Self {
        self.mode = Mode::JetStream(js);
        self
    }

    /// At-most-once over core NATS (the default).
    pub fn core(mut self) -> Self {
        self.mode = Mode::Core;
        self
    }

    /// Payload codec for outgoing events.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Events waiting to go out (the exporter's queue on the bus). When it is
    /// full — e.g. while the server is away — local publishers wait
    /// (backpressure); nothing is dropped. Default 1024.
    pub fn buffer(mut self, events: usize) -> Self {
        self.buffer = events.max(1);
        self
    }

    /// Subject prefix for dead letters (`<prefix>.<original subject>`). Default `busline-dead`.
    pub fn dead_letter_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.dead_letter_prefix = prefix.into();
        self
    }

    /// Connection name shown by the server's monitoring. Default `busline`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How long the first connection may take. Default 5 s. Four times it
    /// is how long the exporter's connection may wait for the server to
    /// take a write, or to answer its keepalive `PING` (sent that often),
    /// before it counts as broken and is made again.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long [`shutdown`](crate::NatsTransport::shutdown) may take to send
    /// what is queued and, on JetStream, to get it acknowledged (waiting for
    /// a server that is away). Past it, shutdown gives up and counts what
    /// it gave up on ([`NatsError::ShutdownTimedOut`](crate::NatsError::ShutdownTimedOut)).
    /// Default 30 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Publishes connection status changes on the local bus as
    /// `$sys.nats.<state>` events, made by `map` (return `None` to skip one).
    pub fn status_events(
        mut self,
        map: impl Fn(&StatusEvent) -> Option<T> + Send + Sync + 'static,
    ) -> Self {
        self.status_map = Some(Arc::new(map));
        self
    }
}
