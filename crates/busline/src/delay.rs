//! Delays that grow and jitter: the supervisor's restart backoff and the
//! retry middleware's, computed the same way.

use std::time::Duration;

/// `initial × multiplier^exponent`, at most `max`. Computed in `f64`
/// seconds and saturating at `max`: it keeps growing for any exponent, and
/// no input overflows or panics.
pub(crate) fn grown(initial: Duration, multiplier: f64, exponent: u32, max: Duration) -> Duration {
    if exponent == 0 || multiplier == 1.0 {
        return initial.min(max);
    }
    let factor = multiplier.powi(i32::try_from(exponent).unwrap_or(i32::MAX));
    let secs = initial.as_secs_f64() * factor;
    // NaN, infinite or past `max`: `max`.
    if secs.is_nan() || secs >= max.as_secs_f64() {
        return max;
    }
    Duration::try_from_secs_f64(secs.max(0.0)).map_or(max, |d| d.min(max))
}

/// `d` less a random fraction of it, up to `jitter` (0 to 1; 0 or NaN: none).
pub(crate) fn jittered(d: Duration, jitter: f64) -> Duration {
    let jitter = jitter.min(1.0);
    if jitter.is_nan() || jitter <= 0.0 {
        return d;
    }
    let keep = 1.0 - jitter * rand::random::<f64>();
    Duration::try_from_secs_f64(d.as_secs_f64() * keep).map_or(d, |x| x.min(d))
}
