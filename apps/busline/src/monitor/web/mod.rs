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
//!
//! The routes and their state are here; the `Host` and token checks in
//! [`guard`], the route handlers in [`handlers`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use busline::{BoxError, Context, Module};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use super::metric::Metric;
use super::Shared;

mod guard;
mod handlers;

pub use guard::Hosts;
use guard::{auth, host_check, percent_encode};
use handlers::{events, not_found, otlp_metrics, page, prometheus, script, stream, style, summary};

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

#[cfg(test)]
mod tests;
