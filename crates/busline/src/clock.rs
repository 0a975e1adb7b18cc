//! Envelope timestamps, cheaply.
//!
//! Every publish stamps its envelope with the wall-clock time. Reading the
//! system clock costs ~30 ns on the machines busline is measured on; reading
//! the CPU's time-stamp counter (through `quanta`, which falls back to the OS
//! clock where the counter is unreliable) costs ~9 ns. So each thread keeps
//! an anchor (a system time and the counter value read with it) and stamps
//! `anchor + counter delta`, taking a fresh anchor at least every
//! millisecond: the result never strays from the system clock by more than
//! the counter's calibration error over one millisecond (well under a
//! microsecond), and follows the system clock when it is stepped.
//!
//! Stamps are nanoseconds since the Unix epoch in an `i64` (8 bytes in an
//! envelope where a `SystemTime` takes 16): that holds any time from 1677
//! to 2262; envelopes keep a time outside that apart.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a thread's anchor is used before a fresh one is taken.
const REANCHOR_NS: u64 = 1_000_000;

static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();

thread_local! {
    /// The anchor: a system time (nanoseconds since the Unix epoch) and the
    /// counter value read with it.
    static ANCHOR: Cell<Option<(i64, u64)>> = const { Cell::new(None) };
}

/// Calibrates the counter (once per process, a few milliseconds of
/// measuring) if that has not been done yet: called when a bus is made, so
/// that its first publish does not pay for it.
pub(crate) fn warm_up() {
    CLOCK.get_or_init(quanta::Clock::new);
}

/// The current wall-clock time in nanoseconds since the Unix epoch, or
/// `None` if the system clock reads a time that does not fit an `i64` that
/// way (before 1677 or after 2262).
pub(crate) fn now_nanos() -> Option<i64> {
    let clock = CLOCK.get_or_init(quanta::Clock::new);
    let raw = clock.raw();
    ANCHOR.with(|a| {
        if let Some((sys, at)) = a.get() {
            // A counter that went backwards (another core's) gives 0: the anchor.
            let d = clock.delta_as_nanos(at, raw);
            if d < REANCHOR_NS && raw >= at {
                if let Some(t) = sys.checked_add(d as i64) {
                    return Some(t);
                }
            }
        }
        let sys = to_nanos(SystemTime::now())?;
        a.set(Some((sys, clock.raw())));
        Some(sys)
    })
}

/// The current wall-clock time.
#[cfg(test)]
pub(crate) fn now() -> SystemTime {
    now_nanos().map_or_else(SystemTime::now, from_nanos)
}

/// `t` in nanoseconds since the Unix epoch, if that fits an `i64` (from
/// 1677 to 2262) and is not `i64::MIN`.
pub(crate) fn to_nanos(t: SystemTime) -> Option<i64> {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).ok(),
        // At most `i64::MAX` before: never `i64::MIN`.
        Err(e) => i64::try_from(e.duration().as_nanos()).ok().map(|n| -n),
    }
}

/// The time `nanos` nanoseconds after the Unix epoch (before, if negative):
/// the inverse of [`to_nanos`].
pub(crate) fn from_nanos(nanos: i64) -> SystemTime {
    let d = Duration::from_nanos(nanos.unsigned_abs());
    if nanos >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stamps agree with the system clock read around them.
    #[test]
    fn follows_the_system_clock() {
        for _ in 0..10_000 {
            let before = SystemTime::now();
            let t = now();
            let after = SystemTime::now();
            let slack = Duration::from_micros(50);
            assert!(t + slack >= before, "{t:?} before {before:?}");
            assert!(t <= after + slack, "{t:?} after {after:?}");
        }
    }

    /// Times convert to nanoseconds and back unchanged, and those too far
    /// from 1970 do not convert.
    #[test]
    fn nanos_round_trip() {
        let s = Duration::from_secs(1);
        for t in [
            UNIX_EPOCH,
            SystemTime::now(),
            UNIX_EPOCH + Duration::new(1_234_567_890, 123_456_789),
            UNIX_EPOCH - Duration::new(1_234_567_890, 123_456_789),
            UNIX_EPOCH + Duration::from_nanos(i64::MAX as u64),
            UNIX_EPOCH - Duration::from_nanos(i64::MAX as u64),
        ] {
            let n = to_nanos(t).unwrap();
            assert_ne!(n, i64::MIN);
            assert_eq!(from_nanos(n), t);
        }
        assert_eq!(
            to_nanos(UNIX_EPOCH + Duration::from_nanos(i64::MAX as u64) + s),
            None
        );
        assert_eq!(
            to_nanos(UNIX_EPOCH - Duration::from_nanos(i64::MAX as u64) - s),
            None
        );
        assert_eq!(to_nanos(UNIX_EPOCH - Duration::from_nanos(1 << 63)), None);
    }
}
