//! Who may talk to the dashboard: the `Host` header check against DNS
//! rebinding, the bearer token, and the percent coding of the token in a
//! query string.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::handlers::error;
use super::AppState;

/// Which `Host` headers are accepted.
#[derive(Debug, Clone)]
pub struct Hosts {
    names: Vec<String>,
    any_ip: bool,
}

impl Hosts {
    /// Loopback names, the bound address, and `extra`.
    pub fn new(bound: SocketAddr, extra: &[String]) -> Hosts {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let ip = bound.ip();
        if !ip.is_unspecified() {
            names.push(match ip {
                std::net::IpAddr::V4(v4) => v4.to_string(),
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            });
        }
        names.extend(
            extra
                .iter()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase()),
        );
        Hosts {
            names,
            any_ip: ip.is_unspecified(),
        }
    }

    /// Whether a `Host` header value (with or without port) is accepted.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let name = if host.starts_with('[') {
            match host.find(']') {
                Some(end) => &host[..=end],
                None => return false,
            }
        } else {
            match host.rsplit_once(':') {
                Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
                Some(_) => return false,
                None => host.as_str(),
            }
        };
        let name = name.trim_end_matches('.');
        if self.names.iter().any(|n| n == name) {
            return true;
        }
        self.any_ip
            && name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok()
    }

    fn list(&self) -> String {
        self.names.join(", ")
    }
}

pub(super) async fn host_check(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    match host {
        None => error(StatusCode::BAD_REQUEST, "missing Host header"),
        Some(h) if !st.hosts.allows(&h) => error(
            StatusCode::FORBIDDEN,
            format!(
                "refused: Host {h:?} is not this server (DNS-rebinding protection); accepted: {} \
                 (add names with --allow-host)",
                st.hosts.list()
            ),
        ),
        Some(_) => next.run(req).await,
    }
}

pub(super) async fn auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = &st.token else {
        return next.run(req).await;
    };
    if req.uri().path().starts_with("/assets/") {
        return next.run(req).await;
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let query = (req.method() == Method::GET)
        .then(|| query_param(req.uri().query().unwrap_or(""), "token"))
        .flatten();
    let ok = bearer.is_some_and(|b| same(b.as_bytes(), token.as_bytes()))
        || query
            .as_deref()
            .is_some_and(|q| same(q.as_bytes(), token.as_bytes()));
    if ok {
        return next.run(req).await;
    }
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        if bearer.is_some() || query.is_some() {
            "wrong token"
        } else {
            "this monitor needs a token: send `Authorization: Bearer <token>` (or add ?token=<token> to the page URL)"
        },
    );
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// Constant-time comparison (for equal lengths).
pub(super) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 2 < b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (hex, b[i]) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, c) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `s` with every byte but unreserved ones (`A-Z a-z 0-9 - . _ ~`) as `%XX`,
/// for a query string.
pub(super) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
