//! Processing-time windows, tumbling and sliding: [`ProcessingWindows`].

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::time::{Instant, Sleep};

use super::Window;
use crate::stream::{later, take_ready};

pin_project_lite::pin_project! {
    /// Processing-time windows (tumbling or sliding); see the [module docs](super).
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
    Window {
        start,
        end,
        items,
        // Emitted before its end: only when the input ended.
        partial: Instant::now() < end,
    }
}

impl<S> Stream for ProcessingWindows<S>
where
    S: Stream,
    S::Item: Clone,
{
    type Item = Window<S::Item>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        let buf = &mut *this.buf;
        take_ready(this.stream.as_mut(), cx, this.done, |item| {
            buf.push_back((Instant::now(), item))
        });
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
