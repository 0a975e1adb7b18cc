//! Errors of the NATS transport: small enums, data in the variants.

use std::fmt;

/// Why a connection could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectCause {
    /// The server refused the credentials (wrong user/password, token, nkey or creds file).
    Authorization,
    /// Signing the server's nonce failed (a bad nkey seed or creds file).
    Authentication,
    /// TLS failed: an untrusted certificate, TLS required by one side only, a bad CA file.
    Tls,
    /// Nothing answered at the address, or the connection broke during the handshake.
    Unreachable,
    /// The handshake did not finish in time.
    TimedOut,
    /// The server address could not be parsed or resolved.
    Address,
}

impl fmt::Display for ConnectCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectCause::Authorization => "authorization violation",
            ConnectCause::Authentication => "authentication failed",
            ConnectCause::Tls => "tls error",
            ConnectCause::Unreachable => "server unreachable",
            ConnectCause::TimedOut => "connect timed out",
            ConnectCause::Address => "bad server address",
        })
    }
}

/// An error of the NATS transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// Connecting to the server failed at startup. Never retried with weaker
    /// settings: no fallback to anonymous access or plaintext.
    #[error("cannot connect to nats server `{server}`: {cause}: {detail}")]
    Connect {
        /// The server address as configured.
        server: String,
        /// The kind of failure.
        cause: ConnectCause,
        /// The underlying error's message.
        detail: String,
    },
    /// A configuration value is invalid (a pattern, a name, a file).
    #[error("invalid nats transport configuration: {0}")]
    Config(String),
    /// Setting up a JetStream stream or consumer failed.
    #[error("jetstream setup of `{name}` on `{server}` failed: {detail}")]
    JetStreamSetup {
        /// The stream or consumer.
        name: String,
        /// The server address.
        server: String,
        /// The underlying error's message.
        detail: String,
    },
    /// An event is larger than the server accepts (its `max_payload`).
    #[error("event {id} on `{subject}` is {size} bytes, more than the server's max_payload of {max} bytes")]
    PayloadTooLarge {
        /// The subject it was meant for.
        subject: String,
        /// The event id.
        id: String,
        /// Encoded size: payload plus headers.
        size: usize,
        /// The server's limit.
        max: usize,
    },
    /// An event could not be encoded.
    #[error("cannot encode event {id} on `{subject}`: {detail}")]
    Encode {
        /// The subject it was meant for.
        subject: String,
        /// The event id.
        id: String,
        /// Why.
        detail: String,
    },
    /// A message could not be decoded into an event.
    #[error("cannot decode message on `{subject}`: {detail}")]
    Decode {
        /// The subject it arrived on.
        subject: String,
        /// Why.
        detail: String,
    },
    /// The transport has been shut down.
    #[error("the nats transport is shut down")]
    Shutdown,
    /// [`shutdown`](crate::NatsTransport::shutdown) reached its deadline
    /// (see [`NatsConfig::shutdown_timeout`](crate::NatsConfig::shutdown_timeout))
    /// with events it could not hand over (JetStream: unacknowledged; core:
    /// not yet taken by the client), the server away: it gave up on them.
    #[error(
        "shutdown gave up after {waited:?}: {abandoned} events not handed over to {server} \
         (counted in `abandoned`; JetStream may hold some of them)"
    )]
    ShutdownTimedOut {
        /// The server.
        server: String,
        /// How long it waited.
        waited: std::time::Duration,
        /// Events given up on.
        abandoned: u64,
        /// The transport's final counters.
        stats: Box<crate::TransportStats>,
    },
    /// A core NATS flush got no confirmation from the server in time.
    #[error("flush to {server} not confirmed within {waited:?}: {reason}")]
    FlushTimedOut {
        /// The server.
        server: String,
        /// How long it waited.
        waited: std::time::Duration,
        /// What the round trip reported.
        reason: String,
    },
    /// A core NATS flush: the connection was lost and re-established since
    /// events it covers were handed to the client; some may be lost.
    #[error("core nats flush to {server}: the connection was re-established since {sent} events were sent; some may be lost (at-most-once)")]
    Reconnected {
        /// The server.
        server: String,
        /// Events handed to the client since the previous flush.
        sent: u64,
    },
    /// The local bus was closed.
    #[error("the local bus is closed")]
    BusClosed,
    /// A subscription on the local bus could not be made.
    #[error("cannot subscribe to `{pattern}`: {detail}")]
    Subscribe {
        /// The pattern.
        pattern: String,
        /// Why.
        detail: String,
    },
    /// A subscription or JetStream consumer on the server could not be made.
    #[error("cannot subscribe to `{pattern}` on {server}: {detail}")]
    ServerSubscribe {
        /// The server.
        server: String,
        /// The subject pattern (and the consumer, for JetStream).
        pattern: String,
        /// Why.
        detail: String,
    },
}

pub(crate) fn connect_error(server: &str, err: async_nats::ConnectError) -> NatsError {
    use async_nats::ConnectErrorKind as K;
    let detail = err.to_string();
    let lower = detail.to_ascii_lowercase();
    // rustls reports certificate problems as I/O errors.
    let tls_io = [
        "certificate",
        "tls",
        "handshake",
        "corrupt message",
        "peer sent",
    ]
    .iter()
    .any(|w| lower.contains(w));
    let cause = match err.kind() {
        K::AuthorizationViolation => ConnectCause::Authorization,
        K::Authentication => ConnectCause::Authentication,
        K::Tls => ConnectCause::Tls,
        K::TimedOut => ConnectCause::TimedOut,
        K::ServerParse | K::Dns => ConnectCause::Address,
        K::Io if tls_io => ConnectCause::Tls,
        _ => ConnectCause::Unreachable,
    };
    NatsError::Connect {
        server: server.to_string(),
        cause,
        detail,
    }
}
