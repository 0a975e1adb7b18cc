//! Cumulative values turned into increments, per series.
//!
//! OTLP sums and histograms with cumulative temporality, and every Prometheus
//! counter and histogram, report a running total since the sender started.
//! The monitor's samples carry increments ([`Value::Counter`](crate::monitor::sample::Value::Counter) is "how much
//! it went up", [`Value::Histogram`](crate::monitor::sample::Value::Histogram) "what was observed since the last
//! report"), so a [`Cumulative`] remembers the last total of each series and
//! hands out the difference.
//!
//! ## The rules
//!
//! - **A series is** a key the caller builds (the source, the metric name,
//!   its labels, and anything else that tells two senders apart).
//! - **A reset** is a total below the previous one (for a histogram: its
//!   count, or any bucket, went down), or a start time different from the
//!   previous one (OTLP's `start_time_unix_nano`): the sender restarted, so
//!   the whole new total is the increment. A reset never gives a negative
//!   increment.
//! - **First sight** gives no increment: the total is a baseline (it may
//!   hold hours of counting from before the monitor watched). Except when
//!   the sender says when its series started ([`Start::At`]) and that is at
//!   or after the moment this tracker was made: then all of the total was
//!   counted while the monitor watched, and all of it is the increment (an
//!   OTLP SDK started after the monitor has its first export counted whole;
//!   a Prometheus `_created` time says the same), or the series appeared in
//!   a later report of a sender already seen ([`Start::Appeared`]).
//! - **Buckets changed** (a cumulative histogram whose bounds differ from
//!   last time, with no reset): the new report becomes the baseline and gives
//!   no increment; [`Step::Rebased`] says so, so the caller can count it.
//! - **Bounded**: at most `cap` series are tracked. When full, series not
//!   seen for `stale` are forgotten; if none is stale, a new series is not
//!   tracked and [`Step::Full`] says so (the caller counts it as refused).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The default cap on tracked series.
pub const DEFAULT_CAP: usize = 100_000;
/// The default time after which an unseen series is forgotten.
pub const DEFAULT_STALE: Duration = Duration::from_secs(15 * 60);

/// When a series started counting, as its sender says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The sender does not say (Prometheus text, OTLP with a zero start time).
    Unknown,
    /// Unix nanoseconds.
    At(u64),
    /// The sender does not say, but the series is new since the sender's
    /// last report (a Prometheus series that appears in a later scrape): it
    /// started while the monitor watched. Compared as [`Start::Unknown`].
    Appeared,
    /// The sender says it started at these Unix nanoseconds, and the series
    /// is new since the sender's last report (an OTLP attribute set first
    /// seen in a later export): counted whole. Compared as [`Start::At`].
    AppearedAt(u64),
}

impl Start {
    /// What later reports are compared with.
    fn kept(self) -> Start {
        match self {
            Start::Appeared => Start::Unknown,
            Start::AppearedAt(ns) => Start::At(ns),
            s => s,
        }
    }
}

/// What one cumulative report gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<T> {
    /// The increment since the last report.
    Increment(T),
    /// The sender restarted: the whole new total.
    Reset(T),
    /// First sight of the series, and it started before the monitor
    /// watched: a baseline, no increment.
    Baseline,
    /// First sight of a series that started while the monitor watched: the
    /// whole total.
    Started(T),
    /// A histogram's buckets changed: a new baseline, no increment.
    Rebased,
    /// Too many series tracked: this one is not (no increment).
    Full,
}

impl<T> Step<T> {
    /// The increment, if the report gave one.
    pub fn increment(self) -> Option<T> {
        match self {
            Step::Increment(v) | Step::Reset(v) | Step::Started(v) => Some(v),
            Step::Baseline | Step::Rebased | Step::Full => None,
        }
    }
}

/// Bucketed observations, counted since the sender started (OTLP
/// cumulative histogram) or since its last report (the increment).
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    /// Upper bounds, ascending; `counts` has one more entry.
    pub bounds: Vec<f64>,
    /// Observations per bucket (not cumulative across buckets).
    pub counts: Vec<u64>,
    /// Sum of the observations, if known.
    pub sum: Option<f64>,
}

impl Buckets {
    fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, c| a.saturating_add(*c))
    }
}

#[derive(Debug)]
enum Last {
    Value(f64),
    Buckets(Buckets),
}

#[derive(Debug)]
struct Entry {
    last: Last,
    start: Start,
    seen: Instant,
}

/// The last total of every tracked series (see the [module docs](self)).
#[derive(Debug)]
pub struct Cumulative {
    series: HashMap<String, Entry, ahash::RandomState>,
    senders: HashMap<String, Instant, ahash::RandomState>,
    cap: usize,
    stale: Duration,
    born_ns: u64,
}

impl Default for Cumulative {
    fn default() -> Cumulative {
        Cumulative::new(DEFAULT_CAP, DEFAULT_STALE)
    }
}

impl Cumulative {
    /// Tracks at most `cap` series; forgets those unseen for `stale` when full.
    pub fn new(cap: usize, stale: Duration) -> Cumulative {
        Cumulative {
            series: HashMap::default(),
            senders: HashMap::default(),
            cap: cap.max(1),
            stale,
            born_ns: super::sample::unix_ms(std::time::SystemTime::now()).saturating_mul(1_000_000),
        }
    }

    /// How many series are tracked.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether a report of `sender` (an OTLP resource and scope) came
    /// before; notes this one. Senders are capped and forgotten like series
    /// (one not noted is "not seen": its new series are baselines).
    pub fn sender_seen(&mut self, sender: &str, now: Instant) -> bool {
        if let Some(seen) = self.senders.get_mut(sender) {
            *seen = now;
            return true;
        }
        if self.senders.len() >= self.cap {
            let stale = self.stale;
            self.senders
                .retain(|_, seen| now.saturating_duration_since(*seen) < stale);
        }
        if self.senders.len() < self.cap {
            self.senders.insert(sender.to_owned(), now);
        }
        false
    }

    /// The increment of a counter whose total is now `total`.
    pub fn counter(&mut self, key: &str, total: f64, start: Start, now: Instant) -> Step<f64> {
        let appeared = matches!(start, Start::Appeared | Start::AppearedAt(_));
        let start = start.kept();
        let Some(entry) = self.entry(key, now) else {
            return Step::Full;
        };
        let Some(e) = entry else {
            return self.first(key, Last::Value(total), start, appeared, now, total);
        };
        let restarted = start != Start::Unknown && e.start != Start::Unknown && start != e.start;
        let step = match e.last {
            Last::Value(prev) if !restarted && total >= prev => Step::Increment(total - prev),
            _ => Step::Reset(total),
        };
        e.last = Last::Value(total);
        e.start = start;
        e.seen = now;
        step
    }

    /// The observations since the last report of a histogram whose totals
    /// are now `total`.
    pub fn histogram(
        &mut self,
        key: &str,
        total: Buckets,
        start: Start,
        now: Instant,
    ) -> Step<Buckets> {
        let appeared = matches!(start, Start::Appeared | Start::AppearedAt(_));
        let start = start.kept();
        let Some(entry) = self.entry(key, now) else {
            return Step::Full;
        };
        let Some(e) = entry else {
            let whole = total.clone();
            return self.first(key, Last::Buckets(total), start, appeared, now, whole);
        };
        let restarted = start != Start::Unknown && e.start != Start::Unknown && start != e.start;
        // The new total is kept; the one it replaces lends its vectors to
        // the increment (no allocation per report).
        let prev = std::mem::replace(&mut e.last, Last::Buckets(total));
        let Last::Buckets(total) = &e.last else {
            unreachable!("just stored")
        };
        let step = match prev {
            Last::Buckets(prev) if !restarted => diff(prev, total),
            _ => Step::Reset(total.clone()),
        };
        e.start = start;
        e.seen = now;
        step
    }

    /// The entry of `key`: `Some(Some)` when tracked, `Some(None)` when it
    /// is not but there is room, `None` when there is no room.
    fn entry(&mut self, key: &str, now: Instant) -> Option<Option<&mut Entry>> {
        // Looked up once while there is room (the common case).
        if self.series.len() >= self.cap && !self.series.contains_key(key) {
            let stale = self.stale;
            self.series
                .retain(|_, e| now.saturating_duration_since(e.seen) < stale);
            if self.series.len() >= self.cap {
                return None;
            }
        }
        Some(self.series.get_mut(key))
    }

    fn first<T>(
        &mut self,
        key: &str,
        last: Last,
        start: Start,
        appeared: bool,
        now: Instant,
        whole: T,
    ) -> Step<T> {
        self.series.insert(
            key.to_owned(),
            Entry {
                last,
                start,
                seen: now,
            },
        );
        match start {
            _ if appeared => Step::Started(whole),
            Start::At(ns) if ns >= self.born_ns => Step::Started(whole),
            _ => Step::Baseline,
        }
    }
}

/// `now - prev` per bucket, or a reset / new baseline.
/// The step from `prev` to `now`; an increment is written over `prev`'s
/// vectors.
fn diff(prev: Buckets, now: &Buckets) -> Step<Buckets> {
    if now.count() < prev.count() {
        return Step::Reset(now.clone());
    }
    if prev.bounds != now.bounds || prev.counts.len() != now.counts.len() {
        return Step::Rebased;
    }
    if now.counts.iter().zip(&prev.counts).any(|(n, p)| n < p) {
        return Step::Reset(now.clone());
    }
    let mut inc = prev;
    // Equal as numbers (so of one length), but copied: -0.0 == 0.0.
    inc.bounds.copy_from_slice(&now.bounds);
    for (p, n) in inc.counts.iter_mut().zip(&now.counts) {
        *p = n - *p;
    }
    inc.sum = match (now.sum, inc.sum) {
        (Some(n), Some(p)) => Some(n - p),
        _ => None,
    };
    Step::Increment(inc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(counts: &[u64], sum: f64) -> Buckets {
        Buckets {
            bounds: vec![1.0, 10.0],
            counts: counts.to_vec(),
            sum: Some(sum),
        }
    }

    #[test]
    fn counters_give_increments_and_resets_never_go_negative() {
        let mut c = Cumulative::default();
        let t = Instant::now();
        assert_eq!(c.counter("a", 100.0, Start::Unknown, t), Step::Baseline);
        assert_eq!(
            c.counter("a", 103.0, Start::Unknown, t),
            Step::Increment(3.0)
        );
        assert_eq!(
            c.counter("a", 103.0, Start::Unknown, t),
            Step::Increment(0.0)
        );
        // Restarted: back to 2.
        assert_eq!(c.counter("a", 2.0, Start::Unknown, t), Step::Reset(2.0));
        assert_eq!(c.counter("a", 5.0, Start::Unknown, t), Step::Increment(3.0));
        // Another series is apart.
        assert_eq!(c.counter("b", 7.0, Start::Unknown, t), Step::Baseline);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn a_new_start_time_is_a_reset_even_when_the_total_grew() {
        let mut c = Cumulative::default();
        let t = Instant::now();
        assert_eq!(c.counter("a", 10.0, Start::At(1), t), Step::Baseline);
        assert_eq!(c.counter("a", 12.0, Start::At(1), t), Step::Increment(2.0));
        assert_eq!(c.counter("a", 50.0, Start::At(2), t), Step::Reset(50.0));
    }

    #[test]
    fn a_series_started_after_the_tracker_counts_whole_at_first_sight() {
        let mut c = Cumulative::default();
        let t = Instant::now();
        let later =
            (super::super::sample::unix_ms(std::time::SystemTime::now()) + 1000) * 1_000_000;
        assert_eq!(c.counter("a", 4.0, Start::At(later), t), Step::Started(4.0));
        assert_eq!(
            c.counter("a", 6.0, Start::At(later), t),
            Step::Increment(2.0)
        );
    }

    #[test]
    fn histograms_give_bucket_increments_with_resets_and_rebases() {
        let mut c = Cumulative::default();
        let t = Instant::now();
        assert_eq!(
            c.histogram("h", b(&[1, 2, 0], 9.0), Start::Unknown, t),
            Step::Baseline
        );
        assert_eq!(
            c.histogram("h", b(&[1, 5, 1], 40.0), Start::Unknown, t),
            Step::Increment(b(&[0, 3, 1], 31.0))
        );
        // A bucket went down: a restart.
        assert_eq!(
            c.histogram("h", b(&[3, 0, 0], 1.5), Start::Unknown, t),
            Step::Reset(b(&[3, 0, 0], 1.5))
        );
        // Same count, other bounds: a new baseline.
        let other = Buckets {
            bounds: vec![2.0, 20.0],
            counts: vec![3, 0, 1],
            sum: None,
        };
        assert_eq!(c.histogram("h", other, Start::Unknown, t), Step::Rebased);
    }

    #[test]
    fn the_cap_forgets_stale_series_and_refuses_when_none_is() {
        let mut c = Cumulative::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        c.counter("a", 1.0, Start::Unknown, t0);
        c.counter("b", 1.0, Start::Unknown, t0);
        assert_eq!(c.counter("c", 1.0, Start::Unknown, t0), Step::Full);
        // Known series still work when full.
        assert_eq!(
            c.counter("a", 2.0, Start::Unknown, t0),
            Step::Increment(1.0)
        );
        let t1 = t0 + Duration::from_secs(61);
        c.counter("a", 3.0, Start::Unknown, t1);
        // b is stale now: forgotten to make room.
        assert_eq!(c.counter("c", 1.0, Start::Unknown, t1), Step::Baseline);
        assert_eq!(c.len(), 2);
        assert_eq!(c.counter("b", 9.0, Start::Unknown, t1), Step::Full);
    }
}
