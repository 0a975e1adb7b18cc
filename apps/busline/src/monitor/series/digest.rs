//! A sparse HDR histogram of weighted values: the percentiles of a series.
//!
//! Values are quantized the way an [`hdrhistogram`] with 3 significant
//! decimal digits does (recorded at a resolution of 0.001 units, as
//! busline's [`Accumulator`](busline::stream::Accumulator)), so a percentile is
//! within 0.1% of the true value. Unlike a dense histogram, only the buckets
//! that hold values take memory: a series with one value a second keeps a
//! handful of entries, not the tens of kilobytes of a dense `Histogram`,
//! which is what lets the store keep thousands of series. Weights are `f64`
//! (a StatsD timer sampled at `@0.3` stands for 3.33 values).
//!
//! ```text
//! digest.add(12.5, 1.0); digest.add(40.0, 3.0);
//! digest.quantile(0.5) == 40.0 (within 0.1%)
//! ```

use std::collections::BTreeMap;
use std::sync::OnceLock;

use hdrhistogram::Histogram;

use crate::monitor::bucket_midpoints::within;

/// Values are quantized as integer multiples of this.
const RESOLUTION: f64 = 0.001;
/// The largest magnitude (in units of [`RESOLUTION`]) that is ranked.
const MAX_UNITS: f64 = (1u64 << 62) as f64;

/// The histogram whose bucket layout quantizes values (it holds none).
fn layout() -> &'static Histogram<u64> {
    static LAYOUT: OnceLock<Histogram<u64>> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        Histogram::new(3).expect("3 significant digits is a valid histogram precision")
    })
}

/// Weighted values by HDR bucket.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Digest {
    /// Bucket (its lowest value in units, negated for negative values) →
    /// weight in it.
    buckets: BTreeMap<i64, f64>,
    /// The weight of every ranked value.
    total: f64,
    /// Weight of values that cannot be ranked (NaN, infinite, too large).
    pub unranked: f64,
}

impl Digest {
    /// Adds `weight` values of `value`; a weight that is not a positive
    /// number adds nothing.
    pub fn add(&mut self, value: f64, weight: f64) {
        if !(weight > 0.0 && weight.is_finite()) {
            return;
        }
        let units = (value.abs() / RESOLUTION).round();
        if !units.is_finite() || units >= MAX_UNITS {
            self.unranked += weight;
            return;
        }
        let low = layout().lowest_equivalent(units as u64) as i64;
        let key = if value < 0.0 { -low } else { low };
        *self.buckets.entry(key).or_insert(0.0) += weight;
        self.total += weight;
    }

    /// Adds everything in `other`.
    pub fn merge(&mut self, other: &Digest) {
        for (k, w) in &other.buckets {
            *self.buckets.entry(*k).or_insert(0.0) += w;
        }
        self.total += other.total;
        self.unranked += other.unranked;
    }

    /// How many buckets hold values (the digest's size).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// The value at quantile `q` (0..=1): the middle of the bucket where the
    /// running weight reaches `q` of the total.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.buckets.is_empty() {
            return None;
        }
        let target = q.clamp(0.0, 1.0) * self.total;
        let mut seen = 0.0;
        let mut at = 0;
        for (k, w) in &self.buckets {
            seen += w;
            at = *k;
            // A little slack for the float sum of fractional weights.
            if seen >= target * (1.0 - 1e-12) {
                break;
            }
        }
        let mid = layout().median_equivalent(at.unsigned_abs()) as f64 * RESOLUTION;
        Some(if at < 0 { -mid } else { mid })
    }
}

impl Digest {
    /// [`quantile`](Self::quantile) kept within the values' known `min` and
    /// `max` (the exact extremes, where the bucket's middle is off by up to
    /// 0.1%): the percentile the series store and the alert rules report.
    pub fn quantile_within(&self, q: f64, min: Option<f64>, max: Option<f64>) -> Option<f64> {
        self.quantile(q).map(|v| within(v, min, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `got` is `want` within the histogram's precision (0.1%).
    fn near(got: Option<f64>, want: f64) {
        let got = got.expect("a value");
        assert!((got - want).abs() <= want.abs() * 0.001, "{got} vs {want}");
    }

    #[test]
    fn percentiles_are_within_a_tenth_of_a_percent() {
        let mut d = Digest::default();
        for i in 1..=1000 {
            d.add(i as f64, 1.0);
        }
        for (q, want) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0), (1.0, 1000.0)] {
            let got = d.quantile(q).unwrap();
            assert!((got - want).abs() <= want * 0.001, "q{q}: {got} vs {want}");
        }
        assert!(d.len() <= 1000);
    }

    #[test]
    fn weights_count_as_that_many_values() {
        let mut d = Digest::default();
        d.add(10.0, 1.0);
        d.add(100.0, 3.0); // three quarters of the weight
        near(d.quantile(0.25), 10.0);
        near(d.quantile(0.5), 100.0);
        d.add(5.0, 0.0);
        d.add(5.0, f64::NAN);
        near(d.quantile(0.0), 10.0);
    }

    #[test]
    fn negative_and_unrankable_values() {
        let mut d = Digest::default();
        d.add(-50.0, 1.0);
        d.add(-5.0, 1.0);
        d.add(5.0, 1.0);
        d.add(f64::INFINITY, 1.0);
        d.add(f64::NAN, 1.0);
        near(d.quantile(0.0), -50.0);
        near(d.quantile(0.5), -5.0);
        near(d.quantile(1.0), 5.0);
        assert_eq!(d.unranked, 2.0);
    }

    #[test]
    fn merging_adds_the_weights() {
        let mut a = Digest::default();
        a.add(1.0, 1.0);
        let mut b = Digest::default();
        b.add(2.0, 2.0);
        b.add(1.0, 1.0);
        a.merge(&b);
        assert_eq!(a.len(), 2);
        near(a.quantile(0.5), 1.0);
        near(a.quantile(0.51), 2.0);
    }
}
