//! The series store: every metric the monitor sees, aggregated per series.
//!
//! A series is `(source, name, labels)` — one service's one metric with one
//! set of labels — exactly as it was sent. Every [`Metric`] is taken apart
//! into its [`Sample`]s ([`Metric::samples`]) and each sample counts in its
//! series' window of the second it happened in: the sample's own `at_ms`
//! if it has one, else the event's timestamp. So a restarted monitor that
//! replays the last minute from the event log puts each past sample in its
//! own second, for every metric.
//!
//! [`Store::view`] gives, for every series, the statistics of the last
//! complete second and of the last 60 complete seconds ([`Stats`]: count,
//! rate, sum, mean, min, max, p50/p90/p99, last value, distinct members; see
//! [`window`] for what each means per kind), and a minute of per-second
//! points for sparklines.
//!
//! ## Bounded memory
//!
//! - At most `max_series` series (`--max-series`, default
//!   [`DEFAULT_MAX_SERIES`]). A sample of a new series beyond the cap is
//!   counted as overflow — in all and per metric name (at most
//!   [`OVERFLOW_NAMES`] names, the rest together) — and shown, never dropped
//!   silently.
//! - A series that got no sample for [`IDLE`] is forgotten, so a burst of
//!   labels that is over does not hold the cap forever.
//! - Each series keeps only the seconds of the last minute that had samples;
//!   percentiles are kept as sparse HDR buckets ([`digest`]); a set keeps at
//!   most [`MAX_MEMBERS`](window::MAX_MEMBERS) member hashes per window.
//! - A sample older than the minute kept is counted as `too_old`; one from
//!   the future (a skewed clock) counts in the current second.

pub mod digest;
pub mod feed;
pub mod lines;
mod published;
pub mod window;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;

use serde::Serialize;

use super::metric::Metric;
use super::sample::{series_name, Labels, Sample, Value};
pub use published::Published;
pub use window::Stats;
use window::Window;

/// The default cap on the number of series.
pub const DEFAULT_MAX_SERIES: usize = 10_000;
/// How long a series may get no sample before it is forgotten (seconds).
pub const IDLE: u64 = 600;
/// Seconds in a series' "minute".
pub const MINUTE: u64 = 60;
/// The most set members the store keeps in all (about 20 MB); past it new
/// members are not kept and their windows count as capped
/// ([`Stats::distinct_capped`](window::Stats::distinct_capped)).
pub const MAX_STORE_MEMBERS: usize = 1_000_000;
/// How many metric names the overflow counts one by one.
pub const OVERFLOW_NAMES: usize = 100;

/// One series and its windows.
#[derive(Debug)]
struct Series {
    source: String,
    name: String,
    labels: Labels,
    kind: &'static str,
    /// Seconds (Unix) that had samples, oldest first, within the minute.
    seconds: VecDeque<(u64, Window)>,
    /// A gauge's current value, and the time of the sample that set it.
    gauge: Option<(f64, u64)>,
    /// The newest error message.
    last_message: Option<String>,
    /// When it last got a sample (the store's clock, seconds).
    seen_s: u64,
}

impl Series {
    fn is(&self, source: &str, name: &str, labels: &Labels) -> bool {
        self.source == source && self.name == name && &self.labels == labels
    }

    fn window(&mut self, sec: u64) -> &mut Window {
        let i = self.seconds.partition_point(|(s, _)| *s < sec);
        if self.seconds.get(i).is_none_or(|(s, _)| *s != sec) {
            self.seconds.insert(i, (sec, Window::default()));
        }
        &mut self.seconds[i].1
    }

    /// The gauge's value after `value` (at `at_ms`), if it is a gauge.
    fn gauge_after(&mut self, value: &Value, at_ms: u64) -> Option<f64> {
        match value {
            Value::Gauge { value } => {
                if self.gauge.is_none_or(|(_, t)| t <= at_ms) {
                    self.gauge = Some((*value, at_ms));
                }
                Some(*value)
            }
            Value::GaugeDelta { value } => {
                let (v, t) = self.gauge.unwrap_or((0.0, at_ms));
                let v = v + value;
                self.gauge = Some((v, t.max(at_ms)));
                Some(v)
            }
            _ => None,
        }
    }

    /// A gauge holds its value through seconds without samples, from the
    /// value it had coming into the minute (set before it, even long
    /// before). One pass over the points and the seconds.
    fn hold_gauge(&self, now_s: u64, points: &mut [f64]) {
        let first = now_s.saturating_sub(MINUTE);
        let mut last = self
            .seconds
            .iter()
            .filter(|(s, _)| *s < first)
            .filter_map(|(_, w)| w.last)
            .next_back()
            .or_else(|| {
                self.gauge
                    .filter(|(_, at_ms)| at_ms / 1000 < first)
                    .map(|(v, _)| v)
            });
        let mut seconds = self.seconds.iter().peekable();
        for (i, p) in points.iter_mut().enumerate() {
            let s = first + i as u64;
            while seconds.next_if(|(x, _)| *x < s).is_some() {}
            match seconds.peek() {
                Some((x, w)) if *x == s && w.last.is_some() => last = w.last,
                _ => *p = last.unwrap_or(*p),
            }
        }
    }

    fn view(&self, now_s: u64) -> SeriesView {
        let done = |s: u64| s < now_s && s + MINUTE >= now_s;
        let mut minute = Window::default();
        let mut points = vec![0.0; MINUTE as usize];
        let mut second = Window::default();
        for (s, w) in &self.seconds {
            if !done(*s) {
                continue;
            }
            minute.merge(w);
            points[(MINUTE - (now_s - s)) as usize] = w.point(self.kind);
            if *s + 1 == now_s {
                second = w.clone();
            }
        }
        if self.kind == "gauge" {
            self.hold_gauge(now_s, &mut points);
        }
        SeriesView {
            series: series_name(&self.name, &self.labels),
            source: self.source.clone(),
            name: self.name.clone(),
            labels: self.labels.clone(),
            kind: self.kind,
            second: second.stats(self.kind, 1.0),
            minute: minute.stats(self.kind, MINUTE as f64),
            value: self.gauge.map(|(v, _)| v),
            last_message: self.last_message.clone(),
            idle_s: now_s.saturating_sub(self.seen_s),
            points,
        }
    }
}

/// What the cap turned away.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overflow {
    /// The cap.
    pub max_series: usize,
    /// Samples of new series refused because the cap was reached.
    pub samples: u64,
    /// Those samples by metric name (the first [`OVERFLOW_NAMES`] names).
    pub by_name: BTreeMap<String, u64>,
    /// Those of other names.
    pub other_names: u64,
}

/// Every series at one moment, as the views show them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreView {
    /// When it was taken, Unix milliseconds.
    pub at_ms: u64,
    /// Every series, by source then series name.
    pub series: Vec<SeriesView>,
    /// The cap and what it turned away.
    pub overflow: Overflow,
    /// Samples older than the minute kept, not counted.
    pub too_old: u64,
    /// Histogram samples whose bucket counts did not fit their bounds.
    pub bad_histograms: u64,
    /// Series forgotten after [`IDLE`] seconds without a sample.
    pub forgotten: u64,
}

/// One series' statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesView {
    /// The service that sent it.
    pub source: String,
    /// The metric name as sent.
    pub name: String,
    /// Its labels.
    pub labels: Labels,
    /// `name{labels}` as people write it.
    pub series: String,
    /// `counter`, `gauge`, `observation`, `histogram`, `set` or `error`.
    pub kind: &'static str,
    /// The last complete second.
    pub second: Stats,
    /// The last 60 complete seconds.
    pub minute: Stats,
    /// A gauge's current value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// An error series' newest message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_message: Option<String>,
    /// Seconds since its last sample.
    pub idle_s: u64,
    /// One value per second of the last minute, oldest first (see
    /// [`Window::point`]); not in the JSON (the page keeps its own).
    #[serde(skip)]
    pub points: Vec<f64>,
}

/// The series store.
#[derive(Debug)]
pub struct Store {
    max_series: usize,
    len: usize,
    /// Series by the hash of their key (collisions share a bucket).
    series: HashMap<u64, Vec<Series>>,
    hasher: std::collections::hash_map::RandomState,
    overflow: Overflow,
    too_old: u64,
    bad_histograms: u64,
    forgotten: u64,
    /// Set members kept in every window, and the most it may.
    members: usize,
    max_members: usize,
}

impl Store {
    /// An empty store of at most `max_series` series.
    pub fn new(max_series: usize) -> Store {
        Store {
            max_series,
            len: 0,
            series: HashMap::new(),
            hasher: Default::default(),
            overflow: Overflow {
                max_series,
                ..Overflow::default()
            },
            too_old: 0,
            bad_histograms: 0,
            forgotten: 0,
            members: 0,
            max_members: MAX_STORE_MEMBERS,
        }
    }

    /// How many series it holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Counts every sample of `m`, an event published at `event_ms`, with
    /// the clock at `now_ms`.
    pub fn record(&mut self, m: &Metric, event_ms: u64, now_ms: u64) {
        let source = m.source();
        m.for_each_sample(|s| self.record_sample(source, s, event_ms, now_ms));
    }

    /// Counts one sample of `source`.
    pub fn record_sample(&mut self, source: &str, s: &Sample, event_ms: u64, now_ms: u64) {
        let at_ms = s.at_ms.unwrap_or(event_ms).min(now_ms);
        let (sec, now_s) = (at_ms / 1000, now_ms / 1000);
        if sec + MINUTE < now_s {
            self.too_old += 1;
            return;
        }
        let room = self.members < self.max_members;
        let Some(series) = self.entry(source, s) else {
            return;
        };
        series.kind = match &s.value {
            Value::GaugeDelta { .. } => "gauge",
            v => v.kind(),
        };
        series.seen_s = series.seen_s.max(now_s);
        if let Value::Error { message } = &s.value {
            series.last_message = Some(message.clone());
        }
        if let Value::Set { member } = &s.value {
            let kept = series.window(sec).member(member, room);
            self.members += usize::from(kept);
            return;
        }
        let gauge = series.gauge_after(&s.value, at_ms);
        if !series.window(sec).record(&s.value, gauge) {
            self.bad_histograms += 1;
        }
    }

    /// The series of `s`, made if there is room; `None` (counted as
    /// overflow) if not.
    fn entry(&mut self, source: &str, s: &Sample) -> Option<&mut Series> {
        let key = self.hasher.hash_one((source, &s.name, &s.labels));
        let full = self.len >= self.max_series;
        let bucket = self.series.entry(key).or_default();
        let i = match bucket.iter().position(|x| x.is(source, &s.name, &s.labels)) {
            Some(i) => i,
            None if full => {
                if bucket.is_empty() {
                    self.series.remove(&key);
                }
                let o = &mut self.overflow;
                o.samples += 1;
                let room = o.by_name.len() < OVERFLOW_NAMES;
                match o.by_name.get_mut(&s.name) {
                    Some(n) => *n += 1,
                    None if room => {
                        o.by_name.insert(s.name.clone(), 1);
                    }
                    None => o.other_names += 1,
                }
                return None;
            }
            None => {
                bucket.push(Series {
                    source: source.to_owned(),
                    name: s.name.clone(),
                    labels: s.labels.clone(),
                    kind: s.value.kind(),
                    seconds: VecDeque::new(),
                    gauge: None,
                    last_message: None,
                    seen_s: 0,
                });
                self.len += 1;
                bucket.len() - 1
            }
        };
        self.series.get_mut(&key).map(|b| &mut b[i])
    }

    /// Drops seconds that left the minute and forgets series idle for
    /// [`IDLE`] seconds, at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        let now_s = now_ms / 1000;
        let mut forgotten = 0;
        let mut freed = 0;
        self.series.retain(|_, bucket| {
            bucket.retain_mut(|s| {
                while s.seconds.front().is_some_and(|(x, _)| x + MINUTE < now_s) {
                    freed += s.seconds.pop_front().map_or(0, |(_, w)| w.members());
                }
                let keep = s.seen_s + IDLE > now_s;
                if !keep {
                    freed += s.seconds.iter().map(|(_, w)| w.members()).sum::<usize>();
                }
                forgotten += u64::from(!keep);
                keep
            });
            !bucket.is_empty()
        });
        self.members -= freed;
        self.len -= forgotten as usize;
        self.forgotten += forgotten;
    }

    /// Every series' statistics at `now_ms`.
    pub fn view(&self, now_ms: u64) -> StoreView {
        let now_s = now_ms / 1000;
        let mut series: Vec<SeriesView> = self
            .series
            .values()
            .flatten()
            .map(|s| s.view(now_s))
            .collect();
        series.sort_by(|a, b| (&a.source, &a.series).cmp(&(&b.source, &b.series)));
        StoreView {
            at_ms: now_ms,
            series,
            overflow: self.overflow.clone(),
            too_old: self.too_old,
            bad_histograms: self.bad_histograms,
            forgotten: self.forgotten,
        }
    }
}

#[cfg(test)]
mod tests;
