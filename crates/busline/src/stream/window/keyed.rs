//! Per-key tumbling processing-time windows: [`KeyedWindows`] and the
//! [`KeyedWindow`] it (and [`Window::group_by`]) emits.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::time::{Instant, Sleep};

#[cfg(doc)]
use super::Window;
use super::{group, Counter, OverflowCounter};
use crate::stream::{later, take_ready};

/// The windows of every key for one span (from
/// [`keyed_tumbling`](crate::stream::StreamOpsExt::keyed_tumbling) or [`Window::group_by`]).
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
    /// Whether the span was emitted before its end because the input ended
    /// (as [`Window::partial`]).
    pub partial: bool,
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
    /// Per-key tumbling processing-time windows; see the [module docs](super#keys).
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
        // An event taken at or after the boundary belongs to the next window:
        // emit this one first.
        let due = this.timer.as_mut().poll(cx).is_ready();
        if !due {
            let (key, index, groups) = (&mut *this.key, &mut *this.index, &mut *this.groups);
            let (max_keys, overflowed, overflow) =
                (*this.max_keys, &*this.overflowed, &mut *this.overflow);
            take_ready(this.stream.as_mut(), cx, this.done, |item| {
                if let Some(item) = group(index, groups, max_keys, key(&item), item) {
                    overflowed.add(1);
                    overflow.push(item);
                }
            });
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
            partial: Instant::now() < end,
        };
        *this.start = end;
        this.timer.as_mut().reset(later(end, *this.size));
        Poll::Ready(Some(w))
    }
}
