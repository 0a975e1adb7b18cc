//! `POST /v1/metrics`: the handler (on the web address and on `--otlp`),
//! and the `--otlp` listener.
//!
//! The `otlp` listener serves only `/v1/metrics` (404 elsewhere). With
//! `--token` it needs `Authorization: Bearer <token>` (the SDKs send it with
//! `OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<token>`). It has no
//! `Host` check: that guards the web page's API from other sites' pages, and
//! a browser cannot post protobuf or JSON to another origin without a
//! preflight this listener never answers.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use busline::{BoxError, Context, Module};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use prost::Message as _;

use super::{gunzip, BodyError, Converted, Encoding, Receiver, MAX_BODY};
use crate::monitor::ingest_status::IngestStatus;
use crate::monitor::metric::Metric;
use crate::monitor::publish_timeout::PUBLISH_TIMEOUT;

/// `google.rpc.Status`, the body of OTLP error answers (declared with
/// prost's derive: no protobuf is written by hand).
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// gRPC codes of the answers.
const INVALID_ARGUMENT: i32 = 3;
const UNAVAILABLE: i32 = 14;

fn status(code: StatusCode, encoding: Encoding, message: String) -> Response {
    let grpc = if code == StatusCode::SERVICE_UNAVAILABLE {
        UNAVAILABLE
    } else {
        INVALID_ARGUMENT
    };
    let s = Status {
        code: grpc,
        message,
    };
    let body = match encoding {
        Encoding::Protobuf => s.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&s).unwrap_or_default(),
    };
    (code, [(header::CONTENT_TYPE, encoding.mime())], body).into_response()
}

/// Handles one `POST /v1/metrics`: decodes, converts, publishes lossless,
/// counts in the OTLP ingest counters and answers as the OTLP spec says.
pub async fn handle(
    ctx: &Context<Metric>,
    intake: &Intake,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let counters = &intake.ingest.otlp;
    counters.received.fetch_add(1, Ordering::Relaxed);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(encoding) = Encoding::of(content_type) else {
        counters.malformed("wrong content type", content_type, 1);
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Encoding::Protobuf,
            format!(
                "Content-Type {content_type:?} is not OTLP: send application/x-protobuf or application/json"
            ),
        );
    };
    let body = match body {
        Ok(b) => b,
        Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            counters.malformed("body too large", "", 1);
            return status(
                StatusCode::PAYLOAD_TOO_LARGE,
                encoding,
                format!("the body is larger than {MAX_BODY} bytes; send smaller batches"),
            );
        }
        Err(rej) => {
            counters.malformed("unreadable body", &rej.body_text(), 1);
            return status(rej.status(), encoding, rej.body_text());
        }
    };
    let gzip = match gzipped(headers) {
        Ok(g) => g,
        Err(why) => {
            counters.malformed("unsupported content encoding", &why, 1);
            return status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                encoding,
                format!("Content-Encoding {why:?} is not supported: send gzip or no encoding"),
            );
        }
    };
    let plain;
    let bytes: &[u8] = if gzip {
        match gunzip(&body) {
            Ok(b) => {
                plain = b;
                &plain
            }
            Err(e) => return refuse(intake, encoding, &e, &body),
        }
    } else {
        &body
    };
    let (metrics, converted) = match intake.receiver.decode_and_convert(bytes, encoding) {
        Ok(c) => c,
        Err(e) => return refuse(intake, encoding, &e, bytes),
    };
    for (reason, (n, metric)) in &converted.rejected.by_reason {
        counters.malformed(reason, &format!("metric {metric:?}"), *n);
    }
    if let Err(resp) = publish(ctx, metrics, encoding).await {
        return resp;
    }
    counters
        .accepted
        .fetch_add(converted.accepted, Ordering::Relaxed);
    accepted(&converted, encoding)
}

/// Whether the body is gzipped (`Content-Encoding`), or the encoding it
/// names that is not supported.
fn gzipped(headers: &HeaderMap) -> Result<bool, String> {
    match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    {
        None | Some("") | Some("identity") => Ok(false),
        Some(e) if e.eq_ignore_ascii_case("gzip") => Ok(true),
        Some(other) => Err(other.to_string()),
    }
}

/// Publishes each batch of converted metrics on its topic, or answers 503
/// with how many went out before the bus stayed full.
async fn publish(
    ctx: &Context<Metric>,
    metrics: Vec<(String, Metric)>,
    encoding: Encoding,
) -> Result<(), Response> {
    let n = metrics.len();
    for (i, (topic, m)) in metrics.into_iter().enumerate() {
        let send = ctx.send(busline::Message::new(m).topic(topic).source("otlp"));
        let why = match tokio::time::timeout(PUBLISH_TIMEOUT, send).await {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!(
                "the bus stayed full for {}s (a lossless subscriber is behind)",
                PUBLISH_TIMEOUT.as_secs()
            ),
        };
        return Err(status(
            StatusCode::SERVICE_UNAVAILABLE,
            encoding,
            format!("published {i} of {n} batches, then {why}; retry later"),
        ));
    }
    Ok(())
}

/// The OTLP answer to a body that was taken: a partial success names what
/// was rejected.
fn accepted(converted: &Converted, encoding: Encoding) -> Response {
    let rejected = converted.rejected.total();
    let resp = ExportMetricsServiceResponse {
        partial_success: (rejected > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: rejected as i64,
            error_message: converted.rejected.message(),
        }),
    };
    let body = match encoding {
        Encoding::Protobuf => resp.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&resp).unwrap_or_default(),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoding.mime())],
        body,
    )
        .into_response()
}

fn refuse(intake: &Intake, encoding: Encoding, e: &BodyError, body: &[u8]) -> Response {
    let example = String::from_utf8_lossy(&body[..body.len().min(64)]).into_owned();
    intake.ingest.otlp.malformed(e.reason(), &example, 1);
    let code = match e {
        BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    status(code, encoding, e.to_string())
}

/// What taking OTLP in needs of the monitor: the cumulative series (shared
/// by the web route and the `--otlp` listener) and the ingest counters.
#[derive(Clone)]
pub struct Intake {
    pub receiver: Arc<Receiver>,
    pub ingest: Arc<IngestStatus>,
}

/// The `--otlp` listener: owns its bound socket, so a restart reuses the port.
#[derive(Clone)]
pub struct OtlpListener {
    listener: Arc<std::net::TcpListener>,
    addr: SocketAddr,
    token: Option<Arc<str>>,
    intake: Intake,
}

#[derive(Clone)]
struct ListenerState {
    ctx: Context<Metric>,
    intake: Intake,
    token: Option<Arc<str>>,
}

impl OtlpListener {
    /// Binds `addr` now, so a busy port is reported before anything starts.
    pub fn bind(
        addr: SocketAddr,
        token: Option<String>,
        intake: Intake,
    ) -> anyhow::Result<OtlpListener> {
        let listener = std::net::TcpListener::bind(addr).map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {addr} for OTLP/HTTP: {e} (choose another with --otlp ADDR)"
            )
        })?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        Ok(OtlpListener {
            listener: Arc::new(listener),
            addr,
            token: token.map(Arc::from),
            intake,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Module<Metric> for OtlpListener {
    fn name(&self) -> &str {
        "otlp"
    }

    async fn run(&mut self, ctx: Context<Metric>) -> Result<(), BoxError> {
        let state = ListenerState {
            ctx: ctx.clone(),
            intake: self.intake.clone(),
            token: self.token.clone(),
        };
        let app = Router::new()
            .route("/v1/metrics", post(listener_metrics))
            .fallback(|req: Request| async move {
                (
                    StatusCode::NOT_FOUND,
                    format!(
                        "no such route: {} {} (this listener serves POST /v1/metrics)",
                        req.method(),
                        req.uri().path()
                    ),
                )
            })
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .layer(middleware::from_fn_with_state(state.clone(), bearer))
            .with_state(state);
        let listener = tokio::net::TcpListener::from_std(self.listener.try_clone()?)?;
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { ctx.shutdown_requested().await })
            .await?;
        Ok(())
    }
}

async fn listener_metrics(
    State(st): State<ListenerState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&st.ctx, &st.intake, &headers, body).await
}

async fn bearer(State(st): State<ListenerState>, req: Request, next: Next) -> Response {
    let Some(token) = &st.token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "this listener needs `Authorization: Bearer <token>` (--token)",
        )
            .into_response(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
