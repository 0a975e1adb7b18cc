//! Batches by count or by time, whichever comes first.
//!
//! [`batch(max_items, max_wait)`](super::StreamOpsExt::batch) emits a `Vec`
//! as soon as it holds `max_items` events, or `max_wait` after the *first*
//! event of the batch arrived, whichever comes first. An empty batch is never
//! emitted; when the input ends, the partial batch is emitted at once.
//!
//! ```text
//!  max_items = 3, max_wait = 1s
//!  time    0    0.1  0.2          1.5            2.5
//!          a    b    c            d              |
//!  emits             [a, b, c]                   [d]   (1 s after d)
//! ```
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::time::Duration;
//! use futures::StreamExt;
//! use busline::stream::StreamOpsExt;
//!
//! let (tx, rx) = futures::channel::mpsc::unbounded();
//! let mut batches = rx.batch(3, Duration::from_secs(1));
//! for c in ["a", "b", "c", "d"] { tx.unbounded_send(c).unwrap(); }
//! assert_eq!(batches.next().await.unwrap(), ["a", "b", "c"]); // full
//! let start = tokio::time::Instant::now();
//! assert_eq!(batches.next().await.unwrap(), ["d"]);           // timed out
//! assert_eq!(start.elapsed(), Duration::from_secs(1));
//! drop(tx);
//! assert_eq!(batches.next().await, None);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::time::{Instant, Sleep};

pin_project_lite::pin_project! {
    /// Batches by count or time; see the [module docs](self).
    #[must_use = "streams do nothing unless polled"]
    pub struct Batch<S: Stream> {
        #[pin]
        stream: S,
        max_items: usize,
        max_wait: Duration,
        buf: Vec<S::Item>,
        timer: Pin<Box<Sleep>>,
        done: bool,
    }
}

impl<S: Stream> Batch<S> {
    pub(crate) fn new(stream: S, max_items: usize, max_wait: Duration) -> Self {
        assert!(max_items > 0, "a batch must hold at least one item");
        Batch {
            stream,
            max_items,
            max_wait,
            buf: Vec::with_capacity(max_items),
            timer: Box::pin(tokio::time::sleep(max_wait)),
            done: false,
        }
    }
}

impl<S: Stream> Stream for Batch<S> {
    type Item = Vec<S::Item>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        while !*this.done {
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    if this.buf.is_empty() {
                        this.timer
                            .as_mut()
                            .reset(super::later(Instant::now(), *this.max_wait));
                    }
                    this.buf.push(item);
                    if this.buf.len() >= *this.max_items {
                        let cap = *this.max_items;
                        return Poll::Ready(Some(std::mem::replace(
                            this.buf,
                            Vec::with_capacity(cap),
                        )));
                    }
                }
                Poll::Ready(None) => *this.done = true,
                Poll::Pending => break,
            }
        }
        if this.buf.is_empty() {
            return if *this.done {
                Poll::Ready(None)
            } else {
                Poll::Pending
            };
        }
        if *this.done || this.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(std::mem::take(this.buf)));
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
    async fn full_batch_goes_at_once_partial_after_wait() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut b = rx.batch(5, Duration::from_millis(100));
        for i in 0..7 {
            tx.unbounded_send(i).unwrap();
        }
        let t0 = Instant::now();
        assert_eq!(b.next().await.unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert_eq!(b.next().await.unwrap(), vec![5, 6]);
        assert_eq!(t0.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_counts_from_the_first_item_of_the_batch() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut b = rx.batch(10, Duration::from_millis(100));
        advance(Duration::from_secs(5)).await; // idle time does not count
        tx.unbounded_send(1).unwrap();
        let t0 = Instant::now();
        let first = b.next().await.unwrap();
        assert_eq!(first, vec![1]);
        assert_eq!(t0.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn end_of_input_flushes_the_partial_batch() {
        let s = futures::stream::iter([1, 2, 3]);
        let out: Vec<_> = s.batch(2, Duration::from_secs(60)).collect().await;
        assert_eq!(out, vec![vec![1, 2], vec![3]]);
    }
}
