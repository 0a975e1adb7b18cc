//! One OTLP metric's data points → samples, by kind (see the table in the
//! [module docs](super)): numbers (gauges and sums), histograms (explicit
//! and exponential), summaries; cumulative ones through [`Cumulative`].

use std::time::Instant;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, ExponentialHistogramDataPoint,
    HistogramDataPoint, NumberDataPoint, SummaryDataPoint,
};

use super::attributes::labels_of;
use super::exponential::exponential_buckets;
use super::rejected::Rejected;
use crate::monitor::cumulative::{Buckets, Cumulative, Start, Step};
use crate::monitor::sample::{Labels, Sample, Value};
use crate::monitor::sample_check::check_with_labels_seen;

const DELTA: i32 = AggregationTemporality::Delta as i32;
const CUMULATIVE: i32 = AggregationTemporality::Cumulative as i32;
/// OTLP's `DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK`.
const NO_RECORDED_VALUE: u32 = 1;

/// What tells one sender's series apart in the cumulative state: its
/// source, resource attributes and scope.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    /// The resource's `service.name` (or the default source).
    pub source: &'a str,
    /// The resource's attributes ([`key_of`](super::attributes::key_of)).
    pub resource: &'a str,
    /// The scope's (meter's) name.
    pub scope: &'a str,
    /// A report of this resource and scope came before.
    pub seen_before: bool,
}

/// The points of one metric being converted.
pub struct Point<'a> {
    /// Who sent the metric.
    pub sender: Sender<'a>,
    /// The metric's name.
    pub name: &'a str,
    /// The cumulative state, shared by the requests.
    pub cum: &'a mut Cumulative,
    /// The time of the request.
    pub now: Instant,
    /// The samples made, in order.
    pub out: Vec<Sample>,
    /// The points taken.
    pub accepted: u64,
    /// The points refused, in the request's count.
    pub rejected: &'a mut Rejected,
    /// The cumulative key of the point at hand is built here: the metric's
    /// part once (its length in `prefix`), then the point's labels.
    pub key: &'a mut String,
    pub prefix: Option<usize>,
}

impl Point<'_> {
    fn reject(&mut self, reason: &'static str, n: usize) {
        self.rejected.add(reason, self.name, n as u64);
    }

    /// Converts the metric's points.
    pub fn metric(&mut self, data: &mut Option<Data>) {
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
        self.out.reserve_exact(points);
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
                    me.build_key(labels);
                    match me.cum.counter(me.key, v, start, me.now) {
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
        let (labels, each_ok) = labels_of(&mut p.attributes);
        match f(v, &labels, self) {
            Ok(Some(value)) => self.push(labels, each_ok, value, p.time_unix_nano),
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
        let (labels, each_ok) = labels_of(attributes);
        let (buckets, min, max) = if temporality == CUMULATIVE {
            self.build_key(&labels);
            let start = self.start_of(start_ns);
            match self.cum.histogram(self.key, buckets, start, self.now) {
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
        self.push(labels, each_ok, value, time_ns);
    }

    fn summary(&mut self, p: &mut SummaryDataPoint) {
        if p.flags & NO_RECORDED_VALUE != 0 {
            return self.reject("a point flagged as having no recorded value", 1);
        }
        let (labels, _) = labels_of(&mut p.attributes);
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
            self.build_key(&labels);
            self.key.push('\u{1}');
            self.key.push_str(suffix);
            if let Some(v) = counter_step(self.cum.counter(self.key, total, start, self.now)) {
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
        match (ns, self.sender.seen_before) {
            (0, false) => Start::Unknown,
            (0, true) => Start::Appeared,
            (ns, false) => Start::At(ns),
            (ns, true) => Start::AppearedAt(ns),
        }
    }

    /// The cumulative state's key of a series of this metric, in
    /// `self.key`: the sender, the metric's name and the labels.
    fn build_key(&mut self, labels: &Labels) {
        let prefix = match self.prefix {
            Some(n) => n,
            None => {
                let Sender {
                    source,
                    resource,
                    scope,
                    ..
                } = self.sender;
                let k = &mut *self.key;
                k.clear();
                for part in [
                    source, "\u{1}", resource, "\u{1}", scope, "\u{1}", self.name,
                ] {
                    k.push_str(part);
                }
                *self.prefix.insert(k.len())
            }
        };
        self.key.truncate(prefix);
        for (name, value) in labels {
            self.key.push('\u{1}');
            self.key.push_str(name);
            self.key.push('\u{2}');
            self.key.push_str(value);
        }
    }

    /// Pushes a point's sample if it passes the checks (`each_ok`: its
    /// labels passed each on their own, see [`labels_of`]).
    fn push(&mut self, labels: Labels, each_ok: bool, value: Value, time_ns: u64) {
        let s = sample(self.name.to_owned(), labels, value, time_ns);
        if check_with_labels_seen(&s, each_ok).is_err() {
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
