//! Durable timeouts: the clock that stamps them and the queue that fires them.
//!
//! A timeout is stored with its due time in unix milliseconds, in the same
//! record as the step that scheduled it, and removed from the saga's
//! pending set by the record of the step that handled it. So it is handled
//! at most once (its handling and its removal are one record) and, while
//! the saga runs, at least once (a restarted manager re-arms every pending
//! timeout; one already due fires at once).
//!
//! The manager's clock is the wall clock read once when it starts, moved on
//! by tokio's clock: `now = wall_at_start + (tokio::time::Instant::now() -
//! instant_at_start)`. Under tokio's paused time (`start_paused`,
//! `tokio::time::advance`) timeouts follow the virtual clock, so tests need
//! not wait. Across a restart, the wall clock counts again: time the
//! process was down counts towards a timeout.
//!
//! A note for tests on paused time: tokio advances a paused clock whenever
//! the runtime has nothing to do, which includes waiting for a log append's
//! fsync. A test that sleeps "until the timeout must have fired" may wake
//! before the manager even armed it; wait for what the timeout emits
//! instead, then sleep to check nothing else comes.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// The manager's clock (see the [module docs](self)).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    wall_ms: u64,
    start: Instant,
}

impl Clock {
    pub(crate) fn start() -> Self {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Clock {
            wall_ms,
            start: Instant::now(),
        }
    }

    /// Now, unix milliseconds.
    pub(crate) fn now_ms(&self) -> u64 {
        self.wall_ms + self.start.elapsed().as_millis() as u64
    }

    /// The due time of a timeout scheduled now, `after` from now.
    pub(crate) fn due_ms(&self, after: Duration) -> u64 {
        self.now_ms().saturating_add(after.as_millis() as u64)
    }

    /// The tokio instant at which `due_ms` is reached.
    pub(crate) fn instant(&self, due_ms: u64) -> Instant {
        self.start + Duration::from_millis(due_ms.saturating_sub(self.wall_ms))
    }
}

/// Armed timeouts, by due time: `(due_ms, correlation id, seq)`.
///
/// A timeout cancelled after it was armed stays here; the manager checks
/// the saga's pending set when it comes due and skips it.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    queue: BTreeSet<(u64, String, u64)>,
}

impl Timers {
    pub(crate) fn arm(&mut self, due_ms: u64, id: &str, seq: u64) {
        self.queue.insert((due_ms, id.to_owned(), seq));
    }

    /// The earliest due time, if any.
    pub(crate) fn next_due(&self) -> Option<u64> {
        self.queue.first().map(|(due, _, _)| *due)
    }

    /// Removes and returns every timeout due at or before `now_ms`, earliest first.
    pub(crate) fn take_due(&mut self, now_ms: u64) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        while let Some((due, _, _)) = self.queue.first() {
            if *due > now_ms {
                break;
            }
            let (_, id, seq) = self.queue.pop_first().expect("first exists");
            out.push((id, seq));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_timeouts_come_out_in_order_once() {
        let mut t = Timers::default();
        t.arm(30, "b", 1);
        t.arm(10, "a", 0);
        t.arm(50, "c", 2);
        assert_eq!(t.next_due(), Some(10));
        assert_eq!(t.take_due(30), vec![("a".into(), 0), ("b".into(), 1)]);
        assert!(t.take_due(30).is_empty());
        assert_eq!(t.next_due(), Some(50));
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_follows_paused_time() {
        let c = Clock::start();
        let due = c.due_ms(Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(c.now_ms() >= due);
        assert_eq!(c.instant(due), c.start + Duration::from_secs(10));
    }
}
