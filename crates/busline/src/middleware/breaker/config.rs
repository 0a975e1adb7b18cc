//! When a breaker opens, and how it recovers: [`BreakerConfig`].

use std::time::Duration;

/// When a breaker opens, and how it recovers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Open after this many failures in a row (0 = off).
    pub consecutive_failures: u32,
    /// Open when the failure rate over `rate_window` reaches this (0.0..=1.0;
    /// `None` = off).
    pub failure_rate: Option<f64>,
    /// The window the failure rate is measured over.
    pub rate_window: Duration,
    /// The rate is only judged once the window holds this many calls.
    pub min_calls: u32,
    /// How long it stays open before letting trials through.
    pub cool_down: Duration,
    /// Trial calls let through at once when half-open, and successes needed to close (≥ 1).
    pub half_open_trials: u32,
}

impl Default for BreakerConfig {
    /// 5 failures in a row, or 50% of at least 20 calls in 60 s; 30 s cool-down; 1 trial.
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate: Some(0.5),
            rate_window: Duration::from_secs(60),
            min_calls: 20,
            cool_down: Duration::from_secs(30),
            half_open_trials: 1,
        }
    }
}
