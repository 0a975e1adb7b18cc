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

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// How long a thread's anchor is used before a fresh one is taken.
const REANCHOR_NS: u64 = 1_000_000;

static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();

thread_local! {
    static ANCHOR: Cell<Option<(SystemTime, u64)>> = const { Cell::new(None) };
}

/// Calibrates the counter (once per process, a few milliseconds of
/// measuring) if that has not been done yet: called when a bus is made, so
/// that its first publish does not pay for it.
pub(crate) fn warm_up() {
    CLOCK.get_or_init(quanta::Clock::new);
}

/// The current wall-clock time.
pub(crate) fn now() -> SystemTime {
    let clock = CLOCK.get_or_init(quanta::Clock::new);
    let raw = clock.raw();
    ANCHOR.with(|a| {
        if let Some((sys, at)) = a.get() {
            // A counter that went backwards (another core's) gives 0: the anchor.
            let d = clock.delta_as_nanos(at, raw);
            if d < REANCHOR_NS && raw >= at {
                return sys + Duration::from_nanos(d);
            }
        }
        let sys = SystemTime::now();
        a.set(Some((sys, clock.raw())));
        sys
    })
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
}
