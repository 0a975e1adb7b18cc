//! Queue groups and closing: each event to one member, a cancelled
//! receive strands nobody, and a closed subscriber's reader drains first.

use std::collections::BTreeSet;

use busline::{Bus, RecvError};
use loom::future::block_on;
use loom::thread;

use super::{model, publish, receive_all};

/// A queue group of two members on their own threads: each event goes to
/// exactly one of them, and both end when the publisher is gone.
#[test]
fn queue_group_delivers_each_event_exactly_once() {
    model(|| {
        let bus: Bus<u32> = Bus::new();
        let members: Vec<_> = (0..2)
            .map(|_| {
                let mut sub = bus.subscriber("t").queue("g").subscribe().unwrap();
                thread::spawn(move || receive_all(&mut sub))
            })
            .collect();
        publish(&bus, 0..2);
        drop(bus);
        let mut all = Vec::new();
        for m in members {
            all.extend(m.join().unwrap());
        }
        all.sort_unstable();
        assert_eq!(all, [0, 1]);
    });
}

/// Closing the bus while a receiver waits ends the receive (after what was
/// queued) instead of leaving it asleep.
#[test]
fn close_wakes_a_waiting_receiver_after_it_drained() {
    model(|| {
        let bus: Bus<u32> = Bus::new();
        let mut sub = bus.subscriber("t").lossless(4).subscribe().unwrap();
        let closer = {
            let bus = bus.clone();
            thread::spawn(move || {
                block_on(async { bus.publish_to("t", 1).await.unwrap() });
                bus.close();
            })
        };
        let got: BTreeSet<u32> = block_on(async {
            let mut got = BTreeSet::new();
            loop {
                match sub.recv().await {
                    Ok(e) => {
                        got.insert(e.payload);
                    }
                    Err(RecvError::Closed) => break got,
                    Err(e) => panic!("{e}"),
                }
            }
        });
        closer.join().unwrap();
        assert_eq!(got, BTreeSet::from([1]));
    });
}

/// A queue-group member whose receive is given up (a `select!` lost) after
/// it registered leaves no stale wake-up behind: the member still waiting
/// on another thread gets the event.
#[test]
fn a_cancelled_receive_does_not_strand_the_group() {
    model(|| {
        let bus: Bus<u32> = Bus::new();
        let mut quitter = bus.subscriber("t").queue("g").subscribe().unwrap();
        let mut waiter = bus.subscriber("t").queue("g").subscribe().unwrap();
        let waiting = thread::spawn(move || block_on(waiter.recv()).map(|e| e.payload));
        block_on(async {
            let mut gave_up = std::pin::pin!(quitter.recv());
            let _ = futures::poll!(gave_up.as_mut()); // registers, then is dropped
        });
        block_on(bus.publish_to("t", 7)).unwrap();
        assert_eq!(waiting.join().unwrap(), Ok(7));
    });
}
