//! OTLP/HTTP metrics: `POST /v1/metrics`, as the OpenTelemetry SDKs and the
//! Collector send them.
//!
//! The route is served on the web address, and with `--otlp ADDR` (the
//! conventional port is 4318) on a listener of its own that serves nothing
//! else ([`http::OtlpListener`]).
//!
//! ## The request
//!
//! - `Content-Type: application/x-protobuf` (an `ExportMetricsServiceRequest`
//!   in protobuf) or `application/json` (the same in OTLP JSON: lowerCamelCase
//!   names, 64-bit integers as strings or numbers, enums as numbers). Anything
//!   else is 415.
//! - `Content-Encoding: gzip` or none (`identity`); another encoding is 415.
//! - At most [`MAX_BODY`] bytes, before and after decompression: 413.
//! - A body that does not decode is 400, with the decoder's message.
//!
//! Types and encodings are the `opentelemetry-proto` crate's (prost for
//! protobuf, its serde support for JSON); nothing is decoded by hand.
//!
//! ## The answer
//!
//! 200 with an `ExportMetricsServiceResponse` in the request's encoding; when
//! points were refused, its `partial_success` says how many
//! (`rejected_data_points`) and why (`error_message`: each reason, with the
//! first metric it refused). Errors (4xx, 503) carry a `google.rpc.Status`
//! (`code`, `message`) in the request's encoding (protobuf when the type was
//! wrong). 503 means the bus stayed full for [`PUBLISH_TIMEOUT`]
//! (a lossless subscriber is behind): the SDKs retry it.
//!
//! What the points become is in [`convert`]. Each request publishes one
//! [`Metric::Samples`] per source and topic, lossless (it waits for room: the
//! sender is slowed, nothing is dropped), and counts in
//! `/api/summary`'s `ingest.otlp`: `received` requests, `accepted` data
//! points, `malformed` by reason (undecodable bodies, wrong types, refused
//! points).
//!
//! [`PUBLISH_TIMEOUT`]: crate::monitor::publish_timeout::PUBLISH_TIMEOUT
//! [`Metric::Samples`]: crate::monitor::metric::Metric::Samples

pub mod convert;
pub mod http;

use std::io::Read as _;
use std::time::Instant;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use parking_lot::Mutex;
use prost::Message as _;

use super::cumulative::Cumulative;
use super::metric::Metric;
pub use convert::Converted;

/// The largest body taken, compressed or not (bytes).
pub const MAX_BODY: usize = 4 << 20;

/// How a request's body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`.
    Json,
}

impl Encoding {
    /// The encoding a `Content-Type` names, if it is one of OTLP's.
    pub fn of(content_type: &str) -> Option<Encoding> {
        let mime = content_type.split(';').next().unwrap_or("").trim();
        if mime.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Encoding::Protobuf)
        } else if mime.eq_ignore_ascii_case("application/json") {
            Some(Encoding::Json)
        } else {
            None
        }
    }

    /// Its `Content-Type`.
    pub fn mime(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// Why a body was refused whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Not protobuf / OTLP JSON.
    #[error("cannot decode the body as OTLP {encoding}: {reason}")]
    Undecodable {
        /// `protobuf` or `JSON`.
        encoding: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// Not gzip.
    #[error("cannot gunzip the body: {0}")]
    Gzip(String),
    /// Larger than [`MAX_BODY`] once decompressed.
    #[error("the body is larger than {MAX_BODY} bytes once decompressed; send smaller batches")]
    TooLarge,
}

impl BodyError {
    /// The reason it is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            BodyError::Undecodable {
                encoding: "JSON", ..
            } => "undecodable OTLP JSON",
            BodyError::Undecodable { .. } => "undecodable OTLP protobuf",
            BodyError::Gzip(_) => "bad gzip body",
            BodyError::TooLarge => "body too large",
        }
    }
}

/// `body` gunzipped, at most [`MAX_BODY`] bytes.
pub fn gunzip(body: &[u8]) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Gzip(e.to_string()))?;
    if out.len() > MAX_BODY {
        return Err(BodyError::TooLarge);
    }
    Ok(out)
}

/// Decodes a request body: the bare decode, with nothing converted.
pub fn decode(body: &[u8], encoding: Encoding) -> Result<ExportMetricsServiceRequest, BodyError> {
    match encoding {
        Encoding::Protobuf => {
            ExportMetricsServiceRequest::decode(body).map_err(|e| BodyError::Undecodable {
                encoding: "protobuf",
                reason: e.to_string(),
            })
        }
        Encoding::Json => serde_json::from_slice(body).map_err(|e| BodyError::Undecodable {
            encoding: "JSON",
            reason: e.to_string(),
        }),
    }
}

/// The OTLP state shared by the web route and the `--otlp` listener: the
/// cumulative series.
#[derive(Debug, Default)]
pub struct Receiver {
    cumulative: Mutex<Cumulative>,
}

impl Receiver {
    /// Decodes `body` and converts it to samples (cumulative values into
    /// increments), as `POST /v1/metrics` does before it publishes: one
    /// event per source and topic, each with its topic.
    pub fn decode_and_convert(
        &self,
        body: &[u8],
        encoding: Encoding,
    ) -> Result<(Vec<(String, Metric)>, Converted), BodyError> {
        let mut req = decode(body, encoding)?;
        let mut converted = convert::convert(&mut req, &mut self.cumulative.lock(), Instant::now());
        let metrics = std::mem::take(&mut converted.metrics);
        Ok((metrics, converted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::sample::Value;

    /// OTLP JSON as a user writes it for curl: 64-bit integers as strings,
    /// enums as numbers, lowerCamelCase.
    pub(crate) const JSON: &str = r#"{"resourceMetrics":[{
      "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
      "scopeMetrics":[{"scope":{"name":"shop"},"metrics":[
        {"name":"orders","sum":{"aggregationTemporality":1,"isMonotonic":true,
          "dataPoints":[{"asInt":"3","timeUnixNano":"1700000000000000000",
            "attributes":[{"key":"region","value":{"stringValue":"eu"}},{"key":"n","value":{"intValue":"7"}}]}]}},
        {"name":"queue.depth","gauge":{"dataPoints":[{"asDouble":4.5}]}},
        {"name":"latency","histogram":{"aggregationTemporality":1,"dataPoints":[
          {"count":"4","sum":10.5,"bucketCounts":["1","2","1"],"explicitBounds":[1,5],"min":0.5,"max":6}]}},
        {"name":"bad","sum":{"aggregationTemporality":0,"isMonotonic":true,"dataPoints":[{"asInt":"1"},{"asInt":"2"}]}}
      ]}]}]}"#;

    #[test]
    fn otlp_json_decodes_with_ints_as_strings() {
        let r = Receiver::default();
        let (metrics, c) = r
            .decode_and_convert(JSON.as_bytes(), Encoding::Json)
            .unwrap();
        assert_eq!(c.accepted, 3);
        assert_eq!(c.rejected.total(), 2);
        assert!(c
            .rejected
            .message()
            .contains("unspecified aggregation temporality"));
        assert!(c.rejected.message().contains("\"bad\""));
        assert_eq!(metrics.len(), 3);
        let all: Vec<_> = metrics
            .iter()
            .flat_map(|(_, m)| m.samples().into_owned())
            .collect();
        assert!(metrics.iter().all(|(_, m)| m.source() == "checkout"));
        assert!(metrics.iter().all(|(t, m)| {
            use busline::Event as _;
            *t == m.topic()
        }));
        assert_eq!(all[0].name, "orders");
        assert_eq!(all[0].value, Value::Counter { value: 3.0 });
        assert_eq!(all[0].labels["n"], "7");
        assert_eq!(all[0].at_ms, Some(1_700_000_000_000));
        assert_eq!(all[1].value, Value::Gauge { value: 4.5 });
        assert_eq!(
            all[2].value,
            Value::Histogram {
                bounds: vec![1.0, 5.0],
                counts: vec![1, 2, 1],
                sum: Some(10.5),
                min: Some(0.5),
                max: Some(6.0)
            }
        );
    }

    /// A cumulative sum `jobs` from service `old` (started long before the
    /// monitor) with one point per `(status, total)`.
    fn cumulative(points: &[(&str, u32)]) -> String {
        let points: Vec<String> = points
            .iter()
            .map(|(status, total)| {
                format!(
                    r#"{{"asInt":"{total}","startTimeUnixNano":"1000","attributes":[{{"key":"status","value":{{"stringValue":"{status}"}}}}]}}"#
                )
            })
            .collect();
        format!(
            r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"old"}}}}]}},"scopeMetrics":[{{"metrics":[{{"name":"jobs","sum":{{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{}]}}}}]}}]}}]}}"#,
            points.join(",")
        )
    }

    fn increments(r: &Receiver, body: &str) -> Vec<(String, f64)> {
        let (metrics, c) = r
            .decode_and_convert(body.as_bytes(), Encoding::Json)
            .unwrap();
        assert_eq!(c.rejected.total(), 0, "{}", c.rejected.message());
        metrics
            .iter()
            .flat_map(|(_, m)| m.samples().into_owned())
            .map(|s| match s.value {
                Value::Counter { value } => (s.labels["status"].clone(), value),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn cumulative_sums_start_as_baselines_and_new_series_count_whole() {
        let r = Receiver::default();
        // The first export of a long-running service: totals are baselines.
        assert!(increments(&r, &cumulative(&[("200", 100)])).is_empty());
        // A status first seen in a later export started since: all of it.
        assert_eq!(
            increments(&r, &cumulative(&[("200", 104), ("500", 3)])),
            vec![("200".to_owned(), 4.0), ("500".to_owned(), 3.0)]
        );
        // The service restarted (totals fell): the new totals, never negative.
        assert_eq!(
            increments(&r, &cumulative(&[("200", 2), ("500", 3)])),
            vec![("200".to_owned(), 2.0), ("500".to_owned(), 0.0)]
        );
    }

    #[test]
    fn protobuf_round_trips_and_garbage_is_refused() {
        let req: ExportMetricsServiceRequest = serde_json::from_str(JSON).unwrap();
        let bytes = req.encode_to_vec();
        let r = Receiver::default();
        let (_, c) = r.decode_and_convert(&bytes, Encoding::Protobuf).unwrap();
        assert_eq!((c.accepted, c.rejected.total()), (3, 2));
        let e = r
            .decode_and_convert(b"\xff\xff\xff not protobuf", Encoding::Protobuf)
            .unwrap_err();
        assert_eq!(e.reason(), "undecodable OTLP protobuf");
        let e = r
            .decode_and_convert(b"{\"resourceMetrics\": 3}", Encoding::Json)
            .unwrap_err();
        assert!(e.to_string().contains("OTLP JSON"), "{e}");
    }

    #[test]
    fn gzip_bodies_are_capped() {
        use std::io::Write as _;
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&vec![0u8; MAX_BODY + 1]).unwrap();
        let bomb = z.finish().unwrap();
        assert!(bomb.len() < MAX_BODY / 100);
        assert!(matches!(gunzip(&bomb), Err(BodyError::TooLarge)));
        assert!(matches!(gunzip(b"not gzip"), Err(BodyError::Gzip(_))));
    }

    #[test]
    fn exponential_histograms_become_explicit_buckets() {
        use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets as B;
        use opentelemetry_proto::tonic::metrics::v1::ExponentialHistogramDataPoint;
        // Scale 0: base 2. Positive buckets 1, 2 at offset 0: (1,2], (2,4].
        let p = ExponentialHistogramDataPoint {
            scale: 0,
            zero_count: 1,
            positive: Some(B {
                offset: 0,
                bucket_counts: vec![3, 2],
            }),
            negative: Some(B {
                offset: 1,
                bucket_counts: vec![4],
            }),
            sum: Some(7.0),
            ..Default::default()
        };
        let b = convert::exponential::exponential_buckets(&p).unwrap();
        // (-inf,-4] 0, (-4,-2] 4, (-2,0] 1 (zero), (0,1] 0, (1,2] 3, (2,4] 2, (4,inf) 0
        assert_eq!(b.bounds, vec![-4.0, -2.0, 0.0, 1.0, 2.0, 4.0]);
        assert_eq!(b.counts, vec![0, 4, 1, 0, 3, 2, 0]);
        let huge = ExponentialHistogramDataPoint {
            scale: 30,
            ..Default::default()
        };
        assert!(convert::exponential::exponential_buckets(&huge).is_none());
    }
}
