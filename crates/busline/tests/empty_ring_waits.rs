//! How a ring subscriber that finds nothing waits: beside other members of
//! its ring, after a streak of plain events it yields a couple of times
//! before it parks (more are likely on their way); after reading requests
//! it parks at once (each requester waits for its answer), and so does a
//! ring's lone member (its publisher wakes it onto its own worker); either
//! way the next publish reaches it.
//!
//! Polled here outside any runtime, where tokio's `yield_now` wakes the
//! task at once: a wake with nothing published is a yield, none is a park.

use std::future::Future;
use std::pin::pin;
use std::task::Context;

use busline::test_util::CountingWaker;
use busline::{Bus, Message, Subscription, Topic};

/// Publishes `n` events on `topic`, requests (with a reply-to inbox) or not.
fn publish(bus: &Bus<u32>, topic: &str, n: u32, requests: bool) {
    for i in 0..n {
        let mut msg = Message::new(i).topic(topic);
        if requests {
            msg = msg.reply_to(Topic::new("_INBOX.elsewhere.1").unwrap());
        }
        bus.try_send(msg).unwrap();
    }
}

/// Receives `n` events that are ready.
fn read(sub: &mut Subscription<u32>, n: u32) {
    for _ in 0..n {
        assert!(sub.try_recv().unwrap().is_some());
    }
}

/// Polls a receive on an empty ring once: whether it woke itself (a
/// yield) with nothing published; then publishes one event and checks
/// that the same receive is woken (if it had not woken itself) and gets it.
fn yields_when_empty(bus: &Bus<u32>, sub: &mut Subscription<u32>) -> bool {
    let (count, waker) = CountingWaker::new();
    let mut cx = Context::from_waker(&waker);
    let mut recv = pin!(sub.recv());
    assert!(recv.as_mut().poll(&mut cx).is_pending());
    let yielded = count.count() > 0;
    // A yield wakes it again: poll until it parks, then publish.
    let mut polls = 0;
    while count.take() > 0 {
        assert!(recv.as_mut().poll(&mut cx).is_pending());
        polls += 1;
        assert!(polls < 10, "a receive on an empty ring keeps yielding");
    }
    bus.try_publish_to("work.item", 99).unwrap();
    assert_eq!(count.count(), 1, "a publish wakes it");
    let env = match recv.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(r) => r.unwrap(),
        std::task::Poll::Pending => panic!("woken with nothing to read"),
    };
    assert_eq!(env.payload, 99);
    yielded
}

/// Whether a subscriber that has read `batches` (each a count of events
/// and whether they are requests), in order, yields when it finds nothing,
/// beside another member of its ring.
fn yields_after(batches: &[(u32, bool)]) -> bool {
    let bus = Bus::<u32>::new();
    let mut sub = bus.subscribe("work.>").unwrap();
    // Same pattern and settings: the same ring.
    let _sibling = bus.subscribe("work.>").unwrap();
    read_batches(&bus, &mut sub, batches)
}

/// Publishes and reads `batches`, then sees whether `sub` yields when it
/// finds nothing.
fn read_batches(bus: &Bus<u32>, sub: &mut Subscription<u32>, batches: &[(u32, bool)]) -> bool {
    for &(n, requests) in batches {
        publish(bus, "work.item", n, requests);
        read(sub, n);
    }
    yields_when_empty(bus, sub)
}

#[test]
fn a_reader_of_a_stream_yields_before_it_parks() {
    assert!(yields_after(&[(3, false)]));
}

#[test]
fn a_reader_of_requests_parks_at_once() {
    assert!(!yields_after(&[(3, false), (3, true)]));
}

#[test]
fn plain_events_after_requests_make_a_streak_again() {
    assert!(yields_after(&[(1, true), (2, false)]));
}

#[test]
fn a_reader_that_found_one_event_parks_at_once() {
    assert!(!yields_after(&[(1, false)]));
}

#[test]
fn a_lone_reader_of_a_stream_parks_at_once() {
    let bus = Bus::<u32>::new();
    let mut sub = bus.subscribe("work.>").unwrap();
    assert!(!read_batches(&bus, &mut sub, &[(3, false)]));
}

#[test]
fn a_reader_whose_ring_mate_left_parks_at_once() {
    let bus = Bus::<u32>::new();
    let mut sub = bus.subscribe("work.>").unwrap();
    let mate = bus.subscribe("work.>").unwrap();
    assert!(read_batches(&bus, &mut sub, &[(3, false)]));
    drop(mate);
    assert!(!read_batches(&bus, &mut sub, &[(3, false)]));
}
