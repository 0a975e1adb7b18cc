//! Opening the wire connection: TCP, the server's `INFO`, TLS, `CONNECT`
//! with the resolved credentials, and a `PING` that must come back.

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::addr::Addr;
use super::info::Info;
use super::io::{read_line, Io, Reader, Writer};
use crate::connection::tls::tls_error;
use crate::connection::Settings;
use crate::error::ConnectCause;

/// TCP, `INFO`, TLS if wanted or required, `CONNECT` and a `PING` that must
/// come back as `PONG` (so a refused credential fails here).
pub(crate) async fn handshake(
    addr: &Addr,
    settings: &Settings,
    name: &str,
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
    let want_tls = addr.tls || settings.tls.required;
    let io: Box<dyn Io> = if want_tls || info.tls_required {
        if !(info.tls_required || info.tls_available) {
            return Err((
                ConnectCause::Tls,
                format!("{target} does not offer TLS, and TLS is required here"),
            ));
        }
        // The server sent only its INFO and waits: nothing is buffered.
        let tcp = tcp.into_inner();
        let connector = settings.tls.connector()?;
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
    let connect = connect_json(addr, settings, name, &info, want_tls || info.tls_required)?;
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
    settings: &Settings,
    name: &str,
    info: &Info,
    tls: bool,
) -> Result<String, (ConnectCause, String)> {
    let mut o = serde_json::json!({
        "verbose": false,
        "pedantic": false,
        "tls_required": tls,
        "name": name,
        "lang": "rust",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": 1,
        "echo": true,
        "headers": true,
        "no_responders": false,
    });
    settings
        .credentials
        .connect_fields(&mut o, addr.user.as_ref(), info.nonce.as_deref())?;
    Ok(o.to_string())
}
