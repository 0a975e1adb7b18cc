//! Aggregates over a window: count, sum, min, max, mean and latency
//! percentiles (p50/p90/p99) from an [`hdrhistogram`].
//!
//! [`Accumulator`] is the running accumulator (record values one at a time);
//! [`Summary`] is the plain, copyable result you print, publish or compare.
//!
//! ```
//! use busline::stream::Accumulator;
//!
//! let mut latency = Accumulator::new();
//! for ms in 1..=100 {
//!     latency.record(ms as f64);
//! }
//! let s = latency.summary();
//! assert_eq!(s.count, 100);
//! assert_eq!(s.sum, 5050.0);
//! assert_eq!((s.min, s.max), (Some(1.0), Some(100.0)));
//! assert_eq!(s.mean, Some(50.5));
//! assert_eq!(s.p50, Some(50.0));
//! let p99 = s.p99.unwrap();
//! assert!((p99 - 99.0).abs() <= 99.0 * 0.001, "{p99}"); // within 0.1%
//! ```
//!
//! ## Precision
//!
//! Count, sum, min, max and mean are exact (`f64` arithmetic). Percentiles
//! come from a histogram with 3 significant decimal digits of precision
//! (hdrhistogram), recorded at a resolution of 0.001 units: a percentile is
//! within 0.1% of the true value. Negative values and NaN cannot go into the
//! histogram: they are counted in `count`/`sum`/`min`/`max` (NaN is skipped
//! everywhere) and reported in [`Summary::unranked`], never silently dropped.
//!
//! ## Empty
//!
//! An empty aggregate has `count == 0`, `sum == 0.0` and `None` for every
//! other statistic: there is no minimum of nothing.
//!
//! ```
//! use busline::stream::Accumulator;
//! let s = Accumulator::new().summary();
//! assert_eq!((s.count, s.sum, s.min, s.mean, s.p99), (0, 0.0, None, None, None));
//! ```

use hdrhistogram::Histogram;

/// Values are recorded in the histogram as integer multiples of this.
const RESOLUTION: f64 = 0.001;

/// A running aggregate: count, sum, min, max, mean and percentiles.
#[derive(Clone)]
pub struct Accumulator {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    nan: u64,
    unranked: u64,
    hist: Histogram<u64>,
}

impl std::fmt::Debug for Accumulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Accumulator").field(&self.summary()).finish()
    }
}

impl Default for Accumulator {
    fn default() -> Self {
        Self::new()
    }
}

impl Accumulator {
    /// An empty aggregate.
    pub fn new() -> Self {
        Accumulator {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            nan: 0,
            unranked: 0,
            // 3 significant digits, auto-resizing: `new` cannot fail for 3.
            hist: Histogram::new(3).expect("3 significant digits is a valid histogram precision"),
        }
    }

    /// An aggregate of `values`.
    pub fn from_values(values: impl IntoIterator<Item = f64>) -> Self {
        let mut a = Accumulator::new();
        for v in values {
            a.record(v);
        }
        a
    }

    /// Records one value. NaN is not counted (it is reported in
    /// [`Summary::nan`]); a negative value is counted but cannot be ranked.
    pub fn record(&mut self, value: f64) {
        self.record_n(value, 1);
    }

    /// Records `value` as `n` values at the cost of one: a weighted value,
    /// or the count of a bucket of a histogram made elsewhere.
    ///
    /// ```
    /// use busline::stream::Accumulator;
    /// let mut a = Accumulator::new();
    /// a.record_n(10.0, 9);
    /// a.record(1000.0);
    /// let s = a.summary();
    /// assert_eq!((s.count, s.sum), (10, 1090.0));
    /// let p50 = s.p50.unwrap();
    /// assert!((p50 - 10.0).abs() <= 10.0 * 0.001, "{p50}"); // within 0.1%
    /// ```
    pub fn record_n(&mut self, value: f64, n: u64) {
        if n == 0 {
            return;
        }
        if value.is_nan() {
            self.nan += n;
            return;
        }
        self.count += n;
        self.sum += value * n as f64;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if value < 0.0 || !value.is_finite() {
            self.unranked += n;
            return;
        }
        let scaled = (value / RESOLUTION).round();
        // Past what the histogram can hold (2^63 units): counted, not ranked
        // (it was ranked as that limit, far below its real value).
        if scaled >= (1u64 << 63) as f64 {
            self.unranked += n;
            return;
        }
        if self.hist.record_n(scaled as u64, n).is_err() {
            self.unranked += n;
        }
    }

    /// Records a duration in milliseconds (the usual unit for latency summaries).
    pub fn record_millis(&mut self, d: std::time::Duration) {
        self.record(d.as_secs_f64() * 1000.0);
    }

    /// Adds everything recorded in `other`.
    pub fn merge(&mut self, other: &Accumulator) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.nan += other.nan;
        self.unranked += other.unranked;
        if self.hist.add(&other.hist).is_err() {
            self.unranked += other.hist.len();
        }
    }

    /// Number of values recorded (NaN excluded).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The value at quantile `q` (0.0..=1.0) of the ranked values, within 0.1%.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.hist.is_empty() {
            return None;
        }
        let raw = self.hist.value_at_quantile(q.clamp(0.0, 1.0));
        let raw = self.hist.median_equivalent(raw);
        // The middle of the histogram's bucket, but never outside the exact range.
        let v = raw as f64 * RESOLUTION;
        Some(v.clamp(self.min.max(0.0), self.max))
    }

    /// A snapshot of every statistic.
    pub fn summary(&self) -> Summary {
        let some = |v: f64| (self.count > 0).then_some(v);
        Summary {
            count: self.count,
            sum: self.sum,
            min: some(self.min),
            max: some(self.max),
            mean: some(self.sum / self.count as f64),
            p50: self.quantile(0.50),
            p90: self.quantile(0.90),
            p99: self.quantile(0.99),
            unranked: self.unranked,
            nan: self.nan,
        }
    }
}

/// The statistics of a window (or any set of values), as plain data.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// How many values (NaN excluded).
    pub count: u64,
    /// Their sum (0.0 when empty).
    pub sum: f64,
    /// The smallest, if any.
    pub min: Option<f64>,
    /// The largest, if any.
    pub max: Option<f64>,
    /// The arithmetic mean, if any.
    pub mean: Option<f64>,
    /// Median, from the histogram (within 0.1%).
    pub p50: Option<f64>,
    /// 90th percentile, from the histogram (within 0.1%).
    pub p90: Option<f64>,
    /// 99th percentile, from the histogram (within 0.1%).
    pub p99: Option<f64>,
    /// Values counted but left out of the percentiles (negative or infinite).
    pub unranked: u64,
    /// NaN values seen and skipped.
    pub nan: u64,
}

impl Summary {
    /// The summary of `values`.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Summary {
        Accumulator::from_values(values).summary()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut a = Accumulator::new();
        for i in 0..1000 {
            a.record(i as f64 / 10.0); // 0.0 .. 99.9
        }
        let s = a.summary();
        assert!((s.p50.unwrap() - 49.9).abs() < 0.1, "{s:?}");
        assert!((s.p90.unwrap() - 89.9).abs() < 0.1, "{s:?}");
        assert!((s.p99.unwrap() - 98.9).abs() < 0.1, "{s:?}");
    }

    #[test]
    fn record_n_is_n_records() {
        let mut one_by_one = Accumulator::new();
        let mut at_once = Accumulator::new();
        for (v, n) in [(1.5, 3), (20.0, 1000), (-2.0, 2), (f64::NAN, 4), (7.0, 0)] {
            for _ in 0..n {
                one_by_one.record(v);
            }
            at_once.record_n(v, n);
        }
        assert_eq!(one_by_one.summary(), at_once.summary());
        assert_eq!(at_once.summary().count, 1005);
    }

    #[test]
    fn negative_and_nan_are_reported() {
        let a = Accumulator::from_values([-1.0, f64::NAN, 3.0]);
        let s = a.summary();
        assert_eq!(s.count, 2);
        assert_eq!(s.sum, 2.0);
        assert_eq!(s.min, Some(-1.0));
        assert_eq!(s.unranked, 1);
        assert_eq!(s.nan, 1);
        assert_eq!(s.p50, Some(3.0));
    }

    #[test]
    fn merge_adds_up() {
        let mut a = Accumulator::from_values([1.0, 2.0]);
        a.merge(&Accumulator::from_values([10.0]));
        let s = a.summary();
        assert_eq!((s.count, s.sum, s.max), (3, 13.0, Some(10.0)));
        assert_eq!(s.p99, Some(10.0));
    }
}
