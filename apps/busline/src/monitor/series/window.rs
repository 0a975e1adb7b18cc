//! One window of one series (a second, or the merge of a minute of them),
//! and the statistics it gives.
//!
//! | kind | `count` | `sum` | `rate` (per second) | also |
//! | --- | --- | --- | --- | --- |
//! | counter | samples | the increments | the increments (`sum / seconds`) | min/max of the increments |
//! | gauge (and gauge deltas) | samples | the values | samples | `last`, min, max, mean |
//! | observation | values (weighted by 1 / sample rate) | the values | values | mean, min, max, p50/p90/p99 |
//! | histogram | observations in the buckets | the sender's sum, else the midpoints' | observations | as observations: each bucket counts at its midpoint |
//! | set | samples | — | samples | `distinct` members |
//! | error | errors | — | errors | the last message (on the series) |

use std::collections::HashSet;
use std::hash::BuildHasher;

use serde::Serialize;

use super::digest::Digest;
use crate::monitor::bucket_midpoints::midpoints;
use crate::monitor::sample::Value;

/// The most distinct members a set's window keeps; more are counted as at
/// least this many ([`Stats::distinct_capped`]).
pub const MAX_MEMBERS: usize = 10_000;

/// Accumulated samples of one window.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Samples (or weighted observations).
    pub count: f64,
    /// Sum of the values.
    pub sum: f64,
    min: Option<f64>,
    max: Option<f64>,
    /// A gauge's value at the window's end (by the samples' order).
    pub last: Option<f64>,
    digest: Option<Box<Digest>>,
    members: Option<Box<Members>>,
    members_capped: bool,
}

/// A set's members (hashed), boxed so other kinds' windows stay small.
#[derive(Debug, Clone, Default)]
struct Members(HashSet<u64>);

impl Window {
    /// Counts one sample's value; `gauge` is the gauge's value after it (for
    /// gauges and gauge deltas). Returns `false` for a histogram whose
    /// bucket counts do not fit its bounds (nothing is counted).
    pub fn record(&mut self, value: &Value, gauge: Option<f64>) -> bool {
        match value {
            Value::Counter { value } => self.value(*value, 1.0),
            Value::Gauge { .. } | Value::GaugeDelta { .. } => {
                if let Some(v) = gauge {
                    self.value(v, 1.0);
                    self.last = Some(v);
                }
            }
            Value::Observation { value, weight } => {
                let w = if *weight > 0.0 && weight.is_finite() {
                    *weight
                } else {
                    1.0
                };
                self.value(*value, w);
                self.digest.get_or_insert_default().add(*value, w);
            }
            Value::Histogram {
                bounds,
                counts,
                sum,
                min,
                max,
            } => return self.histogram(bounds, counts, *sum, *min, *max),
            Value::Set { member } => {
                self.member(member, true);
            }
            Value::Error { .. } => self.count += 1.0,
        }
        true
    }

    /// Counts one sample of a set; keeps `member` if it is new and there
    /// is `room` (the store's budget, see
    /// [`MAX_STORE_MEMBERS`](super::MAX_STORE_MEMBERS)) and fewer than
    /// [`MAX_MEMBERS`] here, else marks the window capped. Returns whether
    /// it kept a new member.
    pub fn member(&mut self, member: &str, room: bool) -> bool {
        self.count += 1.0;
        let set = &mut self.members.get_or_insert_default().0;
        let h = member_hash(member);
        if set.contains(&h) {
            false
        } else if room && set.len() < MAX_MEMBERS {
            set.insert(h)
        } else {
            self.members_capped = true;
            false
        }
    }

    /// How many members it keeps.
    pub fn members(&self) -> usize {
        self.members.as_ref().map_or(0, |m| m.0.len())
    }

    fn value(&mut self, v: f64, weight: f64) {
        if v.is_nan() {
            return;
        }
        self.count += weight;
        self.sum += v * weight;
        self.min = Some(self.min.map_or(v, |m| m.min(v)));
        self.max = Some(self.max.map_or(v, |m| m.max(v)));
    }

    /// Bucketed observations, each bucket's count at its midpoint
    /// ([`midpoints`]). Returns `false` when the counts do not fit the bounds.
    fn histogram(
        &mut self,
        bounds: &[f64],
        counts: &[u64],
        sum: Option<f64>,
        min: Option<f64>,
        max: Option<f64>,
    ) -> bool {
        if counts.len() != bounds.len() + 1 {
            return false;
        }
        // (Summed as f64: u64 counts may add up past u64::MAX.)
        let n: f64 = counts.iter().map(|c| *c as f64).sum();
        if n == 0.0 {
            return true;
        }
        let digest = self.digest.get_or_insert_default();
        let mut mid_sum = 0.0;
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for (mid, c) in midpoints(bounds, counts, min, max) {
            digest.add(mid, c as f64);
            mid_sum += mid * c as f64;
            lo = lo.min(mid);
            hi = hi.max(mid);
        }
        self.count += n;
        self.sum += sum.unwrap_or(mid_sum);
        let (lo, hi) = (min.unwrap_or(lo), max.unwrap_or(hi));
        self.min = Some(self.min.map_or(lo, |m| m.min(lo)));
        self.max = Some(self.max.map_or(hi, |m| m.max(hi)));
        true
    }

    /// Adds `other` (a later window: its `last` wins).
    pub fn merge(&mut self, other: &Window) {
        self.count += other.count;
        self.sum += other.sum;
        for (mine, theirs, f) in [
            (&mut self.min, other.min, f64::min as fn(f64, f64) -> f64),
            (&mut self.max, other.max, f64::max),
        ] {
            if let Some(t) = theirs {
                *mine = Some(mine.map_or(t, |m| f(m, t)));
            }
        }
        if other.last.is_some() {
            self.last = other.last;
        }
        if let Some(d) = &other.digest {
            self.digest.get_or_insert_default().merge(d);
        }
        if let Some(m) = &other.members {
            let set = &mut self.members.get_or_insert_default().0;
            for h in m.0.iter() {
                if set.len() >= MAX_MEMBERS {
                    self.members_capped |= !set.contains(h);
                } else {
                    set.insert(*h);
                }
            }
        }
        self.members_capped |= other.members_capped;
    }

    /// Its statistics over `seconds`, for a series of `kind`.
    pub fn stats(&self, kind: &str, seconds: f64) -> Stats {
        let per_s = |v: f64| if seconds > 0.0 { v / seconds } else { 0.0 };
        let q = |p: f64| {
            let d = self.digest.as_ref()?;
            d.quantile_within(p, self.min, self.max)
        };
        let ranked = matches!(kind, "observation" | "histogram");
        Stats {
            seconds,
            count: self.count,
            rate: per_s(if kind == "counter" {
                self.sum
            } else {
                self.count
            }),
            sum: self.sum,
            mean: (self.count > 0.0 && !matches!(kind, "set" | "error"))
                .then(|| self.sum / self.count),
            min: self.min,
            max: self.max,
            p50: q(0.5).filter(|_| ranked),
            p90: q(0.9).filter(|_| ranked),
            p99: q(0.99).filter(|_| ranked),
            last: self.last,
            distinct: self.members.as_ref().map(|m| m.0.len() as u64),
            distinct_capped: self.members_capped,
        }
    }

    /// The value a sparkline shows for this window: a counter's increments,
    /// a gauge's last value, the mean observation, distinct members, or the
    /// count of errors.
    pub fn point(&self, kind: &str) -> f64 {
        match kind {
            "counter" => self.sum,
            "gauge" => self.last.unwrap_or(0.0),
            "observation" | "histogram" if self.count > 0.0 => self.sum / self.count,
            "set" => self.members.as_ref().map_or(0, |m| m.0.len()) as f64,
            "error" => self.count,
            _ => 0.0,
        }
    }
}

fn member_hash(member: &str) -> u64 {
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default).hash_one(member)
}

/// The statistics of one series over one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// The window's length.
    pub seconds: f64,
    /// Samples (weighted observations) in it.
    pub count: f64,
    /// Per second: a counter's increments, else samples.
    pub rate: f64,
    /// Sum of the values.
    pub sum: f64,
    /// Mean value (not for sets and errors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    /// Smallest value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Median (observations, histograms), within 0.1%.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    /// 90th percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p90: Option<f64>,
    /// 99th percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    /// A gauge's value at the end of the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<f64>,
    /// A set's distinct members.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distinct: Option<u64>,
    /// Whether the set had more than [`MAX_MEMBERS`] members (`distinct` is
    /// then a lower bound).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub distinct_capped: bool,
}
