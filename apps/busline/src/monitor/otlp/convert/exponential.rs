//! Exponential histograms as explicit buckets: the monitor's histograms
//! have explicit bounds, so each edge of an exponential histogram becomes
//! one.

use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets as ExpBuckets, ExponentialHistogramDataPoint,
};

use crate::monitor::cumulative::Buckets;

/// The most buckets on one side of an exponential histogram taken.
pub const MAX_EXP_BUCKETS: usize = 1024;

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
