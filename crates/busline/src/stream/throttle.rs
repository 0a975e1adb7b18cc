//! Throttle and debounce: fewer events, on purpose, and counted.
//!
//! [`throttle(period)`](super::StreamOpsExt::throttle) passes the first event,
//! then drops every event for `period`, then passes the next one (leading
//! edge). [`debounce(quiet)`](super::StreamOpsExt::debounce) waits until the
//! input has been quiet for `quiet` and passes only the newest event (trailing
//! edge). Neither loses an event silently: each operator counts the events it
//! left out in a [`Counter`] you can read at any time.
//!
//! ```text
//!  period / quiet = 1s
//!  time        0    0.4  0.8   1.2        2.5
//!  input       a    b    c     d          |
//!  throttle    a               d               (b, c dropped: counter = 2)
//!  debounce                         d (at 2.2)  (a, b, c superseded: counter = 3)
//! ```
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::time::Duration;
//! use futures::StreamExt;
//! use busline::stream::StreamOpsExt;
//!
//! // Three events at the same instant: the first passes, two are dropped.
//! let throttled = futures::stream::iter([1, 2, 3]).throttle(Duration::from_secs(1));
//! let dropped = throttled.dropped_counter();
//! let out: Vec<_> = throttled.collect().await;
//! assert_eq!(out, [1]);
//! assert_eq!(dropped.get(), 2);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::time::{Instant, Sleep};

use super::window::Counter;

pin_project_lite::pin_project! {
    /// Leading-edge throttle; see the [module docs](self).
    #[must_use = "streams do nothing unless polled"]
    pub struct Throttle<S> {
        #[pin]
        stream: S,
        period: Duration,
        next_allowed: Option<Instant>,
        dropped: Counter,
    }
}

impl<S> Throttle<S> {
    pub(crate) fn new(stream: S, period: Duration) -> Self {
        Throttle {
            stream,
            period,
            next_allowed: None,
            dropped: Counter::default(),
        }
    }

    /// Counts the events dropped because they came within `period` of the last one passed.
    pub fn dropped_counter(&self) -> Counter {
        self.dropped.clone()
    }
}

impl<S: Stream> Stream for Throttle<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let mut this = self.project();
        for _ in 0..super::BUDGET {
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    let now = Instant::now();
                    match *this.next_allowed {
                        Some(t) if now < t => this.dropped.add(1),
                        _ => {
                            *this.next_allowed = Some(super::later(now, *this.period));
                            return Poll::Ready(Some(item));
                        }
                    }
                }
                other => return other,
            }
        }
        // Let other tasks run; more input is taken on the next poll.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

pin_project_lite::pin_project! {
    /// Trailing-edge debounce; see the [module docs](self).
    #[must_use = "streams do nothing unless polled"]
    pub struct Debounce<S: Stream> {
        #[pin]
        stream: S,
        quiet: Duration,
        pending: Option<S::Item>,
        timer: Pin<Box<Sleep>>,
        superseded: Counter,
        done: bool,
    }
}

impl<S: Stream> Debounce<S> {
    pub(crate) fn new(stream: S, quiet: Duration) -> Self {
        Debounce {
            stream,
            quiet,
            pending: None,
            timer: Box::pin(tokio::time::sleep(quiet)),
            superseded: Counter::default(),
            done: false,
        }
    }

    /// Counts the events replaced by a newer one before the input went quiet.
    pub fn superseded_counter(&self) -> Counter {
        self.superseded.clone()
    }
}

impl<S: Stream> Stream for Debounce<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let mut this = self.project();
        let (pending, superseded) = (&mut *this.pending, this.superseded);
        let (mut timer, quiet) = (this.timer.as_mut(), *this.quiet);
        super::take_ready(this.stream.as_mut(), cx, this.done, |item| {
            if pending.replace(item).is_some() {
                superseded.add(1);
            }
            timer.as_mut().reset(super::later(Instant::now(), quiet));
        });
        if this.pending.is_none() {
            return if *this.done {
                Poll::Ready(None)
            } else {
                Poll::Pending
            };
        }
        // At the end of input the last event goes at once.
        if *this.done || this.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(this.pending.take());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::super::StreamOpsExt;
    use futures::StreamExt;
    use std::time::Duration;
    use tokio::time::{advance, Instant};

    #[tokio::test(start_paused = true)]
    async fn throttle_passes_again_exactly_at_the_period() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let t = rx.throttle(Duration::from_secs(1));
        let dropped = t.dropped_counter();
        let mut t = Box::pin(t);
        tx.unbounded_send(1).unwrap();
        assert_eq!(t.next().await, Some(1));
        advance(Duration::from_millis(999)).await;
        tx.unbounded_send(2).unwrap(); // within the period: dropped
        assert!(futures::poll!(t.next()).is_pending()); // taken at 999 ms
        advance(Duration::from_millis(1)).await;
        tx.unbounded_send(3).unwrap(); // exactly on the period: passes
        assert_eq!(t.next().await, Some(3));
        assert_eq!(dropped.get(), 1);
        drop(tx);
        assert_eq!(t.next().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn debounce_emits_the_newest_after_quiet() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let d = rx.debounce(Duration::from_secs(1));
        let superseded = d.superseded_counter();
        let mut d = Box::pin(d);
        let t0 = Instant::now();
        let feeder = tokio::spawn(async move {
            for i in 0..4 {
                tx.unbounded_send(i).unwrap();
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            tx.unbounded_send(10).unwrap();
        });
        assert_eq!(d.next().await, Some(3));
        // The last of 0..4 was sent at 1.2 s; quiet for 1 s after it.
        assert_eq!(t0.elapsed(), Duration::from_millis(2200));
        assert_eq!(superseded.get(), 3);
        assert_eq!(d.next().await, Some(10));
        feeder.await.unwrap();
        assert_eq!(d.next().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn debounce_flushes_at_end_of_input() {
        let out: Vec<_> = futures::stream::iter([1, 2])
            .debounce(Duration::from_secs(60))
            .collect()
            .await;
        assert_eq!(out, vec![2]);
    }
}
