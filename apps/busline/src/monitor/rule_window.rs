//! A rule's window: the matching samples of the last `window`, in
//! [`BUCKETS`] time buckets, and the rule's value over them.
//!
//! Samples count at their event time (the sample's own `at_ms`, else its
//! event's timestamp), mapped onto the monitor's (tokio) clock: a sample
//! that happened 10 s ago goes into the bucket of 10 s ago, one older than
//! the window is not counted, one from the future counts as now. So events
//! replayed from the durable log after a restart fill the window as they
//! were.
//!
//! The window is cut into [`BUCKETS`] buckets of `window / 60` (1 s for a
//! minute): memory per rule is bounded whatever the rate (a percentile rule
//! keeps one sparse [`Digest`] per bucket, as the series store does: only
//! the value ranges seen take memory), and a sample leaves the
//! window between `window - window/60` and `window` after it happened.
//! `up` and `last` rules keep the last value of each matching series instead (at most
//! [`MAX_SERIES`]; more are counted in `overflow`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::bucket_midpoints::midpoints;
use super::rule::{Function, Rule};
use super::sample::{Sample, Value};
use super::series::digest::Digest;

/// Buckets per window.
pub const BUCKETS: u32 = 60;
/// The most series an `up` rule tracks.
pub const MAX_SERIES: usize = 10_000;

/// Event times on the monitor's clock: one reading of both clocks, for a
/// batch of samples.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The wall clock.
    pub wall: SystemTime,
    /// The monitor's (tokio) clock.
    pub now: Instant,
}

impl Clock {
    /// Both clocks now.
    pub fn now() -> Clock {
        Clock {
            wall: SystemTime::now(),
            now: Instant::now(),
        }
    }

    /// The monitor-clock instant of event time `at` (a time in the future
    /// is now); `None` when it is older than that clock goes back (its
    /// start, at the machine's boot): too old for any window.
    pub fn instant(&self, at: SystemTime) -> Option<Instant> {
        let age = self.wall.duration_since(at).unwrap_or_default();
        self.now.checked_sub(age)
    }
}

#[derive(Debug, Default, Clone)]
struct Bucket {
    index: i64,
    /// Samples, weighted.
    count: f64,
    /// Counter increments, other samples as in `count`.
    amount: f64,
    /// Values (weighted) and how many.
    sum: f64,
    weight: f64,
    min: Option<f64>,
    max: Option<f64>,
    /// Percentile rules only.
    digest: Option<Box<Digest>>,
}

/// One sample's share of a window.
struct Share {
    count: f64,
    amount: f64,
    /// `(value, weight)` pairs, for the value functions.
    values: Vec<(f64, f64)>,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
}

fn share(value: &Value) -> Share {
    let one = |v: f64, amount: f64| Share {
        count: 1.0,
        amount,
        values: vec![(v, 1.0)],
        sum: v,
        min: Some(v),
        max: Some(v),
    };
    match value {
        Value::Counter { value } => one(*value, *value),
        Value::Gauge { value } | Value::GaugeDelta { value } => one(*value, 1.0),
        Value::Observation { value, weight } => Share {
            count: *weight,
            amount: *weight,
            values: vec![(*value, *weight)],
            sum: value * weight,
            min: Some(*value),
            max: Some(*value),
        },
        Value::Histogram {
            bounds,
            counts,
            sum,
            min,
            max,
        } => {
            let values: Vec<(f64, f64)> = midpoints(bounds, counts, *min, *max)
                .into_iter()
                .map(|(m, c)| (m, c as f64))
                .collect();
            let n: f64 = counts.iter().map(|c| *c as f64).sum();
            Share {
                count: n,
                amount: n,
                sum: sum.unwrap_or_else(|| values.iter().map(|(m, c)| m * c).sum()),
                min: min.or_else(|| values.first().map(|v| v.0)),
                max: max.or_else(|| values.last().map(|v| v.0)),
                values,
            }
        }
        Value::Set { .. } | Value::Error { .. } => Share {
            count: 1.0,
            amount: 1.0,
            values: Vec::new(),
            sum: 0.0,
            min: None,
            max: None,
        },
    }
}

/// The matching samples of one rule over its window.
#[derive(Debug)]
pub struct RuleWindow {
    function: Function,
    window: Duration,
    width: Duration,
    base: Instant,
    buckets: VecDeque<Bucket>,
    /// `up`, `last`: each series' last value and when.
    series: HashMap<(String, String), (Instant, f64)>,
    /// `up`: series not tracked (past [`MAX_SERIES`]).
    pub overflow: u64,
}

impl RuleWindow {
    /// An empty window for `rule`.
    pub fn new(rule: &Rule) -> RuleWindow {
        RuleWindow {
            function: rule.function,
            window: rule.window,
            width: rule.window / BUCKETS,
            base: Instant::now(),
            buckets: VecDeque::with_capacity(BUCKETS as usize + 1),
            series: HashMap::new(),
            overflow: 0,
        }
    }

    fn index(&self, at: Instant) -> i64 {
        let w = self.width.as_nanos().max(1) as i128;
        let off = if at >= self.base {
            (at - self.base).as_nanos() as i128
        } else {
            -((self.base - at).as_nanos() as i128)
        };
        off.div_euclid(w) as i64
    }

    /// The oldest bucket index still in the window at `now`.
    fn first_live(&self, now: Instant) -> i64 {
        self.index(now) - (BUCKETS as i64 - 1)
    }

    /// Counts `sample` from `source`, that happened at `at` (event time),
    /// reading the clocks now (the alerter reads them once per batch: see
    /// [`record_at`](Self::record_at)). Returns false when it is too old
    /// for the window.
    #[cfg(test)]
    pub fn record(&mut self, source: &str, sample: &Sample, at: SystemTime) -> bool {
        let clock = Clock::now();
        match clock.instant(at) {
            Some(when) => self.record_at(source, sample, when, clock.now),
            None => false,
        }
    }

    /// Counts `sample` from `source`, that happened at `when` (on the
    /// monitor's clock, see [`Clock`]), at `now`. Returns false when it is
    /// too old for the window.
    pub fn record_at(
        &mut self,
        source: &str,
        sample: &Sample,
        when: Instant,
        now: Instant,
    ) -> bool {
        if now.saturating_duration_since(when) >= self.window {
            return false;
        }
        let index = self.index(when);
        if index < self.first_live(now) {
            return false;
        }
        match self.function {
            Function::Up => return self.record_up(source, sample, when),
            Function::Last => return self.record_last(source, sample, when),
            _ => {}
        }
        let s = share(&sample.value);
        let quantile = self.function.quantile().is_some();
        let b = self.bucket(index);
        b.count += s.count;
        b.amount += s.amount;
        for (v, w) in &s.values {
            if v.is_finite() {
                b.weight += w;
            }
        }
        b.sum += s.sum;
        b.min = opt(b.min, s.min, f64::min);
        b.max = opt(b.max, s.max, f64::max);
        if quantile {
            let d = b.digest.get_or_insert_default();
            for (v, w) in s.values {
                d.add(v, w);
            }
        }
        true
    }

    /// `last`: per series, as the series store keeps a gauge: a value
    /// replaces an older one, a gauge delta adds to its own series' value
    /// (from 0), whenever it happened.
    fn record_last(&mut self, source: &str, sample: &Sample, when: Instant) -> bool {
        let (v, delta) = match sample.value {
            Value::GaugeDelta { value } => (value, true),
            Value::Counter { value } | Value::Gauge { value } => (value, false),
            Value::Observation { value, .. } => (value, false),
            Value::Histogram { .. } | Value::Set { .. } | Value::Error { .. } => return false,
        };
        let Some(slot) = self.slot(source, sample, when, if delta { 0.0 } else { v }) else {
            return false;
        };
        if delta {
            *slot = (slot.0.max(when), slot.1 + v);
        } else if slot.0 <= when {
            *slot = (when, v);
        }
        true
    }

    /// The series' slot (new ones start at `(when, initial)`), or `None`
    /// past [`MAX_SERIES`] (counted in `overflow`).
    fn slot(
        &mut self,
        source: &str,
        sample: &Sample,
        when: Instant,
        initial: f64,
    ) -> Option<&mut (Instant, f64)> {
        let key = (source.to_owned(), sample.series());
        if !self.series.contains_key(&key) && self.series.len() >= MAX_SERIES {
            self.overflow += 1;
            return None;
        }
        Some(self.series.entry(key).or_insert((when, initial)))
    }

    fn record_up(&mut self, source: &str, sample: &Sample, when: Instant) -> bool {
        let v = match sample.value {
            Value::Gauge { value } | Value::Counter { value } => value,
            _ => return false,
        };
        let Some(slot) = self.slot(source, sample, when, v) else {
            return false;
        };
        if slot.0 <= when {
            *slot = (when, v);
        }
        true
    }

    fn bucket(&mut self, index: i64) -> &mut Bucket {
        let i = self.buckets.partition_point(|b| b.index < index);
        if self.buckets.get(i).is_none_or(|b| b.index != index) {
            self.buckets.insert(
                i,
                Bucket {
                    index,
                    ..Bucket::default()
                },
            );
        }
        &mut self.buckets[i]
    }

    /// Drops what left the window by `now`.
    fn evict(&mut self, now: Instant) {
        let first = self.first_live(now);
        while self.buckets.front().is_some_and(|b| b.index < first) {
            self.buckets.pop_front();
        }
        let horizon = now.checked_sub(self.window);
        let gone = |t: Instant| horizon.is_some_and(|h| t <= h);
        self.series.retain(|_, (t, _)| !gone(*t));
    }

    /// The rule's value now (see [`rule`](super::rule) for each function).
    pub fn value(&mut self) -> Option<f64> {
        let now = Instant::now();
        self.evict(now);
        let secs = self.window.as_secs_f64();
        let b = &self.buckets;
        // (`+ 0.0`: an empty sum of floats is -0.)
        let total = |f: fn(&Bucket) -> f64| b.iter().map(f).sum::<f64>() + 0.0;
        let weight = total(|b| b.weight);
        match self.function {
            Function::RatePerS => Some(total(|b| b.amount) / secs),
            Function::RatePerMin => Some(total(|b| b.amount) / secs * 60.0),
            Function::Count => Some(total(|b| b.count)),
            Function::Sum => Some(total(|b| b.sum)),
            Function::Avg => (weight > 0.0).then(|| total(|b| b.sum) / weight),
            Function::Min => b.iter().filter_map(|b| b.min).reduce(f64::min),
            Function::Max => b.iter().filter_map(|b| b.max).reduce(f64::max),
            Function::P50 | Function::P90 | Function::P99 => {
                let mut all = Digest::default();
                for d in b.iter().filter_map(|b| b.digest.as_deref()) {
                    all.merge(d);
                }
                let min = b.iter().filter_map(|b| b.min).reduce(f64::min);
                let max = b.iter().filter_map(|b| b.max).reduce(f64::max);
                all.quantile_within(self.function.quantile().unwrap_or(0.5), min, max)
            }
            Function::Last => self
                .series
                .values()
                .max_by_key(|(t, _)| *t)
                .map(|(_, v)| *v),
            Function::Up => Some(self.series.values().filter(|(_, v)| *v == 0.0).count() as f64),
        }
    }
}

fn opt(a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests;
