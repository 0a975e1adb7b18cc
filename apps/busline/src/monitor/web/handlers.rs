//! The route handlers: the page and its assets, the snapshot (once as
//! JSON, or as a server-sent event stream), events and OTLP metrics sent
//! in, Prometheus text, and JSON errors.

use std::convert::Infallible;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use futures::Stream;
use serde_json::json;

use super::AppState;
use crate::monitor::ingest;
use crate::monitor::otlp;
use crate::monitor::publish_timeout::PUBLISH_TIMEOUT;

const PAGE: &str = include_str!("../../../assets/dashboard.html");
const SCRIPT: &str = include_str!("../../../assets/dashboard.js");
const STYLE: &str = include_str!("../../../assets/dashboard.css");

pub(super) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

pub(super) async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(PAGE),
    )
        .into_response()
}

pub(super) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

pub(super) async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

pub(super) async fn not_found(req: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no such route: {} {}", req.method(), req.uri().path()),
    )
}

pub(super) async fn summary(State(st): State<AppState>) -> Response {
    Json(st.shared.snapshot(st.ctx.bus(), false).await).into_response()
}

pub(super) async fn stream(
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

pub(super) async fn events(
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

/// `POST /v1/metrics`: OTLP/HTTP ([`otlp`]).
pub(super) async fn otlp_metrics(
    State(st): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    otlp::http::handle(&st.ctx, &st.shared.otlp_intake(), &headers, body).await
}

pub(super) async fn prometheus(State(st): State<AppState>) -> Response {
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
