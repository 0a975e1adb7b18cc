//! Priority lanes: high first, low never starved.
//!
//! [`prioritize(lanes, classify)`](super::StreamOpsExt::prioritize) reads its
//! input eagerly into three bounded lanes (high, normal, low) and serves the
//! highest non-empty lane first, with a guaranteed share for the others: while
//! a normal event waits, at least one of every `normal_every` events served is
//! normal; while a low event waits, at least one of every `low_every` is low.
//! Both shares hold together for any `normal_every` and `low_every` of 2 or
//! more: when both would fall due at the same output, normal goes one output
//! early. So under any load a waiting low event is served within `low_every`
//! outputs. A share of 1 gives its lane every output while it has events
//! (normal's first, if both are 1).
//!
//! Priorities only matter when the consumer is slower than the input: the
//! operator buffers up to `capacity` events in total; when all lanes together
//! hold `capacity` it stops reading its input (backpressure, nothing dropped).
//! Within a lane, order is kept.
//!
//! ```text
//!  low_every = 3, input: H1 H2 H3 H4 L1 H5 H6 (all queued)
//!  served:   H1 H2 L1 H3 H4 H5 H6
//!                  ^ low's guaranteed 1 in 3
//! ```
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use futures::{stream, StreamExt};
//! use busline::stream::{Lanes, Priority, StreamOpsExt};
//!
//! let input = stream::iter(["h1", "h2", "h3", "h4", "l1", "h5", "h6"]);
//! let lanes = Lanes { low_every: 3, ..Lanes::default() };
//! let out: Vec<_> = input
//!     .prioritize(lanes, |e| if e.starts_with('h') { Priority::High } else { Priority::Low })
//!     .collect()
//!     .await;
//! assert_eq!(out, ["h1", "h2", "l1", "h3", "h4", "h5", "h6"]);
//! # }
//! ```

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;

/// The lane an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Served first.
    High,
    /// Served after high, with a guaranteed share.
    Normal,
    /// Served last, with a guaranteed share.
    Low,
}

/// Sizes and guaranteed shares of the priority lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lanes {
    /// Events buffered in all lanes together before the input is paused.
    pub capacity: usize,
    /// While a normal event waits, at least 1 in `normal_every` served is normal (≥ 1).
    pub normal_every: u32,
    /// While a low event waits, at least 1 in `low_every` served is low (≥ 1).
    pub low_every: u32,
}

impl Default for Lanes {
    /// Capacity 1024, normal 1 in 4, low 1 in 10.
    fn default() -> Self {
        Lanes {
            capacity: 1024,
            normal_every: 4,
            low_every: 10,
        }
    }
}

pin_project_lite::pin_project! {
    /// Priority lanes; see the [module docs](self).
    #[must_use = "streams do nothing unless polled"]
    pub struct Prioritize<S: Stream, F> {
        #[pin]
        stream: S,
        classify: F,
        lanes: Lanes,
        queues: [VecDeque<S::Item>; 3],
        // Consecutive outputs that skipped a non-empty normal / low lane.
        skipped: [u32; 3],
        done: bool,
    }
}

impl<S: Stream, F> Prioritize<S, F> {
    pub(crate) fn new(stream: S, lanes: Lanes, classify: F) -> Self {
        assert!(
            lanes.capacity > 0,
            "priority lanes need a capacity of at least 1"
        );
        Prioritize {
            stream,
            classify,
            lanes: Lanes {
                normal_every: lanes.normal_every.max(1),
                low_every: lanes.low_every.max(1),
                ..lanes
            },
            queues: Default::default(),
            skipped: [0; 3],
            done: false,
        }
    }
}

impl<S, F> Stream for Prioritize<S, F>
where
    S: Stream,
    F: FnMut(&S::Item) -> Priority,
{
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let mut this = self.project();
        let buffered = |q: &[VecDeque<S::Item>; 3]| q.iter().map(VecDeque::len).sum::<usize>();
        while !*this.done && buffered(this.queues) < this.lanes.capacity {
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    let lane = (this.classify)(&item) as usize;
                    this.queues[lane].push_back(item);
                }
                Poll::Ready(None) => *this.done = true,
                Poll::Pending => break,
            }
        }
        let waiting = |lane: usize| !this.queues[lane].is_empty();
        let (normal, low) = (Priority::Normal as usize, Priority::Low as usize);
        // Outputs a waiting lane can still be skipped before its share is
        // broken (0: it must go now).
        let slack = |lane: usize, every: u32| {
            waiting(lane).then(|| (every - 1).saturating_sub(this.skipped[lane]))
        };
        let due = (
            slack(normal, this.lanes.normal_every),
            slack(low, this.lanes.low_every),
        );
        let pick = if due.0 == Some(0) {
            normal
        } else if due.1 == Some(0) {
            low
        } else if due == (Some(1), Some(1)) {
            // Both must go within the next two outputs: one goes now, or
            // they would meet and one would miss its turn.
            normal
        } else if let Some(lane) = (0..3).find(|&l| waiting(l)) {
            lane
        } else {
            return if *this.done {
                Poll::Ready(None)
            } else {
                Poll::Pending
            };
        };
        for lane in [normal, low] {
            this.skipped[lane] = if lane != pick && waiting(lane) {
                this.skipped[lane] + 1
            } else {
                0
            };
        }
        Poll::Ready(this.queues[pick].pop_front())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::StreamOpsExt;
    use futures::StreamExt;

    fn class(s: &&str) -> Priority {
        match s.as_bytes()[0] {
            b'h' => Priority::High,
            b'n' => Priority::Normal,
            _ => Priority::Low,
        }
    }

    #[tokio::test]
    async fn high_first_then_normal_then_low_when_shares_are_loose() {
        let input = futures::stream::iter(["l1", "n1", "h1", "n2", "h2"]);
        let lanes = Lanes {
            normal_every: 100,
            low_every: 100,
            ..Lanes::default()
        };
        let out: Vec<_> = input.prioritize(lanes, class).collect().await;
        assert_eq!(out, ["h1", "h2", "n1", "n2", "l1"]);
    }

    #[tokio::test]
    async fn low_is_never_starved_under_a_flood_of_high() {
        let mut input: Vec<String> = (0..1000).map(|i| format!("h{i}")).collect();
        input.insert(0, "l0".into());
        let lanes = Lanes {
            low_every: 5,
            ..Lanes::default()
        };
        let out: Vec<String> = futures::stream::iter(input)
            .prioritize(lanes, |s: &String| class(&s.as_str()))
            .collect()
            .await;
        let pos = out.iter().position(|s| s == "l0").unwrap();
        assert_eq!(pos, 4, "low served as the 5th output, not after 1000 highs");
        assert_eq!(out.len(), 1001);
    }

    #[tokio::test]
    async fn capacity_bounds_the_buffer_and_nothing_is_dropped() {
        let lanes = Lanes {
            capacity: 2,
            normal_every: 100,
            low_every: 100,
        };
        // With only two buffered, a later high cannot overtake earlier lows.
        let out: Vec<_> = futures::stream::iter(["l1", "l2", "h1"])
            .prioritize(lanes, class)
            .collect()
            .await;
        assert_eq!(out, ["l1", "h1", "l2"]);
    }
}
