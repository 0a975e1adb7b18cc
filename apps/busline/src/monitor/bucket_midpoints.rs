//! Where a bucketed histogram's observations count: each bucket at its
//! midpoint. The series store (and so the dashboard, the web page, the
//! terminal view) and the alert rules both use [`midpoints`], so a
//! percentile is the same wherever it is shown.
//!
//! | bucket | counts at |
//! | --- | --- |
//! | `(a, b]` | `(a + b) / 2` |
//! | first, `(-inf, b]` | between the sender's `min` and `b`; without a min, `b / 2` for `b > 0` (values from 0), else `b` |
//! | last, `(a, +inf)` | between `a` and the sender's `max`; without a max, `a` |
//! | the only one | between `min` and `max` (either, else 0) |
//!
//! and never outside the sender's `min`..`max`.

/// `(midpoint, count)` of each non-empty bucket of a histogram with upper
/// `bounds` (ascending) and `counts` (one more than bounds), kept within the
/// known `min`/`max`.
pub fn midpoints(
    bounds: &[f64],
    counts: &[u64],
    min: Option<f64>,
    max: Option<f64>,
) -> Vec<(f64, u64)> {
    counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(i, &c)| {
            let lower = i.checked_sub(1).and_then(|j| bounds.get(j).copied());
            let mid = match (lower, bounds.get(i).copied()) {
                (Some(a), Some(b)) => (a + b) / 2.0,
                (None, Some(b)) => match min.filter(|m| *m <= b) {
                    Some(m) => (m + b) / 2.0,
                    None => (b.min(0.0) + b) / 2.0,
                },
                (Some(a), None) => max.filter(|m| *m >= a).map_or(a, |m| (a + m) / 2.0),
                (None, None) => match (min, max) {
                    (Some(a), Some(b)) => (a + b) / 2.0,
                    (a, b) => a.or(b).unwrap_or(0.0),
                },
            };
            (within(mid, min, max), c)
        })
        .collect()
}

/// `v` kept within `min`..`max` where known; unlike [`f64::clamp`] it
/// never panics (a `min` above `max` leaves `max` the winner).
pub fn within(v: f64, min: Option<f64>, max: Option<f64>) -> f64 {
    let v = min.map_or(v, |lo| v.max(lo));
    max.map_or(v, |hi| v.min(hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bucket_at_its_middle() {
        let b = [10.0, 20.0];
        assert_eq!(midpoints(&b, &[1, 2, 0], None, None), [(5.0, 1), (15.0, 2)]);
        assert_eq!(midpoints(&b, &[0, 0, 3], None, None), [(20.0, 3)]);
        assert_eq!(midpoints(&b, &[0, 0, 3], None, Some(40.0)), [(30.0, 3)]);
        assert_eq!(midpoints(&b, &[4, 0, 0], Some(6.0), None), [(8.0, 4)]);
        assert_eq!(midpoints(&[], &[2], Some(1.0), Some(3.0)), [(2.0, 2)]);
    }

    #[test]
    fn open_buckets_stay_inside_their_bounds() {
        // A negative first bound: the values are at most -10, not at -5.
        assert_eq!(
            midpoints(&[-10.0, 0.0], &[5, 0, 0], None, None),
            [(-10.0, 5)]
        );
        assert_eq!(
            midpoints(&[-10.0, 0.0], &[5, 0, 0], Some(-30.0), None),
            [(-20.0, 5)]
        );
        // Sender's min and max bound every midpoint.
        assert_eq!(
            midpoints(&[100.0], &[0, 10], None, Some(300.0)),
            [(200.0, 10)]
        );
        assert_eq!(
            midpoints(&[10.0, 20.0], &[0, 1, 0], Some(16.0), None),
            [(16.0, 1)]
        );
    }

    #[test]
    fn within_never_panics() {
        assert_eq!(within(3.0, Some(5.0), Some(1.0)), 1.0);
        assert_eq!(within(3.0, None, None), 3.0);
        assert_eq!(within(f64::NAN, Some(1.0), None), 1.0);
    }
}
