//! Stream operators: windows, aggregates, batches, throttle, debounce and
//! priority lanes, as one extension trait, [`StreamOpsExt`], on every
//! [`futures::Stream`].
//!
//! A [`Subscription`](crate::Subscription) is a stream of
//! `Result<Arc<Envelope<T>>, RecvError>`; the operators work on any stream,
//! so you can use them on a subscription directly (the `Err(Lagged)` items
//! flow through as items), or first turn lag into a counter with
//! [`count_lag`](StreamOpsExt::count_lag) and work on plain envelopes.
//!
//! ## What to import
//!
//! - `use busline::StreamOpsExt;` (also `busline::stream::StreamOpsExt`)
//!   for the operators: it is the only trait they need.
//! - To *read* the result (`.next().await`, `.collect()`), you need
//!   [`futures::StreamExt`] (or `tokio_stream::StreamExt`): add
//!   `futures = "0.3"` to your `Cargo.toml`. busline's own
//!   [`Subscription::recv`](crate::Subscription::recv) needs neither.
//!
//! | operator | emits | module |
//! | --- | --- | --- |
//! | [`tumbling`](StreamOpsExt::tumbling), [`sliding`](StreamOpsExt::sliding) | [`Window`] per processing-time span | [`window`] |
//! | [`tumbling_aggregate`](StreamOpsExt::tumbling_aggregate) | [`WindowAggregate`]: a running [`Accumulator`] per window, no events kept | [`window`] |
//! | [`keyed_tumbling`](StreamOpsExt::keyed_tumbling) | [`KeyedWindow`]: one window per key, bounded keys | [`window`] |
//! | [`event_tumbling`](StreamOpsExt::event_tumbling), [`event_sliding`](StreamOpsExt::event_sliding) | [`Windowed`]: windows by event time, and late events | [`window`] |
//! | [`batch`](StreamOpsExt::batch) | `Vec` by count or time | [`batch`] |
//! | [`throttle`](StreamOpsExt::throttle), [`debounce`](StreamOpsExt::debounce) | fewer events, the rest counted | [`throttle`] |
//! | [`prioritize`](StreamOpsExt::prioritize) | high first, low never starved | [`priority`] |
//! | [`count_lag`](StreamOpsExt::count_lag) | envelopes, with `Lagged(n)` summed in a counter | here |
//!
//! ## Processing time
//!
//! For the operators that use the clock (processing-time windows, batch,
//! throttle, debounce), an event's time is the moment the operator *takes*
//! it from its input (tokio's clock, so paused time in tests), not when it
//! was sent: an event sent at 0.9 s but first polled at 1.0 s is a 1.0 s
//! event. Use event-time windows when the event's own timestamp matters.
//!
//! Windows give you the events; [`Window::summary`] (or [`Accumulator`]) turns
//! them into count/sum/min/max/mean/p50/p90/p99. Outside a stream,
//! [`SlidingWindow`] answers "what happened in the last N seconds".
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::time::Duration;
//! use futures::StreamExt;
//! use busline::{Bus, stream::StreamOpsExt};
//!
//! let bus = Bus::<f64>::new();
//! let events = bus.subscribe("latency").unwrap().count_lag();
//! let lag = events.lag_counter();
//! let mut per_second = events.tumbling(Duration::from_secs(1));
//! for ms in [10.0, 20.0, 30.0] { bus.publish_to("latency", ms).await.unwrap(); }
//! let w = per_second.next().await.unwrap();
//! let s = w.summary(|env| env.payload);
//! assert_eq!((s.count, s.mean, s.max), (3, Some(20.0), Some(30.0)));
//! assert_eq!(lag.get(), 0);
//! # }
//! ```

pub mod accumulator;
pub mod batch;
pub mod priority;
pub mod throttle;
pub mod window;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::Stream;

use crate::error::RecvError;

pub use accumulator::{Accumulator, Summary};
pub use batch::Batch;
pub use priority::{Lanes, Prioritize, Priority};
pub use throttle::{Debounce, Throttle};
pub use window::{
    Counter, EventWindows, KeyedWindow, KeyedWindows, LateCounter, LateEvent, OverflowCounter,
    ProcessingWindows, SlidingWindow, TumblingAggregate, Window, WindowAggregate, Windowed,
};

/// Operators on any [`Stream`]; see the [module docs](self).
pub trait StreamOpsExt: Stream + Sized {
    /// Back-to-back processing-time windows of `size`, emitted at each
    /// boundary (empty ones too). See [`window`].
    ///
    /// # Panics
    /// If `size` is zero.
    fn tumbling(self, size: Duration) -> ProcessingWindows<Self>
    where
        Self::Item: Clone,
    {
        ProcessingWindows::new(self, size, size)
    }

    /// Back-to-back processing-time windows of `size`, each folded into an
    /// [`Accumulator`] of `value(item)` as events arrive: no event is kept, so
    /// memory stays constant at any rate. Emitted at each boundary (empty
    /// ones too), like [`tumbling`](Self::tumbling).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use std::time::Duration;
    /// use futures::StreamExt;
    /// use busline::stream::StreamOpsExt;
    ///
    /// let (tx, rx) = futures::channel::mpsc::unbounded::<f64>();
    /// let mut per_second = rx.tumbling_aggregate(Duration::from_secs(1), |ms| *ms);
    /// for ms in [12.0, 30.0, 18.0] { tx.unbounded_send(ms).unwrap(); }
    /// let s = per_second.next().await.unwrap().summary();
    /// assert_eq!((s.count, s.min, s.mean, s.max), (3, Some(12.0), Some(20.0), Some(30.0)));
    /// assert_eq!(per_second.next().await.unwrap().summary().count, 0); // a quiet second
    /// # }
    /// ```
    ///
    /// # Panics
    /// If `size` is zero.
    fn tumbling_aggregate<F>(self, size: Duration, value: F) -> TumblingAggregate<Self, F>
    where
        F: FnMut(&Self::Item) -> f64,
    {
        TumblingAggregate::new(self, size, value)
    }

    /// Processing-time windows of `size`, one every `slide` (hopping; an
    /// event is in `size / slide` windows). See [`window`].
    ///
    /// # Panics
    /// If `size` or `slide` is zero, or `slide > size`.
    fn sliding(self, size: Duration, slide: Duration) -> ProcessingWindows<Self>
    where
        Self::Item: Clone,
    {
        ProcessingWindows::new(self, size, slide)
    }

    /// Back-to-back processing-time windows of `size`, one per `key(item)`,
    /// with at most `max_keys` keys per window (the rest go to `overflow`,
    /// counted). See [`window#keys`](window#keys).
    ///
    /// # Panics
    /// If `size` is zero.
    fn keyed_tumbling<K, F>(
        self,
        size: Duration,
        max_keys: usize,
        key: F,
    ) -> KeyedWindows<Self, K, F>
    where
        K: std::hash::Hash + Eq + Clone,
        F: FnMut(&Self::Item) -> K,
    {
        KeyedWindows::new(self, size, max_keys, key)
    }

    /// Back-to-back event-time windows of `size` (aligned to the Unix epoch),
    /// by `timestamp(item)`, closed once the watermark (newest timestamp −
    /// `allowed_lateness`) passes their end; later events come out as
    /// [`Windowed::Late`]. See [`window#event-time`](window#event-time).
    ///
    /// # Panics
    /// If `size` is zero.
    fn event_tumbling<F>(
        self,
        size: Duration,
        allowed_lateness: Duration,
        timestamp: F,
    ) -> EventWindows<Self, F>
    where
        Self::Item: Clone,
        F: FnMut(&Self::Item) -> SystemTime,
    {
        EventWindows::new(self, size, size, allowed_lateness, timestamp)
    }

    /// Event-time windows of `size`, one every `slide`; otherwise as
    /// [`event_tumbling`](Self::event_tumbling).
    ///
    /// # Panics
    /// If `size` or `slide` is zero, or `slide > size`.
    fn event_sliding<F>(
        self,
        size: Duration,
        slide: Duration,
        allowed_lateness: Duration,
        timestamp: F,
    ) -> EventWindows<Self, F>
    where
        Self::Item: Clone,
        F: FnMut(&Self::Item) -> SystemTime,
    {
        EventWindows::new(self, size, slide, allowed_lateness, timestamp)
    }

    /// Batches of up to `max_items`, emitted when full or `max_wait` after
    /// their first event, whichever comes first. See [`batch`](mod@batch).
    ///
    /// # Panics
    /// If `max_items` is zero.
    fn batch(self, max_items: usize, max_wait: Duration) -> Batch<Self> {
        Batch::new(self, max_items, max_wait)
    }

    /// At most one event per `period` (the first); the others are dropped and
    /// counted. See [`throttle`](mod@throttle).
    fn throttle(self, period: Duration) -> Throttle<Self> {
        Throttle::new(self, period)
    }

    /// The newest event once the input has been quiet for `quiet`; the
    /// replaced ones are counted. See [`throttle`](mod@throttle).
    fn debounce(self, quiet: Duration) -> Debounce<Self> {
        Debounce::new(self, quiet)
    }

    /// Reorders by `classify(item)`: high first, normal and low with a
    /// guaranteed share. See [`priority`].
    ///
    /// # Panics
    /// If `lanes.capacity` is zero.
    fn prioritize<F>(self, lanes: Lanes, classify: F) -> Prioritize<Self, F>
    where
        F: FnMut(&Self::Item) -> Priority,
    {
        Prioritize::new(self, lanes, classify)
    }

    /// For a stream of `Result<E, RecvError>` (a subscription): yields the
    /// `Ok` values and adds every `Lagged(n)` to a [`Counter`] (read it with
    /// [`CountLag::lag_counter`]), so lag is never silent. A failed replay
    /// ([`RecvError::Store`], after which a subscription goes on live) is
    /// counted in [`CountLag::store_error_counter`] and the stream goes on;
    /// [`RecvError::Closed`] ends it.
    fn count_lag<E>(self) -> CountLag<Self>
    where
        Self: Stream<Item = Result<E, RecvError>>,
    {
        self.count_lag_into(Counter::default())
    }

    /// [`count_lag`](Self::count_lag) into a counter you already hold.
    fn count_lag_into<E>(self, counter: Counter) -> CountLag<Self>
    where
        Self: Stream<Item = Result<E, RecvError>>,
    {
        CountLag {
            stream: self,
            lagged: counter,
            store_errors: Counter::default(),
        }
    }
}

impl<S: Stream> StreamOpsExt for S {}

/// How many ready input items an operator takes per poll before it lets
/// other tasks run (it wakes itself and returns `Pending`).
pub(crate) const BUDGET: usize = 1024;

/// Hands `each` the items `stream` has ready, up to [`BUDGET`] (then it
/// wakes the task, so the rest is taken on the next poll), until the
/// stream is pending or ends (which sets `done`).
pub(crate) fn take_ready<S: Stream + ?Sized>(
    mut stream: Pin<&mut S>,
    cx: &mut Context<'_>,
    done: &mut bool,
    mut each: impl FnMut(S::Item),
) {
    let mut budget = BUDGET;
    while !*done {
        if budget == 0 {
            cx.waker().wake_by_ref();
            return;
        }
        budget -= 1;
        match stream.as_mut().poll_next(cx) {
            Poll::Ready(Some(item)) => each(item),
            Poll::Ready(None) => *done = true,
            Poll::Pending => return,
        }
    }
}

/// `t + d`, or a time some 30 years after `t` where that overflows (as
/// tokio's own `sleep(Duration::MAX)`): a duration of `Duration::MAX` means
/// "never, by time", not a panic.
pub(crate) fn later(t: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
    t.checked_add(d).or_else(|| t.checked_add(FAR)).unwrap_or(t)
}

pin_project_lite::pin_project! {
    /// See [`StreamOpsExt::count_lag`].
    #[must_use = "streams do nothing unless polled"]
    pub struct CountLag<S> {
        #[pin]
        stream: S,
        lagged: Counter,
        store_errors: Counter,
    }
}

impl<S> CountLag<S> {
    /// The counter of events lost to lag (summed `Lagged(n)`).
    pub fn lag_counter(&self) -> Counter {
        self.lagged.clone()
    }

    /// The counter of input errors gone past ([`RecvError::Store`]: a
    /// replay that failed, after which the subscription goes on live).
    pub fn store_error_counter(&self) -> Counter {
        self.store_errors.clone()
    }
}

impl<S, E> Stream for CountLag<S>
where
    S: Stream<Item = Result<E, RecvError>>,
{
    type Item = E;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<E>> {
        let mut this = self.project();
        loop {
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(e))) => return Poll::Ready(Some(e)),
                Poll::Ready(Some(Err(RecvError::Lagged(n)))) => this.lagged.add(n),
                Poll::Ready(Some(Err(RecvError::Store(_)))) => this.store_errors.add(1),
                // Closed ends a subscription stream before it becomes an item;
                // treat it as the end anyway.
                Poll::Ready(Some(Err(RecvError::Closed))) | Poll::Ready(None) => {
                    return Poll::Ready(None)
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn count_lag_sums_lagged_and_yields_the_rest() {
        let bus = crate::Bus::<u32>::new();
        let sub = bus.subscriber("n").lossy(2).subscribe().unwrap();
        for i in 0..5 {
            bus.publish_to("n", i).await.unwrap();
        }
        bus.close();
        let events = sub.count_lag();
        let lag = events.lag_counter();
        let got: Vec<u32> = events.map(|env| env.payload).collect().await;
        assert_eq!(got, [3, 4]);
        assert_eq!(lag.get(), 3);
    }
}
