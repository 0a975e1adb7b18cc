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
//! (without waiting for their end), then the window stream ends. Such a
//! window says so: its `partial` field ([`Window::partial`],
//! [`KeyedWindow::partial`], [`WindowAggregate::partial`]) is `true`, and
//! `false` for every window that closed at its end.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! # use std::time::Duration; use futures::StreamExt; use busline::stream::StreamOpsExt;
//! let (tx, rx) = futures::channel::mpsc::unbounded();
//! let mut windows = rx.tumbling(Duration::from_secs(1));
//! tx.unbounded_send("a").unwrap();
//! assert!(!windows.next().await.unwrap().partial); // closed at t0+1s
//! tx.unbounded_send("b").unwrap();
//! drop(tx); // the input ends at t0+1s
//! let last = windows.next().await.unwrap(); // at once, not at t0+2s
//! assert_eq!((last.items, last.partial), (vec!["b"], true));
//! # }
//! ```
//!
//! # Event time
//!
//! Event-time windows use each event's own timestamp (for envelopes, usually
//! `env.timestamp()`), so replayed or delayed data lands in the window it
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
//!
//! # Where things are
//!
//! The window types shared by the operators are here; each operator lives
//! in its own file: [`ProcessingWindows`] (tumbling and sliding by
//! processing time), [`TumblingAggregate`], [`KeyedWindows`],
//! [`EventWindows`], and [`SlidingWindow`] for use in a loop.

mod event_time;
mod keyed;
mod processing;
mod sliding;
mod tumbling_aggregate;

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

use super::accumulator::{Accumulator, Summary};

pub use self::event_time::{EventWindows, LateEvent, Windowed};
pub use self::keyed::{KeyedWindow, KeyedWindows};
pub use self::processing::ProcessingWindows;
pub use self::sliding::SlidingWindow;
pub use self::tumbling_aggregate::{TumblingAggregate, WindowAggregate};

/// One window of events: `items` in arrival order, with the half-open span
/// `[start, end)` it covers. `Ts` is [`Instant`] for processing time and
/// [`SystemTime`](std::time::SystemTime) for event time.
#[derive(Debug, Clone, PartialEq)]
pub struct Window<I, Ts = Instant> {
    /// Where the window starts (inclusive).
    pub start: Ts,
    /// Where it ends (exclusive).
    pub end: Ts,
    /// The events in it, in the order they arrived.
    pub items: Vec<I>,
    /// Whether the window was emitted before it closed, because the input
    /// ended (see [End of stream](self#end-of-stream)): events that would
    /// still have fallen in it may be missing. A window emitted at its
    /// boundary (processing time) or once the watermark passed its end
    /// (event time) is not partial.
    pub partial: bool,
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
    pub fn aggregate(&self, mut value: impl FnMut(&I) -> f64) -> Accumulator {
        Accumulator::from_values(self.items.iter().map(&mut value))
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
            if let Some(item) = group(&mut index, &mut groups, max_keys, key(&item), item) {
                overflow.push(item);
            }
        }
        KeyedWindow {
            start: self.start,
            end: self.end,
            groups,
            overflow,
            partial: self.partial,
        }
    }
}

/// Puts `item` in its key's group, opening one while there are fewer than
/// `max_keys`; hands it back when its key would be one too many.
fn group<K: Hash + Eq + Clone, I>(
    index: &mut HashMap<K, usize>,
    groups: &mut Vec<(K, Vec<I>)>,
    max_keys: usize,
    k: K,
    item: I,
) -> Option<I> {
    match index.get(&k) {
        Some(&i) => groups[i].1.push(item),
        None if index.len() < max_keys => {
            index.insert(k.clone(), groups.len());
            groups.push((k, vec![item]));
        }
        None => return Some(item),
    }
    None
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

#[cfg(test)]
mod tests;
