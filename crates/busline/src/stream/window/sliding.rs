//! A sliding window of values for use in a loop: [`SlidingWindow`].

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::stream::accumulator::{Accumulator, Summary};

/// A sliding window of values over the last `span` of (tokio) time, for use
/// inside a loop rather than as a stream.
///
/// A value recorded at `t` counts while `now - t < span`: it leaves the
/// window exactly at `t + span`. Reads are exact (no buckets) and cost O(n)
/// in the values inside the window; memory is one `(Instant, f64)` per value
/// in the window.
///
/// Reading at a time evicts the values that left the window by then, for
/// good: read in time order (as a loop using the clock does). A read at an
/// earlier time than a previous read no longer sees the values evicted by it.
///
/// For a rate, record `1.0` for each failure and `0.0` for each success:
/// the window's `mean` is then the failure rate over the span.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// use busline::stream::SlidingWindow;
///
/// let mut errors = SlidingWindow::new(Duration::from_secs(60));
/// errors.incr();
/// tokio::time::advance(Duration::from_secs(30)).await;
/// errors.incr();
/// assert_eq!(errors.count(), 2);
/// tokio::time::advance(Duration::from_secs(30)).await; // the first is exactly 60 s old
/// assert_eq!(errors.count(), 1);
/// assert_eq!(errors.summary().sum, 1.0);
///
/// let mut outcomes = SlidingWindow::new(Duration::from_secs(60));
/// for failed in [true, false, false, false] { outcomes.record(if failed { 1.0 } else { 0.0 }); }
/// assert_eq!(outcomes.summary().mean, Some(0.25)); // error rate
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    span: Duration,
    values: VecDeque<(Instant, f64)>,
}

impl SlidingWindow {
    /// An empty window covering the last `span`.
    pub fn new(span: Duration) -> Self {
        SlidingWindow {
            span,
            values: VecDeque::new(),
        }
    }

    /// The span it covers.
    pub fn span(&self) -> Duration {
        self.span
    }

    /// Records `value` now.
    pub fn record(&mut self, value: f64) {
        self.record_at(Instant::now(), value);
    }

    /// Records one occurrence (value 1.0) now: for counting.
    pub fn incr(&mut self) {
        self.record(1.0);
    }

    /// Records `value` at `at`. Values are expected in time order; one older
    /// than the newest is placed in order (a slower insert, still exact).
    pub fn record_at(&mut self, at: Instant, value: f64) {
        match self.values.back() {
            Some((last, _)) if *last > at => {
                let i = self.values.partition_point(|(t, _)| *t <= at);
                self.values.insert(i, (at, value));
            }
            _ => self.values.push_back((at, value)),
        }
    }

    /// Drops values that left the window by `now`.
    pub fn evict(&mut self, now: Instant) {
        while let Some((t, _)) = self.values.front() {
            if now.saturating_duration_since(*t) >= self.span {
                self.values.pop_front();
            } else {
                break;
            }
        }
    }

    fn live(&mut self, now: Instant) -> impl Iterator<Item = f64> + '_ {
        self.evict(now);
        self.values
            .iter()
            .take_while(move |(t, _)| *t <= now)
            .map(|(_, v)| *v)
    }

    /// Values in the window now.
    pub fn count(&mut self) -> u64 {
        self.count_at(Instant::now())
    }

    /// Values in the window at `now`.
    pub fn count_at(&mut self, now: Instant) -> u64 {
        self.live(now).count() as u64
    }

    /// Sum of the values in the window now.
    pub fn sum(&mut self) -> f64 {
        self.live(Instant::now()).sum()
    }

    /// Every statistic of the window now.
    pub fn summary(&mut self) -> Summary {
        self.summary_at(Instant::now())
    }

    /// Every statistic of the window at `now` (values recorded after `now`
    /// are not included).
    pub fn summary_at(&mut self, now: Instant) -> Summary {
        Accumulator::from_values(self.live(now)).summary()
    }
}
