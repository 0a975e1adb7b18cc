//! Tumbling processing-time windows folded into an [`Accumulator`] as events
//! arrive: [`TumblingAggregate`] and the [`WindowAggregate`] it emits.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::time::{Instant, Sleep};

use crate::stream::accumulator::{Accumulator, Summary};
use crate::stream::{later, take_ready};

/// The aggregate of one processing-time window, from
/// [`tumbling_aggregate`](crate::stream::StreamOpsExt::tumbling_aggregate).
#[derive(Debug, Clone)]
pub struct WindowAggregate {
    /// Where the window starts (inclusive).
    pub start: Instant,
    /// Where it ends (exclusive).
    pub end: Instant,
    /// What was recorded in it.
    pub aggregate: Accumulator,
    /// Whether the window was emitted before its end because the input
    /// ended (as [`Window::partial`](super::Window::partial)).
    pub partial: bool,
}

impl WindowAggregate {
    /// The window's statistics.
    pub fn summary(&self) -> Summary {
        self.aggregate.summary()
    }
}

pin_project_lite::pin_project! {
    /// Tumbling processing-time windows folded into an [`Accumulator`] as events
    /// arrive (no event is kept); see [`tumbling_aggregate`](crate::stream::StreamOpsExt::tumbling_aggregate).
    #[must_use = "streams do nothing unless polled"]
    pub struct TumblingAggregate<S, F> {
        #[pin]
        stream: S,
        value: F,
        size: Duration,
        start: Instant,
        timer: Pin<Box<Sleep>>,
        current: Accumulator,
        done: bool,
    }
}

impl<S, F> TumblingAggregate<S, F> {
    pub(crate) fn new(stream: S, size: Duration, value: F) -> Self {
        assert!(!size.is_zero(), "window size must be greater than zero");
        let start = Instant::now();
        TumblingAggregate {
            stream,
            value,
            size,
            start,
            timer: Box::pin(tokio::time::sleep_until(later(start, size))),
            current: Accumulator::new(),
            done: false,
        }
    }
}

impl<S, F> Stream for TumblingAggregate<S, F>
where
    S: Stream,
    F: FnMut(&S::Item) -> f64,
{
    type Item = WindowAggregate;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WindowAggregate>> {
        let mut this = self.project();
        // An event taken at or after the boundary belongs to the next window.
        let due = this.timer.as_mut().poll(cx).is_ready();
        if !due {
            let (value, current) = (&mut *this.value, &mut *this.current);
            take_ready(this.stream.as_mut(), cx, this.done, |item| {
                current.record(value(&item))
            });
        }
        if *this.done && this.current.is_empty() && this.current.summary().nan == 0 {
            return Poll::Ready(None);
        }
        if !due && !*this.done && this.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let start = *this.start;
        let end = later(start, *this.size);
        *this.start = end;
        this.timer.as_mut().reset(later(end, *this.size));
        Poll::Ready(Some(WindowAggregate {
            start,
            end,
            aggregate: std::mem::take(this.current),
            partial: Instant::now() < end,
        }))
    }
}
