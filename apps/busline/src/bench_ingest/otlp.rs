//! The OTLP rows of `bench ingest`: data points per second through the
//! monitor's OTLP path, beside a bare decode of the same bodies.
//!
//! `--bodies` protobuf bodies of `--points` data points each are built
//! before the clock starts, from `opentelemetry-proto`'s types, as an SDK
//! exporting every interval would send them: two services, each with a
//! cumulative monotonic sum and a cumulative histogram whose totals grow
//! from one body to the next (so increments flow), a gauge and a delta sum,
//! all with attributes, and one refused point per body (a negative
//! increment of a monotonic delta sum).
//!
//! - `bare-otlp-decode`: [`otlp::decode`] of each body, counting its points:
//!   the least work that still reads every point;
//! - `busline-monitor`: one [`Receiver`] (the cumulative state the HTTP
//!   route keeps) and, per body, [`Receiver::decode_and_convert`], then each
//!   [`Metric`] published on a bus as `POST /v1/metrics` does (lossless, it
//!   waits for room) to a subscriber that counts the samples arriving.
//!
//! ## Accounting
//!
//! `sent` is the points in the bodies. A point the converter takes gives one
//! sample (no summaries are sent, which give several), except a cumulative
//! point seen for the first time: it is the series' baseline and gives none.
//! Those baselines are `accepted − samples` of each body's [`Converted`],
//! counted where the body is converted. `counted` is the samples that
//! reached the subscriber plus those baselines; `rejected` is
//! `converted.rejected.total()`; `lost` = `sent − counted − rejected` must be
//! 0. `per_s` is `(counted + rejected) / time`, from the first decode to the
//! last sample counted.
//!
//! [`Converted`]: crate::monitor::otlp::Converted

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use busline::{Bus, Context};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric as OtlpMetric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;

use super::{counting_subscriber, rows, since, IngestArgs, Round, Row};
use crate::monitor::metric::Metric;
use crate::monitor::otlp::{self, Encoding, Receiver};

/// Series of each kind per service.
const SERIES: u64 = 4;
/// A point's start time: long before the monitor (first sight = baseline).
const STARTED_NS: u64 = 1_000_000_000;

/// The OTLP rows: `bare-otlp-decode`, then `busline-monitor`.
pub fn otlp_rows(a: &IngestArgs) -> Result<Vec<Row>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (bodies, sent) = workload(a.bodies, a.points);
    let bodies = std::sync::Arc::new(bodies);
    let systems = ["bare-otlp-decode", "busline-monitor"];
    let mut rounds = vec![Vec::new(); systems.len()];
    for _ in 0..a.rounds {
        // Interleaved, so drift on a shared machine hits both alike.
        rounds[0].push(bare(&bodies, sent)?);
        // On a worker, as the HTTP handler runs.
        let bodies = bodies.clone();
        rounds[1].push(rt.block_on(rt.spawn(async move { monitor(&bodies, sent).await }))??);
    }
    Ok(rows("otlp", &systems, rounds))
}

/// `bodies` protobuf bodies of about `points` data points each, and the
/// points in all.
fn workload(bodies: usize, points: usize) -> (Vec<Vec<u8>>, u64) {
    // Per service and body: 2 kinds × SERIES cumulative points, SERIES
    // gauge points, SERIES delta points, one refused; two services.
    let per_group = 4 * SERIES as usize + 1;
    let groups = points.div_ceil(2 * per_group).max(1);
    let mut total = 0u64;
    let out = (0..bodies as u64)
        .map(|b| {
            let req = ExportMetricsServiceRequest {
                resource_metrics: ["shop", "billing"]
                    .iter()
                    .map(|service| resource(service, b, groups))
                    .collect(),
            };
            total += points_in(&req);
            req.encode_to_vec()
        })
        .collect();
    (out, total)
}

fn resource(service: &str, body: u64, groups: usize) -> ResourceMetrics {
    let metrics = (0..groups)
        .flat_map(|g| metric_group(&format!("bench.g{g}"), body))
        .collect();
    ResourceMetrics {
        resource: Some(Resource {
            attributes: vec![kv("service.name", service), kv("host", "bench-1")],
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(InstrumentationScope {
                name: "bench".into(),
                ..Default::default()
            }),
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// One group of metrics named `prefix.*` in body `b` (totals grow with `b`).
fn metric_group(prefix: &str, b: u64) -> Vec<OtlpMetric> {
    let attrs = |i: u64| vec![kv("route", &format!("/api/{i}")), kv("method", "GET")];
    let number = |i: u64, v: number_data_point::Value| NumberDataPoint {
        attributes: attrs(i),
        start_time_unix_nano: STARTED_NS,
        time_unix_nano: 1_700_000_000_000_000_000 + b * 1_000_000_000,
        value: Some(v),
        ..Default::default()
    };
    let metric = |name: &str, data: Data| OtlpMetric {
        name: format!("{prefix}.{name}"),
        data: Some(data),
        ..Default::default()
    };
    let cumulative = AggregationTemporality::Cumulative as i32;
    let delta = AggregationTemporality::Delta as i32;
    let requests = (0..SERIES)
        .map(|i| number(i, number_data_point::Value::AsInt((b * (i + 1) * 3) as i64)))
        .collect();
    let latency = (0..SERIES)
        .map(|i| {
            let n = b * (i + 2);
            HistogramDataPoint {
                attributes: attrs(i),
                start_time_unix_nano: STARTED_NS,
                count: 4 * n,
                sum: Some(10.5 * n as f64),
                bucket_counts: vec![n, 2 * n, n],
                explicit_bounds: vec![5.0, 50.0],
                ..Default::default()
            }
        })
        .collect();
    let pool = (0..SERIES)
        .map(|i| number(i, number_data_point::Value::AsDouble((b % 17 + i) as f64)))
        .collect();
    let mut bytes: Vec<NumberDataPoint> = (0..SERIES)
        .map(|i| number(i, number_data_point::Value::AsInt((b % 5 + i) as i64)))
        .collect();
    // Refused: a monotonic delta sum cannot fall.
    bytes.push(number(SERIES, number_data_point::Value::AsInt(-1)));
    vec![
        metric(
            "requests",
            Data::Sum(Sum {
                data_points: requests,
                aggregation_temporality: cumulative,
                is_monotonic: true,
            }),
        ),
        metric(
            "latency",
            Data::Histogram(Histogram {
                data_points: latency,
                aggregation_temporality: cumulative,
            }),
        ),
        metric("pool", Data::Gauge(Gauge { data_points: pool })),
        metric(
            "bytes",
            Data::Sum(Sum {
                data_points: bytes,
                aggregation_temporality: delta,
                is_monotonic: true,
            }),
        ),
    ]
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// The data points of a request.
fn points_in(req: &ExportMetricsServiceRequest) -> u64 {
    let mut n = 0;
    for rm in &req.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                n += match &m.data {
                    None => 0,
                    Some(Data::Gauge(g)) => g.data_points.len(),
                    Some(Data::Sum(s)) => s.data_points.len(),
                    Some(Data::Histogram(h)) => h.data_points.len(),
                    Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                    Some(Data::Summary(s)) => s.data_points.len(),
                } as u64;
            }
        }
    }
    n
}

fn bare(bodies: &[Vec<u8>], sent: u64) -> Result<Round> {
    let start = Instant::now();
    let mut counted = 0;
    for body in bodies {
        counted += points_in(&otlp::decode(body, Encoding::Protobuf)?);
    }
    Ok(Round {
        elapsed: start.elapsed(),
        sent,
        counted,
        rejected: 0,
        dropped: 0,
    })
}

async fn monitor(bodies: &[Vec<u8>], sent: u64) -> Result<Round> {
    let bus: Bus<Metric> = Bus::new();
    let start = Instant::now();
    let counter = counting_subscriber(&bus, start)?;
    let ctx = Context::detached("otlp", bus.clone());
    let receiver = Receiver::default();
    let (mut baselines, mut rejected, mut samples) = (0u64, 0u64, 0u64);
    for body in bodies {
        let (metrics, converted) = receiver.decode_and_convert(body, Encoding::Protobuf)?;
        let out: u64 = metrics.iter().map(|(_, m)| m.sample_count() as u64).sum();
        // Taken points that gave no sample: cumulative first sights.
        baselines += converted.accepted - out;
        rejected += converted.rejected.total();
        samples += out;
        for (topic, m) in metrics {
            let message = busline::Message::new(m).topic(topic).source("otlp");
            if let Err(e) = ctx.send(message).await {
                bail!("publishing failed: {e}");
            }
        }
    }
    let published = start.elapsed();
    // Every sample published is counted or on its way.
    let wait = Instant::now();
    while counter.counted.load(Ordering::Relaxed) < samples
        && wait.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    bus.close();
    let _ = counter.task.await;
    Ok(Round {
        elapsed: since(&counter.last).max(published),
        sent,
        counted: counter.counted.load(Ordering::Relaxed) + baselines,
        rejected,
        dropped: 0,
    })
}
