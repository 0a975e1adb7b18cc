//! Windows: cut a stream into time slices, by processing time or by event time.
//!
//! | operator | clock | windows | late events |
//! | --- | --- | --- | --- |
//! | [`tumbling`](super::StreamOpsExt::tumbling) | processing (tokio) | back to back, `size` long | — |
//! | [`sliding`](super::StreamOpsExt::sliding) | processing (tokio) | `size` long, one every `slide` (hopping) | — |
//! | [`keyed_tumbling`](super::StreamOpsExt::keyed_tumbling) | processing (tokio) | one per key, back to back | — |
//! | [`event_tumbling`](super::StreamOpsExt::event_tumbling) | the events' own timestamps | back to back, aligned to the Unix epoch | reported as [`Windowed::Late`] |
//! | [`event_sliding`](super::StreamOpsExt::event_sliding) | the events' own timestamps | `size` long, one every `slide` | reported as [`Windowed::Late`] |
//!
//! Every window is half-open, `[start, end)`: an event exactly on a boundary
//! belongs to the window that *starts* there. Processing-time windows use
//! tokio's clock, so tests drive them with paused time.
//!
//! # Processing time
//!
//! Windows are aligned to the moment the operator was created (`t0`). A
//! tumbling window of 1 s (`|` = a window is emitted, `a b c` = events):
//!
//! ```text
//!  time   t0        t0+1s     t0+2s     t0+3s
//!         |--a--b---|---------|-c-------|
//!  emits            [a, b]    []        [c]
//! ```
//!
//! A sliding window of 2 s every 1 s emits each event in two windows:
//!
//! ```text
//!  time   t0        t0+1s     t0+2s     t0+3s
//!         |--a------|-b-------|---------|
//!  emits            [a]       [a, b]    [b]
//!                   (t0-1s..t0+1s)      (t0+1s..t0+3s)
//! ```
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::time::Duration;
//! use futures::StreamExt;
//! use busline::stream::StreamOpsExt;
//!
//! let (tx, rx) = futures::channel::mpsc::unbounded();
//! let mut windows = rx.tumbling(Duration::from_secs(1));
//! tx.unbounded_send("a").unwrap();
//! tx.unbounded_send("b").unwrap();
//! let w = windows.next().await.unwrap(); // paused time jumps to t0+1s
//! assert_eq!(w.items, ["a", "b"]);
//! assert_eq!(w.end - w.start, Duration::from_secs(1));
//! # }
//! ```
//!
//! ## Empty windows
//!
//! A processing-time window with no events is still emitted (with no items),
//! so a once-a-second summary ticks even when nothing happens.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! # use std::time::Duration; use futures::StreamExt; use busline::stream::StreamOpsExt;
//! let (_tx, rx) = futures::channel::mpsc::unbounded::<u32>();
//! let mut windows = rx.tumbling(Duration::from_secs(1));
//! assert!(windows.next().await.unwrap().items.is_empty());
//! assert!(windows.next().await.unwrap().items.is_empty());
//! # }
//! ```
//!
//! ## End of stream
//!
//! When the input ends, the windows still holding events are emitted at once
//! (without waiting for their end), then the window stream ends.
//!
//! # Event time
//!
//! Event-time windows use each event's own timestamp (for envelopes, usually
//! `env.timestamp`), so replayed or delayed data lands in the window it
//! belongs to, and no timer is involved. Windows are aligned to the Unix
//! epoch (a 60 s window starts on the minute). The *watermark* is the newest
//! timestamp seen minus the allowed lateness; a window is emitted once the
//! watermark reaches its end. Only windows with at least one event are
//! emitted (gaps in event time produce nothing).
//!
//! Tumbling, size 10 s, allowed lateness 5 s (times in seconds):
//!
//! ```text
//!  event ts   3   8   12   9   15        4
//!  watermark  -   3   7    7   10        10
//!  emits                       [3,8,9]   Late(4)
//!                              window [0,10) closes when the watermark reaches 10
//! ```
//!
//! ## Late events
//!
//! An event whose window was already emitted is *late*. It is not dropped
//! silently: it comes out as [`Windowed::Late`] (with the watermark it
//! missed), and the operator's [`LateCounter`] counts it. In a sliding window,
//! an event that missed some of its windows is reported late *and* still added
//! to those of its windows that are open.
//!
//! ```
//! # fn main() {
//! use std::time::{Duration, SystemTime, UNIX_EPOCH};
//! use futures::{executor::block_on, stream, StreamExt};
//! use busline::stream::{StreamOpsExt, Windowed};
//!
//! let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
//! let events = stream::iter([3u64, 8, 12, 9, 15, 4]);
//! let windows = events.event_tumbling(Duration::from_secs(10), Duration::from_secs(5), move |s| at(*s));
//! let late = windows.late_counter();
//! let out: Vec<_> = block_on(windows.collect());
//! match &out[0] {
//!     Windowed::Window(w) => { assert_eq!(w.items, [3, 8, 9]); assert_eq!(w.start, at(0)); }
//!     other => panic!("{other:?}"),
//! }
//! assert!(matches!(&out[1], Windowed::Late(l) if l.item == 4));
//! assert!(matches!(&out[2], Windowed::Window(w) if w.items == [12, 15])); // flushed at the end
//! assert_eq!(late.get(), 1);
//! # }
//! ```
//!
//! # Keys
//!
//! [`keyed_tumbling`](super::StreamOpsExt::keyed_tumbling) keeps one window
//! per key (per path, per sensor) and emits them together at each boundary
//! as a [`KeyedWindow`]. It holds at most `max_keys` live keys per window: an
//! event with a new key when the bound is reached goes to the window's
//! `overflow` list (not to a group of its own) and is counted by the
//! operator's [`OverflowCounter`]. Keys are forgotten at each boundary.
//!
//! # A sliding window in a loop
//!
//! [`SlidingWindow`] is the same idea without a stream: record values as they
//! happen and ask "what happened in the last 60 s" whenever you like (an
//! alerter checking the error count every second).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use tokio::time::{Instant, Sleep};

use super::aggregate::{Aggregate, Summary};
use super::later;

use super::BUDGET;

/// One window of events: `items` in arrival order, with the half-open span
/// `[start, end)` it covers. `Ts` is [`Instant`] for processing time and
/// [`SystemTime`] for event time.
#[derive(Debug, Clone, PartialEq)]
pub struct Window<I, Ts = Instant> {
    /// Where the window starts (inclusive).
    pub start: Ts,
    /// Where it ends (exclusive).
    pub end: Ts,
    /// The events in it, in the order they arrived.
    pub items: Vec<I>,
}

impl<I, Ts> Window<I, Ts> {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the window holds no event.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The aggregate of `value(item)` over the window (percentiles included).
    pub fn aggregate(&self, mut value: impl FnMut(&I) -> f64) -> Aggregate {
        Aggregate::from_values(self.items.iter().map(&mut value))
    }

    /// The [`Summary`] of `value(item)` over the window.
    pub fn summary(&self, value: impl FnMut(&I) -> f64) -> Summary {
        self.aggregate(value).summary()
    }

    /// Splits the window by `key(item)` into at most `max_keys` groups (in
    /// the order keys first appear); events of further keys go to
    /// `overflow`. For per-key windows from any window operator (event time,
    /// sliding); [`keyed_tumbling`](super::StreamOpsExt::keyed_tumbling)
    /// keeps per-key state while the window is open instead.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use futures::{executor::block_on, stream, StreamExt};
    /// use busline::stream::{StreamOpsExt, Windowed};
    ///
    /// let readings = stream::iter([("a", 1u64), ("b", 2), ("a", 3), ("c", 4)]);
    /// let windows = readings.event_tumbling(Duration::from_secs(60), Duration::ZERO, |r| UNIX_EPOCH + Duration::from_secs(r.1));
    /// let w = block_on(windows.collect::<Vec<_>>()).remove(0).window().unwrap();
    /// let per_sensor = w.group_by(2, |r| r.0);
    /// assert_eq!(per_sensor.get(&"a").unwrap(), [("a", 1), ("a", 3)]);
    /// assert_eq!(per_sensor.overflow, [("c", 4)]);
    /// ```
    pub fn group_by<K, F>(self, max_keys: usize, mut key: F) -> KeyedWindow<K, I, Ts>
    where
        K: Hash + Eq + Clone,
        F: FnMut(&I) -> K,
    {
        let mut index: HashMap<K, usize> = HashMap::new();
        let mut groups: Vec<(K, Vec<I>)> = Vec::new();
        let mut overflow = Vec::new();
        for item in self.items {
            let k = key(&item);
            match index.get(&k) {
                Some(&i) => groups[i].1.push(item),
                None if index.len() < max_keys => {
                    index.insert(k.clone(), groups.len());
                    groups.push((k, vec![item]));
                }
                None => overflow.push(item),
            }
        }
        KeyedWindow {
            start: self.start,
            end: self.end,
            groups,
            overflow,
        }
    }
}

/// A shared counter an operator bumps; read it with [`get`](Self::get) from
/// anywhere (take a clone before chaining more operators).
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

/// Counts late events of an event-time window operator.
pub type LateCounter = Counter;
/// Counts events that went to `overflow` because the key bound was reached.
pub type OverflowCounter = Counter;

// ----- processing time -------------------------------------------------------

pin_project_lite::pin_project! {
    /// Processing-time windows (tumbling or sliding); see the [module docs](self).
    #[must_use = "streams do nothing unless polled"]
    pub struct ProcessingWindows<S: Stream> {
        #[pin]
        stream: S,
        size: Duration,
        slide: Duration,
        origin: Instant,
        next_end: Instant,
        timer: Pin<Box<Sleep>>,
        buf: VecDeque<(Instant, S::Item)>,
        done: bool,
    }
}

impl<S: Stream> ProcessingWindows<S> {
    pub(crate) fn new(stream: S, size: Duration, slide: Duration) -> Self {
        assert!(!size.is_zero(), "window size must be greater than zero");
        assert!(!slide.is_zero(), "window slide must be greater than zero");
        assert!(
            slide <= size,
            "window slide ({slide:?}) must not exceed its size ({size:?}): events in the gaps would belong to no window"
        );
        let origin = Instant::now();
        let next_end = later(origin, slide);
        ProcessingWindows {
            stream,
            size,
            slide,
            origin,
            next_end,
            timer: Box::pin(tokio::time::sleep_until(next_end)),
            buf: VecDeque::new(),
            done: false,
        }
    }
}

fn take_window<I: Clone>(
    buf: &mut VecDeque<(Instant, I)>,
    origin: Instant,
    end: Instant,
    size: Duration,
    slide: Duration,
) -> Window<I> {
    let start = end.checked_sub(size).unwrap_or(origin).max(origin);
    // Items before the next window's start are needed no more: move them out.
    // (`end + slide - size`, where `slide <= size`: no overflow.)
    let next_start = end.checked_sub(size - slide).unwrap_or(origin);
    let mut items = Vec::new();
    while let Some((t, _)) = buf.front() {
        if *t >= next_start || *t >= end {
            break;
        }
        let (t, item) = buf.pop_front().expect("front exists");
        if t >= start {
            items.push(item);
        }
    }
    // The rest of this window stays for the next ones: clone it.
    items.extend(
        buf.iter()
            .take_while(|(t, _)| *t < end)
            .filter(|(t, _)| *t >= start)
            .map(|(_, i)| i.clone()),
    );
    Window { start, end, items }
}

impl<S> Stream for ProcessingWindows<S>
where
    S: Stream,
    S::Item: Clone,
{
    type Item = Window<S::Item>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        let mut budget = BUDGET;
        while !*this.done {
            if budget == 0 {
                cx.waker().wake_by_ref();
                break;
            }
            budget -= 1;
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => this.buf.push_back((Instant::now(), item)),
                Poll::Ready(None) => *this.done = true,
                Poll::Pending => break,
            }
        }
        if *this.done {
            if this.buf.is_empty() {
                return Poll::Ready(None);
            }
        } else if this.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let end = *this.next_end;
        let w = take_window(this.buf, *this.origin, end, *this.size, *this.slide);
        *this.next_end = later(end, *this.slide);
        this.timer.as_mut().reset(*this.next_end);
        Poll::Ready(Some(w))
    }
}

// ----- incremental tumbling aggregate ------------------------------------------

/// The aggregate of one processing-time window, from
/// [`tumbling_aggregate`](super::StreamOpsExt::tumbling_aggregate).
#[derive(Debug, Clone)]
pub struct WindowAggregate {
    /// Where the window starts (inclusive).
    pub start: Instant,
    /// Where it ends (exclusive).
    pub end: Instant,
    /// What was recorded in it.
    pub aggregate: Aggregate,
}

impl WindowAggregate {
    /// The window's statistics.
    pub fn summary(&self) -> Summary {
        self.aggregate.summary()
    }
}

pin_project_lite::pin_project! {
    /// Tumbling processing-time windows folded into an [`Aggregate`] as events
    /// arrive (no event is kept); see [`tumbling_aggregate`](super::StreamOpsExt::tumbling_aggregate).
    #[must_use = "streams do nothing unless polled"]
    pub struct TumblingAggregate<S, F> {
        #[pin]
        stream: S,
        value: F,
        size: Duration,
        start: Instant,
        timer: Pin<Box<Sleep>>,
        current: Aggregate,
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
            current: Aggregate::new(),
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
        let mut budget = BUDGET;
        // An event taken at or after the boundary belongs to the next window.
        let due = this.timer.as_mut().poll(cx).is_ready();
        while !*this.done && !due {
            if budget == 0 {
                cx.waker().wake_by_ref();
                break;
            }
            budget -= 1;
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    let v = (this.value)(&item);
                    this.current.record(v);
                }
                Poll::Ready(None) => *this.done = true,
                Poll::Pending => break,
            }
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
        }))
    }
}

// ----- keyed processing time ---------------------------------------------------

/// The windows of every key for one span (from
/// [`keyed_tumbling`](super::StreamOpsExt::keyed_tumbling) or [`Window::group_by`]).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedWindow<K, I, Ts = Instant> {
    /// Where the span starts (inclusive).
    pub start: Ts,
    /// Where it ends (exclusive).
    pub end: Ts,
    /// One group per key, in the order the keys first appeared in the span.
    pub groups: Vec<(K, Vec<I>)>,
    /// Events whose key arrived after `max_keys` keys were live: kept here,
    /// not grouped (also counted by the operator's [`OverflowCounter`]).
    pub overflow: Vec<I>,
}

impl<K: PartialEq, I, Ts> KeyedWindow<K, I, Ts> {
    /// The events of `key`, if it had any.
    pub fn get(&self, key: &K) -> Option<&[I]> {
        self.groups
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

pin_project_lite::pin_project! {
    /// Per-key tumbling processing-time windows; see the [module docs](self#keys).
    #[must_use = "streams do nothing unless polled"]
    pub struct KeyedWindows<S: Stream, K, F> {
        #[pin]
        stream: S,
        key: F,
        size: Duration,
        max_keys: usize,
        start: Instant,
        timer: Pin<Box<Sleep>>,
        index: HashMap<K, usize>,
        groups: Vec<(K, Vec<S::Item>)>,
        overflow: Vec<S::Item>,
        overflowed: OverflowCounter,
        done: bool,
    }
}

impl<S: Stream, K, F> KeyedWindows<S, K, F> {
    pub(crate) fn new(stream: S, size: Duration, max_keys: usize, key: F) -> Self {
        assert!(!size.is_zero(), "window size must be greater than zero");
        let start = Instant::now();
        KeyedWindows {
            stream,
            key,
            size,
            max_keys,
            start,
            timer: Box::pin(tokio::time::sleep_until(later(start, size))),
            index: HashMap::new(),
            groups: Vec::new(),
            overflow: Vec::new(),
            overflowed: Counter::default(),
            done: false,
        }
    }

    /// The counter of events that overflowed the key bound.
    pub fn overflow_counter(&self) -> OverflowCounter {
        self.overflowed.clone()
    }
}

impl<S, K, F> Stream for KeyedWindows<S, K, F>
where
    S: Stream,
    K: Hash + Eq + Clone,
    F: FnMut(&S::Item) -> K,
{
    type Item = KeyedWindow<K, S::Item>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        let mut budget = BUDGET;
        // An event taken at or after the boundary belongs to the next window:
        // emit this one first.
        let due = this.timer.as_mut().poll(cx).is_ready();
        while !*this.done && !due {
            if budget == 0 {
                cx.waker().wake_by_ref();
                break;
            }
            budget -= 1;
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    let k = (this.key)(&item);
                    match this.index.get(&k) {
                        Some(&i) => this.groups[i].1.push(item),
                        None if this.index.len() < *this.max_keys => {
                            this.index.insert(k.clone(), this.groups.len());
                            this.groups.push((k, vec![item]));
                        }
                        None => {
                            this.overflowed.add(1);
                            this.overflow.push(item);
                        }
                    }
                }
                Poll::Ready(None) => *this.done = true,
                Poll::Pending => break,
            }
        }
        if *this.done && this.groups.is_empty() && this.overflow.is_empty() {
            return Poll::Ready(None);
        }
        if !due && !*this.done && this.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let start = *this.start;
        let end = later(start, *this.size);
        this.index.clear();
        let w = KeyedWindow {
            start,
            end,
            groups: std::mem::take(this.groups),
            overflow: std::mem::take(this.overflow),
        };
        *this.start = end;
        this.timer.as_mut().reset(later(end, *this.size));
        Poll::Ready(Some(w))
    }
}

// ----- event time ------------------------------------------------------------

/// An event that arrived after its window was emitted.
#[derive(Debug, Clone, PartialEq)]
pub struct LateEvent<I> {
    /// The event.
    pub item: I,
    /// Its timestamp.
    pub timestamp: SystemTime,
    /// The watermark it missed: windows ending at or before this were emitted.
    pub watermark: SystemTime,
}

/// What an event-time window operator emits.
#[derive(Debug, Clone, PartialEq)]
pub enum Windowed<I> {
    /// A closed window.
    Window(Window<I, SystemTime>),
    /// An event too late for (some of) its windows.
    Late(LateEvent<I>),
}

impl<I> Windowed<I> {
    /// The window, if this is one (`filter_map(Windowed::window)`).
    pub fn window(self) -> Option<Window<I, SystemTime>> {
        match self {
            Windowed::Window(w) => Some(w),
            Windowed::Late(_) => None,
        }
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn at(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(n)
}

fn as_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pin_project_lite::pin_project! {
    /// Event-time windows (tumbling or sliding); see the [module docs](self#event-time).
    #[must_use = "streams do nothing unless polled"]
    pub struct EventWindows<S: Stream, F> {
        #[pin]
        stream: S,
        ts: F,
        size: u64,
        slide: u64,
        lateness: u64,
        open: BTreeMap<u64, Vec<S::Item>>,
        max_seen: u64,
        closed_until: u64,
        out: VecDeque<Windowed<S::Item>>,
        late: LateCounter,
        done: bool,
    }
}

impl<S: Stream, F> EventWindows<S, F> {
    pub(crate) fn new(
        stream: S,
        size: Duration,
        slide: Duration,
        lateness: Duration,
        ts: F,
    ) -> Self {
        assert!(!size.is_zero(), "window size must be greater than zero");
        assert!(!slide.is_zero(), "window slide must be greater than zero");
        assert!(
            slide <= size,
            "window slide ({slide:?}) must not exceed its size ({size:?}): events in the gaps would belong to no window"
        );
        EventWindows {
            stream,
            ts,
            size: as_nanos(size),
            slide: as_nanos(slide),
            lateness: as_nanos(lateness),
            open: BTreeMap::new(),
            max_seen: 0,
            closed_until: 0,
            out: VecDeque::new(),
            late: Counter::default(),
            done: false,
        }
    }

    /// The counter of late events (take it before chaining more operators).
    pub fn late_counter(&self) -> LateCounter {
        self.late.clone()
    }
}

impl<S, F> Stream for EventWindows<S, F>
where
    S: Stream,
    S::Item: Clone,
    F: FnMut(&S::Item) -> SystemTime,
{
    type Item = Windowed<S::Item>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        let mut budget = BUDGET;
        loop {
            if let Some(o) = this.out.pop_front() {
                return Poll::Ready(Some(o));
            }
            if budget == 0 && !*this.done {
                // Let other tasks run; more input is taken on the next poll.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            budget -= 1;
            if *this.done {
                // Flush what is still open, oldest first.
                return Poll::Ready(this.open.pop_first().map(|(s, items)| {
                    Windowed::Window(Window {
                        start: at(s),
                        end: at(s.saturating_add(*this.size)),
                        items,
                    })
                }));
            }
            let item = match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => item,
                Poll::Ready(None) => {
                    *this.done = true;
                    continue;
                }
                Poll::Pending => return Poll::Pending,
            };
            let ts = (this.ts)(&item);
            let t = nanos(ts);
            let (size, slide) = (*this.size, *this.slide);
            // Windows holding t start at k*slide with start <= t < start+size.
            let last = t - t % slide;
            let mut starts = Vec::with_capacity((size / slide + 1) as usize);
            let mut s = last;
            loop {
                // A window ending past u64 nanoseconds (year 2554) holds t.
                if s.checked_add(size).is_some_and(|end| end <= t) {
                    break;
                }
                starts.push(s);
                match s.checked_sub(slide) {
                    Some(p) => s = p,
                    None => break,
                }
            }
            let earliest_end = starts.last().map(|s| s.saturating_add(size)).unwrap_or(t);
            let is_late = *this.closed_until > 0 && earliest_end <= *this.closed_until;
            let open: Vec<u64> = starts
                .into_iter()
                .filter(|s| s.saturating_add(size) > *this.closed_until)
                .collect();
            if is_late {
                this.late.add(1);
                this.out.push_back(Windowed::Late(LateEvent {
                    item: item.clone(),
                    timestamp: ts,
                    watermark: at(*this.closed_until),
                }));
            }
            // Oldest window first; the last one takes the item itself.
            if let Some((&first, rest)) = open.split_first() {
                for s in rest {
                    this.open.entry(*s).or_default().push(item.clone());
                }
                this.open.entry(first).or_default().push(item);
            }
            *this.max_seen = (*this.max_seen).max(t);
            let watermark = this.max_seen.saturating_sub(*this.lateness);
            if watermark > *this.closed_until {
                *this.closed_until = watermark;
                while let Some(entry) = this.open.first_entry() {
                    let s = *entry.key();
                    if s.saturating_add(size) > watermark {
                        break;
                    }
                    let items = entry.remove();
                    this.out.push_back(Windowed::Window(Window {
                        start: at(s),
                        end: at(s.saturating_add(size)),
                        items,
                    }));
                }
            }
        }
    }
}

// ----- a sliding window in a loop ----------------------------------------------

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
        Aggregate::from_values(self.live(now)).summary()
    }
}

#[cfg(test)]
mod tests;
