//! Lossless rings: a waiting publisher and its readers wake each other,
//! and backpressure rises and clears.

use busline::Bus;
use loom::future::block_on;
use loom::thread;

use super::{model, model_bounded, publish, publish_on_thread, receive_all};

/// Lossless, capacity 1: the publisher waits for room three times and the
/// receiver for events; each side wakes the other. Nothing is lost, the
/// order holds, and neither side sleeps for ever.
#[test]
fn lossless_backpressure_wakes_both_sides_and_loses_nothing() {
    model(|| {
        let bus: Bus<u32> = Bus::new();
        let mut sub = bus.subscriber("t").lossless(1).subscribe().unwrap();
        let publisher = publish_on_thread(&bus, 0..3);
        drop(bus);
        let got = receive_all(&mut sub);
        publisher.join().unwrap();
        assert_eq!(got, [0, 1, 2]);
    });
}

/// Two publishers (one event and two) on one lossless subscriber of
/// capacity 1: both finish and every event arrives once. (Three threads: a
/// smaller bound.)
#[test]
fn two_waiting_publishers_both_get_room() {
    model_bounded(2, || {
        let bus: Bus<u32> = Bus::new();
        let mut sub = bus.subscriber("t").lossless(1).subscribe().unwrap();
        let publishers: Vec<_> = [0u32, 10]
            .into_iter()
            .map(|base| publish_on_thread(&bus, base..base + 1 + base / 10))
            .collect();
        drop(bus);
        let got = receive_all(&mut sub);
        for p in publishers {
            p.join().unwrap();
        }
        let mut got = got;
        got.sort_unstable();
        assert_eq!(got, [0, 10, 11]);
    });
}

/// A reader that makes room and then does something else (here: waits for
/// the publisher) still releases the publisher waiting for that room: the
/// publisher's flag and the reader's cursor are each seen by the other side
/// (the fences in `State::wait_for_room` and the lossless read), with no
/// later receive to make up for a missed wake-up.
#[test]
fn one_read_releases_a_waiting_publisher_without_another_receive() {
    model(|| {
        let bus: Bus<u32> = Bus::new();
        let mut sub = bus.subscriber("t").lossless(1).subscribe().unwrap();
        // The second publish waits for room.
        let publisher = publish_on_thread(&bus, 1..3);
        let first = block_on(sub.recv()).unwrap();
        publisher.join().unwrap();
        let second = block_on(sub.recv()).unwrap();
        assert_eq!((first.payload, second.payload), (1, 2));
    });
}

/// A publisher waiting on a full lossless subscriber is released when that
/// subscription is dropped: dropping never leaves a publisher blocked.
#[test]
fn dropping_a_full_subscription_releases_its_publisher() {
    model(|| {
        let bus: Bus<u32> = Bus::new();
        let sub = bus.subscriber("t").lossless(1).subscribe().unwrap();
        // The second publish waits for room.
        let publisher = publish_on_thread(&bus, 1..3);
        drop(sub);
        publisher.join().unwrap();
        assert_eq!(bus.stats().published, 2);
    });
}

/// Two lossless members sharing one ring (same pattern and settings),
/// capacity 1, each on its own thread: the publisher waits for the slower
/// one each time, both get every event once, and the ring's reference to
/// each event is dropped by whichever member reads it last (loom checks
/// every access to the slot against the others).
#[test]
fn members_sharing_a_lossless_ring_both_get_everything() {
    model_bounded(1, || {
        let bus: Bus<u32> = Bus::new();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let mut sub = bus.subscriber("t").lossless(1).subscribe().unwrap();
                thread::spawn(move || receive_all(&mut sub))
            })
            .collect();
        publish(&bus, 0..2);
        drop(bus);
        for r in readers {
            assert_eq!(r.join().unwrap(), [0, 1]);
        }
    });
}

/// Backpressure raised by a publisher while the subscriber reads at the
/// same time is always cleared once the subscriber has read everything
/// (high watermark 1, low 0): the publisher's raise and the reader's
/// check for it never miss each other.
#[test]
fn backpressure_raised_while_reading_clears_once_drained() {
    model(|| {
        let bus: Bus<u32> = Bus::new();
        let mut sub = bus
            .subscriber("t")
            .lossless(2)
            .watermarks(1, 0)
            .subscribe()
            .unwrap();
        let bp = bus.backpressure();
        let publisher = publish_on_thread(&bus, 0..2);
        block_on(async {
            for i in 0..2 {
                assert_eq!(sub.recv().await.unwrap().payload, i);
            }
        });
        publisher.join().unwrap();
        assert!(!bp.is_high(), "raised with nothing queued");
    });
}
