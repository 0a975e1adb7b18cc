//! Event-time windows, tumbling and sliding, with a watermark and late
//! events: [`EventWindows`], the [`Windowed`] it emits and [`LateEvent`].

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;

use super::{Counter, LateCounter, Window};
use crate::stream::BUDGET;

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
    /// Event-time windows (tumbling or sliding); see the [module docs](super#event-time).
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
                        partial: true,
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
                        partial: false,
                    }));
                }
            }
        }
    }
}
