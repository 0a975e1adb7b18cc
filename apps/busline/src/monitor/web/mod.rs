//! The web dashboard and HTTP API (axum).
//!
//! | route | what |
//! | --- | --- |
//! | `GET /` | the dashboard page (HTML/CSS/JS inside the binary; charts on `<canvas>`) |
//! | `GET /api/stream` | server-sent events: a `snapshot` every second (the first with history) |
//! | `GET /api/summary` | the current snapshot as JSON |
//! | `POST /api/events` | metrics from real services: one JSON event or an array, the seed's shapes or the generic `{"type":"samples","source":…,"samples":[…]}` ([`ingest`](super::ingest)); counted in `/api/summary` → `ingest.api` |
//! | `GET /metrics` | Prometheus text: the bus's counters and the monitor's own |
//! | `POST /v1/metrics` | OTLP/HTTP metrics, protobuf or JSON ([`otlp`](super::otlp); host and token checks as for the API, bodies up to 4 MiB) |
//!
//! ## `/api/summary`
//!
//! One JSON object; the page reads the same object from `/api/stream`.
//! Besides the seed's fields (`summary`: the last 1 s summary, `history`,
//! `alert`, `alerts`, `recent_errors`, `bus`, `modules`, `settings`, …):
//!
//! | field | what |
//! | --- | --- |
//! | `series` | every series, by source then name: `source`, `name` and `labels` as sent, `series` (`name{k="v"}`), `kind`, `second` and `minute` statistics (`count`, `rate`, `sum`, `mean`, `min`, `max`, `p50`, `p90`, `p99`, `last`, `distinct`, as the kind has them), `value` (a gauge's current value), `last_message` (errors), `idle_s` ([`series`](super::series)) |
//! | `series_status` | `at_ms` (when the series were taken), `count`, `overflow` (`max_series`, `samples` turned away, `by_name`, `other_names`), `too_old`, `bad_histograms`, `forgotten`, `missed` |
//! | `ingest` | per protocol (`statsd`, `otlp`, `api`, `scrape`): `received`, `accepted`, `malformed` (and `malformed_by_reason`, `examples`), `kernel_dropped`; `targets`: scrape targets with `up` |
//!
//! `series` and `series_status` are `null` in a process that does not run
//! the dashboard (and so no series store).
//!
//! The page lists the series (a text filter narrows the list; a click
//! charts one), and shows `rules` — alert rules with `name`, `state`
//! (`ok`/`pending`/`firing`), `value` and `expr` — when the snapshot has
//! them (else the seed's error-rate alert as one rule), and the ingest
//! counters.
//!
//! ## Who may talk to it
//!
//! - **Host header.** A request whose `Host` is not a loopback name
//!   (`localhost`, `127.0.0.1`, `[::1]`), the bound address, or a name given
//!   with `--allow-host`, is refused with 403: a web page from another site
//!   cannot reach the API through DNS rebinding. (When bound to an unspecified
//!   address such as `0.0.0.0`, any IP-literal host is accepted too: DNS
//!   rebinding needs a name.)
//! - **JSON only.** `POST /api/events` needs `Content-Type:
//!   application/json` (415 otherwise): a page on another site can make a
//!   browser POST `text/plain` to a local monitor without asking first, but
//!   not JSON (the browser's preflight fails), so it cannot inject events.
//! - **Token.** With `--token`, every route but the static assets needs
//!   `Authorization: Bearer <token>`, or `?token=<token>` on a `GET` (so a
//!   browser can open the page and its event stream). Binding beyond loopback
//!   without a token is refused at start-up.
//! - **Body size.** Bodies over `--max-body` bytes get 413; bad events 400 or
//!   422 with a message naming the field; nothing of a refused body is
//!   published.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use busline::{BoxError, Context, Module};
use futures::Stream;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::sync::watch;

use super::ingest;
use super::metric::Metric;
use super::publish_timeout::PUBLISH_TIMEOUT;
use super::Shared;

const PAGE: &str = include_str!("../../../assets/dashboard.html");
const SCRIPT: &str = include_str!("../../../assets/dashboard.js");
const STYLE: &str = include_str!("../../../assets/dashboard.css");

/// The web module's settings.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The API's bearer token.
    pub token: Option<String>,
    /// Extra names accepted in the `Host` header.
    pub allow_host: Vec<String>,
    /// Request body limit in bytes.
    pub max_body: usize,
}

/// The web module: owns the bound listener, so a restart reuses the port.
#[derive(Clone)]
pub struct Web {
    listener: Arc<std::net::TcpListener>,
    addr: SocketAddr,
    config: WebConfig,
    shared: Arc<Shared>,
    prom: PrometheusHandle,
}

#[derive(Clone)]
struct AppState {
    ctx: Context<Metric>,
    shared: Arc<Shared>,
    token: Option<Arc<str>>,
    hosts: Arc<Hosts>,
    max_body: usize,
    prom: PrometheusHandle,
    stop: watch::Receiver<bool>,
}

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

impl Web {
    /// Binds `addr` now, so a busy port is reported before anything starts.
    pub fn bind(
        addr: SocketAddr,
        config: WebConfig,
        shared: Arc<Shared>,
        prom: PrometheusHandle,
    ) -> anyhow::Result<Web> {
        let listener = std::net::TcpListener::bind(addr).map_err(|e| {
            anyhow::anyhow!("cannot listen on {addr} for the web dashboard: {e} (choose another with --web ADDR, or --no-web)")
        })?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        Ok(Web {
            listener: Arc::new(listener),
            addr,
            config,
            shared,
            prom,
        })
    }

    /// The URL to open (with the token, if there is one).
    pub fn url(&self) -> String {
        let host = if self.addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", self.addr.port())
        } else {
            self.addr.to_string()
        };
        match &self.config.token {
            Some(t) => format!("http://{host}/?token={}", percent_encode(t)),
            None => format!("http://{host}/"),
        }
    }
}

impl Module<Metric> for Web {
    fn name(&self) -> &str {
        "web"
    }

    /// Serves until shutdown; open event streams are ended first.
    async fn run(&mut self, ctx: Context<Metric>) -> Result<(), BoxError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let state = AppState {
            ctx: ctx.clone(),
            shared: self.shared.clone(),
            token: self.config.token.as_deref().map(Arc::from),
            hosts: Arc::new(Hosts::new(self.addr, &self.config.allow_host)),
            max_body: self.config.max_body,
            prom: self.prom.clone(),
            stop: stop_rx,
        };
        let app = router(state);
        let listener = tokio::net::TcpListener::from_std(self.listener.try_clone()?)?;
        let shutdown = async move {
            ctx.shutdown_requested().await;
            stop_tx.send(true).ok();
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/assets/dashboard.js", get(script))
        .route("/assets/dashboard.css", get(style))
        .route("/api/summary", get(summary))
        .route("/api/stream", get(stream))
        .route("/api/events", post(events))
        .route("/metrics", get(prometheus))
        .route(
            "/v1/metrics",
            post(otlp_metrics).layer(DefaultBodyLimit::max(super::otlp::MAX_BODY)),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.max_body))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn_with_state(state.clone(), host_check))
        .with_state(state)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

async fn host_check(State(st): State<AppState>, req: Request, next: Next) -> Response {
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

async fn auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
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
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
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

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(PAGE),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

async fn not_found(req: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no such route: {} {}", req.method(), req.uri().path()),
    )
}

async fn summary(State(st): State<AppState>) -> Response {
    Json(st.shared.snapshot(st.ctx.bus(), false).await).into_response()
}

async fn stream(
    State(st): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let mut updates = st.shared.subscribe_updates();
    updates.mark_unchanged();
    let first = st.shared.snapshot(st.ctx.bus(), true).await;
    let state = (st, updates, Some(first));
    let s = futures::stream::unfold(state, |(st, mut updates, first)| async move {
        if let Some(snap) = first {
            let ev = SseEvent::default()
                .event("snapshot")
                .json_data(&snap)
                .ok()?;
            return Some((Ok(ev), (st, updates, None)));
        }
        let mut stop = st.stop.clone();
        if *stop.borrow() {
            return None;
        }
        tokio::select! {
            r = updates.changed() => r.ok()?,
            _ = stop.changed() => return None,
        }
        let snap = st.shared.snapshot(st.ctx.bus(), false).await;
        let ev = SseEvent::default()
            .event("snapshot")
            .json_data(&snap)
            .ok()?;
        Some((Ok(ev), (st, updates, None)))
    });
    Sse::new(s).keep_alive(KeepAlive::default())
}

async fn events(
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // JSON only: a web page on another site can POST `text/plain` to a
    // local monitor without the browser asking first (no preflight), but
    // not `application/json`.
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    let api = &st.shared.ingest.api;
    api.received.fetch_add(1, Ordering::Relaxed);
    if !json {
        st.shared.rejected.fetch_add(1, Ordering::Relaxed);
        api.malformed("not JSON (Content-Type)", "", 1);
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the events as JSON, with `Content-Type: application/json`",
        );
    }
    let body = match body {
        Ok(b) => b,
        Err(rej) => {
            st.shared.rejected.fetch_add(1, Ordering::Relaxed);
            let status = rej.status();
            api.malformed("unreadable or too large body", "", 1);
            let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!(
                    "request body is larger than the limit of {} bytes (--max-body); send fewer events per request",
                    st.max_body
                )
            } else {
                rej.body_text()
            };
            return error(status, msg);
        }
    };
    let metrics = match ingest::parse_events(&body) {
        Ok(m) => m,
        Err(e) => {
            st.shared.rejected.fetch_add(1, Ordering::Relaxed);
            let reason = match e.reason.as_str() {
                r if r.starts_with("malformed JSON") => "malformed JSON",
                r if r.starts_with("empty body") => "empty body",
                _ => "invalid event",
            };
            api.malformed(reason, &String::from_utf8_lossy(&body), 1);
            let status =
                if e.reason.starts_with("malformed JSON") || e.reason.starts_with("empty body") {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                };
            return (
                status,
                Json(json!({ "error": e.to_string(), "field": e.field, "index": e.index })),
            )
                .into_response();
        }
    };
    let n = metrics.len();
    let samples = ingest::sample_count(&metrics);
    let mut published = 0usize;
    for m in metrics {
        let samples = m.sample_count() as u64;
        let send = st.ctx.send(m.message("api"));
        match tokio::time::timeout(PUBLISH_TIMEOUT, send).await {
            Ok(Ok(_)) => published += 1,
            Ok(Err(e)) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("published {published} of {n} events, then: {e}"),
                )
            }
            Err(_) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "published {published} of {n} events, then the bus stayed full for {}s (a lossless subscriber is behind); retry later",
                        PUBLISH_TIMEOUT.as_secs()
                    ),
                )
            }
        }
        st.shared.ingested.fetch_add(1, Ordering::Relaxed);
        api.accepted.fetch_add(samples, Ordering::Relaxed);
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({ "accepted": published, "samples": samples })),
    )
        .into_response()
}

/// `POST /v1/metrics`: OTLP/HTTP ([`otlp`](super::otlp)).
async fn otlp_metrics(
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    super::otlp::http::handle(&st.ctx, &st.shared.otlp_intake(), &headers, body).await
}

async fn prometheus(State(st): State<AppState>) -> Response {
    st.ctx.bus().stats().export();
    st.shared.export_metrics();
    st.shared.modules().await;
    st.prom.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.prom.render(),
    )
        .into_response()
}

/// `s` with every byte but unreserved ones (`A-Z a-z 0-9 - . _ ~`) as `%XX`,
/// for a query string.
fn percent_encode(s: &str) -> String {
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

#[cfg(test)]
mod tests;
