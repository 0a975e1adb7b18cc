//! Metrics from real services: the JSON the web API accepts, and `busline publish`.
//!
//! A request body is one event object or a JSON array of them: the seed's
//! shapes (`request`, `db_query`, `error`; see [`metric`](super::metric)),
//! or the generic form, samples of any metric from one source:
//!
//! ```json
//! {"type":"samples","source":"shop","samples":[
//!   {"name":"orders","labels":{"region":"eu"},"kind":"counter","value":3},
//!   {"name":"pool.size","kind":"gauge","value":12},
//!   {"name":"checkout.latency_ms","kind":"observation","value":42.5},
//!   {"name":"users","kind":"set","member":"alice"}
//! ]}
//! ```
//!
//! A sample has a `name`, optional `labels` (an object of strings), optional
//! `at_ms` (Unix milliseconds) and a `kind` with its fields, as in
//! [`sample`](super::sample): `counter`, `gauge`, `gauge_delta` (`value`),
//! `observation` (`value`, optional `weight`), `histogram` (`bounds`,
//! `counts`, optional `sum`/`min`/`max`), `set` (`member`), `error`
//! (`message`). Its samples are published as one event per topic
//! (`metrics.<source>.<name tokens>`). The whole body is checked before
//! anything is published: one bad event rejects the request and none of its
//! events reach the bus.
//!
//! ## What is checked
//!
//! - the body is JSON, an object or a non-empty array of at most
//!   [`MAX_EVENTS`] objects;
//! - `type` is `request`, `db_query`, `error` or `samples`, and every field
//!   of that type is present with the right JSON type, and no other field is;
//! - `path` starts with `/`; `latency_ms`/`duration_ms` are finite, `>= 0` and
//!   at most an hour; `status` is 100–599 (default 200); `source` is one topic
//!   token (letters, digits, `-`, `_`); texts are non-empty and bounded.
//! - `samples` (the generic form, see [`sample`](super::sample),
//!   `{"type":"samples","source":"web","samples":[{"name":"queue.depth","kind":"gauge","value":3}]}`):
//!   1 to [`MAX_SAMPLES`] samples, published one event per topic; each `name` a non-empty text,
//!   labels within [`sample_check`](super::sample_check)'s limits, a known `kind`,
//!   finite values (a `weight` > 0; histogram `bounds` ascending with one
//!   `counts` entry more), no unknown field.
//!
//! Every error names the event (by index, in an array) and the field
//! (`samples[2].value`).

use std::io::Read;

use anyhow::{bail, Context as _};
use clap::Args;
use serde::Deserialize;
use serde_json::Value;

use super::metric::Metric;
#[cfg(test)]
use super::sample::Value as SampleValue;

mod samples;
#[cfg(test)]
use samples::finite;
use samples::parse_sample;

/// The most events one request may carry.
pub const MAX_EVENTS: usize = 1000;
/// The longest `path`, `query` or `message`, in bytes.
pub const MAX_TEXT: usize = 4096;
/// The largest latency or duration accepted: one hour, in milliseconds.
pub const MAX_MS: f64 = 3_600_000.0;
/// The most samples one `samples` event may carry.
pub const MAX_SAMPLES: usize = 1000;

/// Why a request body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
#[non_exhaustive]
pub struct IngestError {
    /// Which event, when the body is an array.
    pub index: Option<usize>,
    /// The field at fault, if one is.
    pub field: Option<String>,
    /// What is wrong with it.
    pub reason: String,
}

impl IngestError {
    fn new(field: Option<&str>, reason: impl Into<String>) -> Self {
        IngestError {
            index: None,
            field: field.map(str::to_owned),
            reason: reason.into(),
        }
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        if let Some(i) = self.index {
            s.push_str(&format!("event {i}: "));
        }
        if let Some(f) = &self.field {
            s.push_str(&format!("field `{f}`: "));
        }
        s.push_str(&self.reason);
        s
    }
}

/// Parses and checks a request body: one event object or an array of them.
/// A `samples` event comes back as one metric per topic.
pub fn parse_events(body: &[u8]) -> Result<Vec<Metric>, IngestError> {
    let events = parse_documents(body)?;
    let mut out = Vec::with_capacity(events.len());
    for m in events {
        match m {
            Metric::Samples { source, samples } => out.extend(Metric::batches(&source, samples)),
            m => out.push(m),
        }
    }
    Ok(out)
}

/// How many samples `metrics` carry (a seed shape is one).
pub fn sample_count(metrics: &[Metric]) -> u64 {
    metrics.iter().map(|m| m.sample_count() as u64).sum()
}

fn parse_documents(body: &[u8]) -> Result<Vec<Metric>, IngestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(IngestError::new(
            None,
            "empty body: send a JSON event object or an array of them",
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| IngestError::new(None, format!("malformed JSON: {e}")))?;
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(IngestError::new(None, "the array holds no events"));
            }
            if items.len() > MAX_EVENTS {
                return Err(IngestError::new(
                    None,
                    format!(
                        "{} events in one request; at most {MAX_EVENTS}",
                        items.len()
                    ),
                ));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    parse_event(v).map_err(|mut e| {
                        e.index = Some(i);
                        e
                    })
                })
                .collect()
        }
        v => Ok(vec![parse_event(v)?]),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestIn {
    path: String,
    latency_ms: f64,
    #[serde(default = "ok_status")]
    status: u16,
}

fn ok_status() -> u16 {
    200
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DbQueryIn {
    query: String,
    duration_ms: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorIn {
    source: String,
    message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SamplesIn {
    source: String,
    samples: Vec<Value>,
}

/// Parses and checks one event object.
pub fn parse_event(value: Value) -> Result<Metric, IngestError> {
    let Value::Object(mut map) = value else {
        return Err(IngestError::new(
            None,
            format!("expected a JSON object, got {}", json_kind(&value)),
        ));
    };
    let kind = match map.remove("type") {
        None => {
            return Err(IngestError::new(
                Some("type"),
                "missing; expected one of `request`, `db_query`, `error`, `samples`",
            ))
        }
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(IngestError::new(
                Some("type"),
                format!("expected a string, got {}", json_kind(&other)),
            ))
        }
    };
    let rest = Value::Object(map);
    let metric = match kind.as_str() {
        "request" => request(rest)?,
        "db_query" => {
            let q: DbQueryIn = fields(rest)?;
            text("query", &q.query)?;
            millis("duration_ms", q.duration_ms)?;
            Metric::DbQuery {
                query: q.query,
                duration_ms: q.duration_ms,
            }
        }
        "error" => {
            let e: ErrorIn = fields(rest)?;
            source_token(&e.source, "metrics.<source>.error")?;
            text("message", &e.message)?;
            Metric::Error {
                source: e.source,
                message: e.message,
            }
        }
        "samples" => samples(rest)?,
        other => {
            return Err(IngestError::new(
                Some("type"),
                format!(
                    "unknown event type {other:?}; expected one of `request`, `db_query`, `error`, `samples`"
                ),
            ))
        }
    };
    Ok(metric)
}

/// A `request` event's fields, checked.
fn request(rest: Value) -> Result<Metric, IngestError> {
    let r: RequestIn = fields(rest)?;
    text("path", &r.path)?;
    if !r.path.starts_with('/') {
        return Err(IngestError::new(Some("path"), "must start with `/`"));
    }
    millis("latency_ms", r.latency_ms)?;
    if !(100..=599).contains(&r.status) {
        return Err(IngestError::new(
            Some("status"),
            format!("{} is not an HTTP status (100-599)", r.status),
        ));
    }
    Ok(Metric::Request {
        path: r.path,
        latency_ms: r.latency_ms,
        status: r.status,
    })
}

/// A `samples` event's fields, each sample checked (an error names its index).
fn samples(rest: Value) -> Result<Metric, IngestError> {
    let s: SamplesIn = fields(rest)?;
    source_token(&s.source, "metrics.<source>.<name>")?;
    if s.samples.is_empty() {
        return Err(IngestError::new(Some("samples"), "holds no samples"));
    }
    if s.samples.len() > MAX_SAMPLES {
        return Err(IngestError::new(
            Some("samples"),
            format!(
                "{} samples in one event; at most {MAX_SAMPLES}",
                s.samples.len()
            ),
        ));
    }
    let samples = s
        .samples
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            parse_sample(v).map_err(|mut e| {
                e.field = Some(match e.field {
                    Some(f) => format!("samples[{i}].{f}"),
                    None => format!("samples[{i}]"),
                });
                e
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Metric::Samples {
        source: s.source,
        samples,
    })
}

fn source_token(source: &str, topic: &str) -> Result<(), IngestError> {
    if source.is_empty()
        || source.len() > 64
        || !source
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(IngestError::new(
            Some("source"),
            format!(
                "{source:?} is not a service name: use 1-64 letters, digits, `-` or `_` \
                 (it becomes the topic {topic})"
            ),
        ));
    }
    Ok(())
}

/// Deserializes the fields of one event type, naming the field on error.
fn fields<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, IngestError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e
            .into_inner()
            .to_string()
            .replace("expected f64", "expected a number")
            .replace("expected u16", "expected an integer");
        // serde names missing and unknown fields in its message; the path
        // names the field whose value is wrong.
        let field = if path == "." || path.is_empty() {
            field_in_message(&inner)
        } else {
            Some(path)
        };
        IngestError {
            index: None,
            field,
            reason: inner,
        }
    })
}

/// The field serde's "missing field `x`" / "unknown field `x`" messages name.
fn field_in_message(msg: &str) -> Option<String> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(msg[start..start + len].to_owned())
}

fn text(field: &str, s: &str) -> Result<(), IngestError> {
    if s.trim().is_empty() {
        return Err(IngestError::new(Some(field), "must not be empty"));
    }
    if s.len() > MAX_TEXT {
        return Err(IngestError::new(
            Some(field),
            format!("{} bytes long; at most {MAX_TEXT}", s.len()),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(IngestError::new(Some(field), "contains control characters"));
    }
    Ok(())
}

fn millis(field: &str, v: f64) -> Result<(), IngestError> {
    if !v.is_finite() || v < 0.0 {
        return Err(IngestError::new(
            Some(field),
            format!("{v} is not a duration: expected milliseconds >= 0"),
        ));
    }
    if v > MAX_MS {
        return Err(IngestError::new(
            Some(field),
            format!("{v} ms is more than an hour; expected milliseconds"),
        ));
    }
    Ok(())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Options of `busline publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Events as JSON: each argument one event object or an array of them.
    /// With none, JSON is read from stdin (one document, or one per line).
    pub events: Vec<String>,
    /// The running monitor's address (its `--web`).
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub to: String,
    /// The monitor's `--token`, if it has one.
    #[arg(long, env = "BUSLINE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `busline publish`: POSTs events to a running monitor's `/api/events`.
pub fn run_publish(args: PublishArgs) -> anyhow::Result<()> {
    let mut docs: Vec<Value> = Vec::new();
    let inputs: Vec<(String, String)> = if args.events.is_empty() {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading events from stdin")?;
        if s.trim().is_empty() {
            bail!("no events: pass JSON as arguments or on stdin, e.g.\n  busline publish '{{\"type\":\"request\",\"path\":\"/login\",\"latency_ms\":42}}'");
        }
        // One document, or JSON Lines.
        if serde_json::from_str::<Value>(&s).is_ok() {
            vec![("stdin".to_owned(), s)]
        } else {
            s.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| (format!("stdin line {}", i + 1), l.to_owned()))
                .collect()
        }
    } else {
        args.events
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("argument {}", i + 1), a.clone()))
            .collect()
    };
    for (what, text) in inputs {
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("{what} is not JSON"))?;
        match v {
            Value::Array(items) => docs.extend(items),
            v => docs.push(v),
        }
    }
    // Check locally first: the same rules as the server, clearer errors.
    for (i, d) in docs.iter().enumerate() {
        parse_event(d.clone()).map_err(|mut e| {
            e.index = Some(i);
            anyhow::anyhow!("{e}")
        })?;
    }
    let base = if args.to.starts_with("http://") || args.to.starts_with("https://") {
        args.to.trim_end_matches('/').to_owned()
    } else {
        format!("http://{}", args.to)
    };
    let url = format!("{base}/api/events");
    // A malformed address is an error about the address, not "cannot reach".
    reqwest::Url::parse(&url).map_err(|e| {
        anyhow::anyhow!(
            "--to `{}` is not a monitor address ({e}); give host:port or a URL",
            args.to
        )
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        let mut req = client.post(&url).json(&Value::Array(docs));
        if let Some(t) = &args.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| {
            format!("cannot reach the monitor at {url}; is `busline monitor` running?")
        })?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status.is_success() {
            println!("{body}");
            Ok(())
        } else {
            let msg = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or(body);
            bail!("the monitor refused the events ({status}): {msg}")
        }
    })
}

#[cfg(test)]
mod tests;
