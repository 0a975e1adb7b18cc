//! A publisher that spends its tokio budget on a route to a lone ring
//! member leaves its waker with that member, which wakes it when it parks
//! (see `budget::take_budget`): once, and only a lone member; and tokio's
//! deferred wake-up of the same yield, coming after, wakes it no more.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Context;

use super::budget::Turn;
use crate::test_util::CountingWaker;
use crate::{Bus, Subscription};

/// Polls a receive on `sub` once; it must find nothing and park.
fn park(sub: &mut Subscription<u32>) {
    let (_, waker) = CountingWaker::new();
    let mut cx = Context::from_waker(&waker);
    let mut recv = pin!(sub.recv());
    assert!(recv.as_mut().poll(&mut cx).is_pending(), "nothing to read");
}

/// Hands a counting waker off on `topic`'s route, as a publisher whose
/// budget is spent does: how often it has been woken, as it goes on.
fn hand_off(bus: &Bus<u32>, topic: &str) -> Arc<CountingWaker> {
    let (count, waker) = CountingWaker::new();
    bus.route(topic).unwrap().hand_off(&waker);
    count
}

#[test]
fn a_lone_member_that_parks_wakes_the_publisher_once() {
    for lossless in [false, true] {
        let bus = Bus::<u32>::new();
        let b = bus.subscriber("t");
        let mut sub = if lossless {
            b.lossless(64)
        } else {
            b.lossy(64)
        }
        .subscribe()
        .unwrap();
        let publisher = hand_off(&bus, "t");
        park(&mut sub);
        assert_eq!(publisher.count(), 1, "lossless: {lossless}");
        park(&mut sub);
        assert_eq!(publisher.count(), 1, "woken once (lossless: {lossless})");
    }
}

#[test]
fn a_lone_member_wakes_the_publisher_once_it_has_read_all_and_parks() {
    let bus = Bus::<u32>::new();
    let mut sub = bus.subscriber("t").lossy(64).subscribe().unwrap();
    for i in 0..3 {
        bus.try_publish_to("t", i).unwrap();
    }
    let publisher = hand_off(&bus, "t");
    for i in 0..3 {
        assert_eq!(sub.try_recv().unwrap().unwrap().payload, i);
        assert_eq!(publisher.count(), 0, "read, not parked");
    }
    assert!(sub.try_recv().unwrap().is_none());
    assert_eq!(publisher.count(), 0, "found nothing without parking");
    park(&mut sub);
    assert_eq!(publisher.count(), 1);
}

#[test]
fn beside_another_member_no_publisher_is_handed_off() {
    let bus = Bus::<u32>::new();
    let mut a = bus.subscriber("t").lossy(64).subscribe().unwrap();
    let mut b = bus.subscriber("t").lossy(64).subscribe().unwrap();
    let publisher = hand_off(&bus, "t");
    park(&mut a);
    park(&mut b);
    assert_eq!(publisher.count(), 0);
    // Once the other member left, the one left is a lone member.
    drop(b);
    let publisher = hand_off(&bus, "t");
    park(&mut a);
    assert_eq!(publisher.count(), 1);
}

/// A yield hands the ring a waker and leaves tokio a clone of it to wake
/// later: whichever is woken first wakes the publisher, the other does not
/// (a second wake-up would come in the middle of a later run).
#[test]
fn a_yields_two_wake_ups_wake_the_publisher_once() {
    for member_first in [true, false] {
        let bus = Bus::<u32>::new();
        let mut sub = bus.subscriber("t").lossy(64).subscribe().unwrap();
        let (publisher, task) = CountingWaker::new();
        let turn = Turn::once(&task);
        let deferred = turn.clone();
        bus.route("t").unwrap().hand_off(&turn);
        drop(turn);
        if member_first {
            park(&mut sub);
            deferred.wake();
        } else {
            deferred.wake();
            park(&mut sub);
        }
        assert_eq!(publisher.count(), 1, "member first: {member_first}");
    }
}
