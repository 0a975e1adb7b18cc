//! Connection settings, resolved once for both connections.
//!
//! A transport talks to its server over two connections: the `async-nats`
//! client (imports, JetStream acks and retries, reply inboxes, status) and
//! the exporter's own wire connection
//! ([`export::wire`](crate::export::wire), its publishes). [`Settings`]
//! holds what both are made with: the server, the connect timeout, the [credentials](auth) with any file read and parsed, and the
//! [TLS](tls) configuration with its certificates loaded. A wrong
//! credential file or certificate fails once, before either connects.
//! [`JetStreamStore`](crate::JetStreamStore) connects its client with the
//! same settings.

pub(crate) mod auth;
pub(crate) mod tls;

use std::time::Duration;

use futures::StreamExt;

use crate::config::{Auth, Tls};
use crate::error::{connect_error, ConnectCause, NatsError};

pub(crate) use self::auth::Credentials;
pub(crate) use self::tls::TlsSettings;

/// What a connection to the server is made with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The server address as configured (one, or several separated by commas).
    pub(crate) server: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) credentials: Credentials,
    pub(crate) tls: TlsSettings,
}

impl Settings {
    /// Reads and checks the credentials and TLS files: one that cannot be
    /// read or used is a connect error naming the server, the cause
    /// ([`ConnectCause::Authentication`] or [`ConnectCause::Tls`]) and the file.
    pub(crate) fn resolve(
        server: &str,
        connect_timeout: Duration,
        auth: &Auth,
        tls: &Tls,
    ) -> Result<Self, NatsError> {
        let failed = |(cause, detail): (ConnectCause, String)| NatsError::Connect {
            server: server.to_string(),
            cause,
            detail,
        };
        Ok(Settings {
            server: server.to_string(),
            connect_timeout,
            credentials: Credentials::resolve(auth).map_err(failed)?,
            tls: TlsSettings::resolve(tls).map_err(failed)?,
        })
    }

    /// `async-nats` options with the credentials, TLS and connect timeout,
    /// reconnecting for ever with a pause of 50 ms more per attempt (at most 1 s).
    pub(crate) fn client_options(&self) -> async_nats::ConnectOptions {
        self.tls
            .client_options(self.credentials.client_options())
            .connection_timeout(self.connect_timeout)
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64 * 50).min(1000))
            })
    }

    /// Connects the `async-nats` client with `opts`; a failure names the
    /// server and the cause.
    pub(crate) async fn connect_client(
        &self,
        opts: async_nats::ConnectOptions,
    ) -> Result<async_nats::Client, NatsError> {
        opts.connect(self.server.as_str())
            .await
            .map_err(|e| connect_error(&self.server, e))
    }
}

/// Waits until the server has processed everything `client` sent before:
/// a message to a private inbox comes back only after that
/// (`Client::flush` only waits for the socket write). For at most `timeout`.
pub(crate) async fn round_trip(
    client: &async_nats::Client,
    timeout: Duration,
) -> Result<(), String> {
    // All of it under the timeout: while the client reconnects, sending
    // the subscribe and the marker waits for room in its full buffer too.
    let trip = async {
        let inbox = client.new_inbox();
        let mut sub = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| e.to_string())?;
        client
            .publish(inbox, bytes::Bytes::new())
            .await
            .map_err(|e| e.to_string())?;
        match sub.next().await {
            Some(_) => Ok(()),
            None => Err("connection closed".to_string()),
        }
    };
    tokio::time::timeout(timeout, trip)
        .await
        .unwrap_or_else(|_| Err(format!("no answer from the server within {timeout:?}")))
}
