//! OTLP metrics → [`Sample`]s.
//!
//! | OTLP | sample |
//! | --- | --- |
//! | gauge | `gauge` |
//! | monotonic sum, delta | `counter` (the point's value is the increment) |
//! | monotonic sum, cumulative | `counter`, the increment since the last export ([`Cumulative`]) |
//! | non-monotonic sum, cumulative | `gauge` (the current value) |
//! | non-monotonic sum, delta | `gauge_delta` |
//! | histogram, delta | `histogram` (its buckets, sum, min, max) |
//! | histogram, cumulative | `histogram`, the buckets' increments since the last export |
//! | exponential histogram | as a histogram, its buckets' edges as explicit bounds |
//! | summary | a `gauge` per quantile (label `quantile`), `<name>_count` and `<name>_sum` counters |
//!
//! The resource's `service.name` is the source (`otlp` without one); a
//! point's attributes are its labels. The scope (meter) name is no label (it
//! would lengthen every series name), but it, the other resource attributes
//! and the name tell series apart for the cumulative state, so two instances
//! of one service do not look like each other's resets.
//!
//! A cumulative series seen for the first time is a baseline (no
//! increment: its total may hold hours from before the monitor watched),
//! unless its start time is after the monitor started, or its resource and
//! scope were in an earlier request (it appeared since): then its whole
//! total is the increment. A total that falls, or a new start time, is a
//! restart: the new total is the increment. See [`Cumulative`].
//!
//! A point that cannot be taken is counted under a reason and named in the
//! answer's `partial_success`; the other points of the request still count.

use crate::monitor::sample_check::check;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets as ExpBuckets, metric::Data, number_data_point,
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, NumberDataPoint,
    SummaryDataPoint,
};

use crate::monitor::cumulative::{Buckets, Cumulative, Start, Step};
use crate::monitor::sample::{Labels, Sample, Value};

/// The source of metrics whose resource has no `service.name`.
pub const DEFAULT_SOURCE: &str = "otlp";
/// The most buckets on one side of an exponential histogram taken.
pub const MAX_EXP_BUCKETS: usize = 1024;

const DELTA: i32 = AggregationTemporality::Delta as i32;
const CUMULATIVE: i32 = AggregationTemporality::Cumulative as i32;
/// OTLP's `DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK`.
const NO_RECORDED_VALUE: u32 = 1;

/// What one request gave.
#[derive(Debug, Default)]
pub struct Converted {
    /// Samples by source, in the request's order.
    pub sources: Vec<(String, Vec<Sample>)>,
    /// Data points taken (a cumulative point's first sight is taken, and
    /// gives no sample).
    pub accepted: u64,
    /// Data points refused, by reason.
    pub rejected: Rejected,
}

/// Refused data points by reason, with the first metric refused for each.
#[derive(Debug, Default)]
pub struct Rejected {
    /// Count and first metric name, by reason.
    pub by_reason: BTreeMap<&'static str, (u64, String)>,
}

impl Rejected {
    fn add(&mut self, reason: &'static str, metric: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.by_reason
            .entry(reason)
            .or_insert_with(|| (0, metric.to_owned()))
            .0 += n;
    }

    /// Data points refused, in all.
    pub fn total(&self) -> u64 {
        self.by_reason.values().map(|(n, _)| n).sum()
    }

    /// For `partial_success.error_message`: each reason with its count and
    /// the first metric it refused.
    pub fn message(&self) -> String {
        let mut s = String::new();
        for (i, (reason, (n, metric))) in self.by_reason.iter().enumerate() {
            if i > 0 {
                s.push_str("; ");
            }
            let _ = write!(
                s,
                "{n} data point(s) refused: {reason} (first: metric {metric:?})"
            );
        }
        s
    }
}

/// Converts `req`, turning cumulative values into increments with `cum`.
/// The points' attributes are moved out of `req` into the samples' labels.
pub fn convert(
    req: &mut ExportMetricsServiceRequest,
    cum: &mut Cumulative,
    now: Instant,
) -> Converted {
    let mut out = Converted::default();
    for rm in &mut req.resource_metrics {
        let attrs = rm
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let source = attrs
            .iter()
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref()))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_SOURCE.to_owned());
        let resource_key = key_of(attrs);
        let mut samples = Vec::new();
        for sm in &mut rm.scope_metrics {
            let scope = sm.scope.as_ref().map(|s| s.name.as_str()).unwrap_or("");
            // Series new in a later export of a sender seen before started
            // since: counted whole.
            let seen_before =
                cum.sender_seen(&format!("{source}\u{1}{resource_key}\u{1}{scope}"), now);
            for m in &mut sm.metrics {
                let mut cx = Point {
                    series_prefix: format!(
                        "{source}\u{1}{resource_key}\u{1}{scope}\u{1}{}",
                        m.name
                    ),
                    name: &m.name,
                    cum: &mut *cum,
                    now,
                    seen_before,
                    out: &mut samples,
                    accepted: 0,
                    rejected: &mut out.rejected,
                };
                cx.metric(&mut m.data);
                out.accepted += cx.accepted;
            }
        }
        if !samples.is_empty() {
            match out.sources.iter_mut().find(|(s, _)| *s == source) {
                Some((_, v)) => v.extend(samples),
                None => out.sources.push((source, samples)),
            }
        }
    }
    out
}

/// The points of one metric being converted.
struct Point<'a> {
    series_prefix: String,
    name: &'a str,
    cum: &'a mut Cumulative,
    now: Instant,
    /// A report of this resource and scope came before.
    seen_before: bool,
    out: &'a mut Vec<Sample>,
    accepted: u64,
    rejected: &'a mut Rejected,
}

impl Point<'_> {
    fn reject(&mut self, reason: &'static str, n: usize) {
        self.rejected.add(reason, self.name, n as u64);
    }

    fn metric(&mut self, data: &mut Option<Data>) {
        let points = match data {
            None => return self.reject("a metric without data", 1),
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(Data::Summary(s)) => s.data_points.len(),
        };
        if self.name.is_empty() {
            return self.reject("a metric without a name", points);
        }
        match data {
            None => {}
            Some(Data::Gauge(g)) => {
                for p in &mut g.data_points {
                    self.number(p, |v, _, _| Ok(Some(Value::Gauge { value: v })));
                }
            }
            Some(Data::Sum(s)) => self.sum(
                s.aggregation_temporality,
                s.is_monotonic,
                &mut s.data_points,
            ),
            Some(Data::Histogram(h)) => {
                if !self.temporality_known(h.aggregation_temporality, h.data_points.len()) {
                    return;
                }
                for p in &mut h.data_points {
                    self.histogram(h.aggregation_temporality, p);
                }
            }
            Some(Data::ExponentialHistogram(h)) => {
                if !self.temporality_known(h.aggregation_temporality, h.data_points.len()) {
                    return;
                }
                for p in &mut h.data_points {
                    self.exponential(h.aggregation_temporality, p);
                }
            }
            Some(Data::Summary(s)) => {
                for p in &mut s.data_points {
                    self.summary(p);
                }
            }
        }
    }

    fn temporality_known(&mut self, t: i32, points: usize) -> bool {
        let known = t == DELTA || t == CUMULATIVE;
        if !known {
            self.reject("unspecified aggregation temporality", points);
        }
        known
    }

    fn sum(&mut self, temporality: i32, monotonic: bool, points: &mut [NumberDataPoint]) {
        if !self.temporality_known(temporality, points.len()) {
            return;
        }
        for p in points {
            let start_ns = p.start_time_unix_nano;
            match (monotonic, temporality == CUMULATIVE) {
                (true, false) if matches!(number(p), Some(v) if v < 0.0) => {
                    self.reject("a negative increment of a monotonic sum", 1)
                }
                (true, false) => self.number(p, |v, _, _| Ok(Some(Value::Counter { value: v }))),
                (true, true) => self.number(p, |v, labels, me| {
                    let start = me.start_of(start_ns);
                    let key = me.key(labels);
                    match me.cum.counter(&key, v, start, me.now) {
                        Step::Full => Err("too many cumulative series tracked"),
                        step => Ok(counter_step(step)),
                    }
                }),
                (false, true) => self.number(p, |v, _, _| Ok(Some(Value::Gauge { value: v }))),
                (false, false) => {
                    self.number(p, |v, _, _| Ok(Some(Value::GaugeDelta { value: v })))
                }
            }
        }
    }

    /// One number point through `f(value, labels, self)`: a value to
    /// push, `None` for a point taken with no sample (a cumulative first
    /// sight), or the reason it is refused.
    fn number(
        &mut self,
        p: &mut NumberDataPoint,
        f: impl FnOnce(f64, &Labels, &mut Self) -> Result<Option<Value>, &'static str>,
    ) {
        if p.flags & NO_RECORDED_VALUE != 0 {
            return self.reject("a point flagged as having no recorded value", 1);
        }
        let Some(v) = number(p) else {
            return self.reject("a number point without a value", 1);
        };
        if !v.is_finite() {
            return self.reject("a value that is not a finite number", 1);
        }
        let labels = labels_of(&mut p.attributes);
        match f(v, &labels, self) {
            Ok(Some(value)) => self.push(labels, value, p.time_unix_nano),
            Ok(None) => self.accepted += 1,
            Err(reason) => self.reject(reason, 1),
        }
    }

    fn histogram(&mut self, temporality: i32, p: &mut HistogramDataPoint) {
        if p.flags & NO_RECORDED_VALUE != 0 {
            return self.reject("a point flagged as having no recorded value", 1);
        }
        let (bounds, counts) = if p.bucket_counts.is_empty() && p.explicit_bounds.is_empty() {
            (Vec::new(), vec![p.count])
        } else {
            (
                std::mem::take(&mut p.explicit_bounds),
                std::mem::take(&mut p.bucket_counts),
            )
        };
        if counts.len() != bounds.len() + 1 {
            return self.reject(
                "a histogram whose bucket counts are not one more than its bounds",
                1,
            );
        }
        if !ascending(&bounds) {
            return self.reject(
                "a histogram whose bounds are not ascending finite numbers",
                1,
            );
        }
        let buckets = Buckets {
            bounds,
            counts,
            sum: p.sum.filter(|s| s.is_finite()),
        };
        self.buckets(
            temporality,
            &mut p.attributes,
            buckets,
            (p.min, p.max),
            p.start_time_unix_nano,
            p.time_unix_nano,
        );
    }

    fn exponential(&mut self, temporality: i32, p: &mut ExponentialHistogramDataPoint) {
        if p.flags & NO_RECORDED_VALUE != 0 {
            return self.reject("a point flagged as having no recorded value", 1);
        }
        let Some(buckets) = exponential_buckets(p) else {
            return self.reject("an exponential histogram out of range (scale -10..=20, at most 1024 buckets a side)", 1);
        };
        self.buckets(
            temporality,
            &mut p.attributes,
            buckets,
            (p.min, p.max),
            p.start_time_unix_nano,
            p.time_unix_nano,
        );
    }

    fn buckets(
        &mut self,
        temporality: i32,
        attributes: &mut Vec<KeyValue>,
        buckets: Buckets,
        (min, max): (Option<f64>, Option<f64>),
        start_ns: u64,
        time_ns: u64,
    ) {
        let labels = labels_of(attributes);
        let (buckets, min, max) = if temporality == CUMULATIVE {
            let key = self.key(&labels);
            match self
                .cum
                .histogram(&key, buckets, self.start_of(start_ns), self.now)
            {
                Step::Rebased => return self.reject(
                    "a cumulative histogram that changed its buckets (taken as the new baseline)",
                    1,
                ),
                Step::Full => return self.reject("too many cumulative series tracked", 1),
                step => match step.increment() {
                    // Min and max of a cumulative point are over all time.
                    Some(b) => (b, None, None),
                    None => {
                        self.accepted += 1;
                        return;
                    }
                },
            }
        } else {
            (buckets, min, max)
        };
        let value = Value::Histogram {
            bounds: buckets.bounds,
            counts: buckets.counts,
            sum: buckets.sum,
            min: min.filter(|v| v.is_finite()),
            max: max.filter(|v| v.is_finite()),
        };
        self.push(labels, value, time_ns);
    }

    fn summary(&mut self, p: &mut SummaryDataPoint) {
        if p.flags & NO_RECORDED_VALUE != 0 {
            return self.reject("a point flagged as having no recorded value", 1);
        }
        let labels = labels_of(&mut p.attributes);
        let name = self.name;
        let mut samples = Vec::new();
        for q in &p.quantile_values {
            if q.value.is_finite() {
                let mut l = labels.clone();
                l.insert("quantile".into(), q.quantile.to_string());
                samples.push(sample(
                    name.to_owned(),
                    l,
                    Value::Gauge { value: q.value },
                    p.time_unix_nano,
                ));
            }
        }
        let start = self.start_of(p.start_time_unix_nano);
        for (suffix, total) in [("_count", p.count as f64), ("_sum", p.sum)] {
            let key = format!("{}\u{1}{suffix}", self.key(&labels));
            if let Some(v) = counter_step(self.cum.counter(&key, total, start, self.now)) {
                samples.push(sample(
                    format!("{name}{suffix}"),
                    labels.clone(),
                    v,
                    p.time_unix_nano,
                ));
            }
        }
        self.out.extend(samples);
        self.accepted += 1;
    }

    /// A point's start: its own time, marked as appeared when its sender
    /// was seen before (see [`Start`]).
    fn start_of(&self, ns: u64) -> Start {
        match (ns, self.seen_before) {
            (0, false) => Start::Unknown,
            (0, true) => Start::Appeared,
            (ns, false) => Start::At(ns),
            (ns, true) => Start::AppearedAt(ns),
        }
    }

    fn key(&self, labels: &Labels) -> String {
        let mut k = self.series_prefix.clone();
        for (name, value) in labels {
            k.push('\u{1}');
            k.push_str(name);
            k.push('\u{2}');
            k.push_str(value);
        }
        k
    }

    fn push(&mut self, labels: Labels, value: Value, time_ns: u64) {
        let s = sample(self.name.to_owned(), labels, value, time_ns);
        if check(&s).is_err() {
            return self.reject(
                "a point over the monitor's limits (labels, histogram bounds or counts)",
                1,
            );
        }
        self.out.push(s);
        self.accepted += 1;
    }
}

fn number(p: &NumberDataPoint) -> Option<f64> {
    match p.value? {
        number_data_point::Value::AsDouble(d) => Some(d),
        number_data_point::Value::AsInt(i) => Some(i as f64),
    }
}

fn counter_step(step: Step<f64>) -> Option<Value> {
    step.increment().map(|value| Value::Counter { value })
}

fn sample(name: String, labels: Labels, value: Value, time_ns: u64) -> Sample {
    Sample {
        name,
        labels,
        value,
        at_ms: (time_ns > 0).then_some(time_ns / 1_000_000),
    }
}

fn ascending(bounds: &[f64]) -> bool {
    bounds.iter().all(|b| b.is_finite()) && bounds.windows(2).all(|w| w[0] < w[1])
}

/// An exponential histogram's buckets as explicit ones: every bucket edge
/// (negative buckets, the zero bucket, positive buckets, ascending) is a
/// bound, and the buckets below the lowest and above the highest edge are
/// empty. `None` when its scale or size is out of range.
pub fn exponential_buckets(p: &ExponentialHistogramDataPoint) -> Option<Buckets> {
    let empty = ExpBuckets::default();
    let pos = p.positive.as_ref().unwrap_or(&empty);
    let neg = p.negative.as_ref().unwrap_or(&empty);
    if !(-10..=20).contains(&p.scale)
        || pos.bucket_counts.len() > MAX_EXP_BUCKETS
        || neg.bucket_counts.len() > MAX_EXP_BUCKETS
    {
        return None;
    }
    let base = 2f64.powf(2f64.powi(-p.scale));
    let edge = |index: i64| base.powf(index as f64);
    let zero = if p.zero_threshold.is_finite() {
        p.zero_threshold.abs()
    } else {
        0.0
    };
    // (lower edge, upper edge, count), ascending.
    let mut cells: Vec<(f64, f64, u64)> = Vec::new();
    for (i, c) in neg.bucket_counts.iter().enumerate().rev() {
        let idx = i64::from(neg.offset) + i as i64;
        cells.push((-edge(idx + 1), -edge(idx), *c));
    }
    cells.push((-zero, zero, p.zero_count));
    for (i, c) in pos.bucket_counts.iter().enumerate() {
        let idx = i64::from(pos.offset) + i as i64;
        cells.push((edge(idx), edge(idx + 1), *c));
    }
    // Bucket k of a sample's histogram is (bounds[k-1], bounds[k]]; the
    // first has no lower bound, the last no upper one.
    let mut bounds: Vec<f64> = Vec::with_capacity(cells.len() * 2);
    let mut counts = vec![0u64];
    for (lo, hi, c) in cells {
        if !(lo.is_finite() && hi.is_finite()) {
            return None;
        }
        let (lo, hi) = (lo + 0.0, hi + 0.0); // -0 as 0
        match bounds.last() {
            None => bounds.push(lo),
            Some(last) if lo > *last => {
                bounds.push(lo);
                counts.push(0);
            }
            Some(_) => {}
        }
        let last = *bounds.last()?;
        if hi > last {
            bounds.push(hi);
            counts.push(c);
        } else {
            // A point (a zero bucket of threshold 0): in the bucket ending there.
            *counts.last_mut()? += c;
        }
    }
    counts.push(0);
    Some(Buckets {
        bounds,
        counts,
        sum: p.sum.filter(|s| s.is_finite()),
    })
}

/// Attributes as labels (values as text), moved out of `attrs`.
pub fn labels_of(attrs: &mut Vec<KeyValue>) -> Labels {
    attrs
        .drain(..)
        .map(|kv| {
            let value = match kv.value.and_then(|v| v.value) {
                Some(any_value::Value::StringValue(s)) => s,
                other => text(other.map(|v| AnyValue { value: Some(v) }).as_ref()),
            };
            (kv.key, value)
        })
        .collect()
}

fn key_of(attrs: &[KeyValue]) -> String {
    let mut sorted: Vec<(&str, String)> = attrs
        .iter()
        .map(|kv| (kv.key.as_str(), text(kv.value.as_ref())))
        .collect();
    sorted.sort();
    let mut k = String::new();
    for (name, value) in sorted {
        let _ = write!(k, "{name}\u{2}{value}\u{3}");
    }
    k
}

/// An attribute's value as text: strings as they are, other kinds as JSON
/// would write them.
fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| text(Some(v))).collect();
            format!("[{}]", items.join(","))
        }
        Some(any_value::Value::KvlistValue(l)) => {
            let items: Vec<String> = l
                .values
                .iter()
                .map(|kv| format!("{}={}", kv.key, text(kv.value.as_ref())))
                .collect();
            format!("{{{}}}", items.join(","))
        }
        #[allow(unreachable_patterns)]
        Some(_) => String::new(),
    }
}
