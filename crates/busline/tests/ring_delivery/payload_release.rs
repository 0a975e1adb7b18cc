//! The ring keeps no envelope alive once every member read it or left, and
//! drops each payload exactly once.

use std::sync::Arc;
use std::time::Duration;

use busline::{Bus, PublishError, RecvError};

use crate::ledger::{Ledger, P};
use crate::{publish_mixed, rt};

// ----- targeted deterministic cases ----------------------------------------

/// Shared counts: the ring hands each member its own reference, and its
/// publisher lets go of the ring's once every member has read the event
/// (at its next reclaim: every event for a ring of 4), when it writes over
/// it, or when the last member leaves.
#[tokio::test]
async fn the_ring_lets_go_of_an_event_once_every_member_read_it_or_left() {
    for lossy in [false, true] {
        let bus = Bus::<u32>::new();
        let mk = || {
            let b = bus.subscriber("t");
            if lossy { b.lossy(4) } else { b.lossless(4) }
                .subscribe()
                .unwrap()
        };
        // One member: its clone and the ring's, until the next publish.
        let mut one = mk();
        bus.publish_to("t", 1).await.unwrap();
        let e = one.recv().await.unwrap();
        assert_eq!(Arc::strong_count(&e), 2, "lossy {lossy}: one and the ring");
        bus.publish_to("t", 2).await.unwrap();
        assert_eq!(Arc::strong_count(&e), 1, "lossy {lossy}: read, let go");
        // The last member leaves: the ring lets go of what it holds.
        let e2 = one.recv().await.unwrap();
        assert_eq!(Arc::strong_count(&e2), 2);
        drop(one);
        assert_eq!(
            Arc::strong_count(&e2),
            1,
            "lossy {lossy}: released on leave"
        );

        // Two members: kept until both read it.
        let (mut a, mut b) = (mk(), mk());
        bus.publish_to("t", 3).await.unwrap();
        let ea = a.recv().await.unwrap();
        bus.publish_to("t", 4).await.unwrap();
        assert_eq!(
            Arc::strong_count(&ea),
            2,
            "lossy {lossy}: b has not read it"
        );
        let eb = b.recv().await.unwrap();
        assert!(Arc::ptr_eq(&ea, &eb));
        assert_eq!(
            Arc::strong_count(&ea),
            3,
            "lossy {lossy}: a, b and the ring"
        );
        drop(eb);
        bus.publish_to("t", 5).await.unwrap();
        assert_eq!(Arc::strong_count(&ea), 1, "lossy {lossy}: both read it");

        // b leaves without reading: the ring lets go once a has read.
        let (e4, _) = (a.recv().await.unwrap(), b.recv().await.unwrap());
        let e5 = a.recv().await.unwrap();
        drop(b);
        bus.publish_to("t", 6).await.unwrap();
        assert_eq!(Arc::strong_count(&e4), 1, "lossy {lossy}");
        assert_eq!(
            Arc::strong_count(&e5),
            1,
            "lossy {lossy}: b left, a read it"
        );
        if lossy {
            // Written over while a holds it, and before c read it.
            let mut c = mk();
            let _ = a.recv().await.unwrap();
            bus.publish_to("t", 7).await.unwrap();
            let e7 = a.recv().await.unwrap();
            assert_eq!(
                Arc::strong_count(&e7),
                2,
                "a and the ring (c has not read it)"
            );
            for i in 8..12 {
                bus.publish_to("t", i).await.unwrap();
            }
            assert_eq!(Arc::strong_count(&e7), 1, "overwritten: the ring let go");
            assert!(matches!(c.recv().await, Err(RecvError::Lagged(_))));
        }
    }
}

/// Events left in shared rings when the bus goes away (lossless and lossy,
/// overwritten and not) are each dropped exactly once: some read after the
/// bus is gone, the rest when the subscriptions drop.
#[tokio::test]
async fn bus_drop_then_subscribers_drop_releases_every_payload_once() {
    let ledger = Ledger::new(10_000);
    let bus = Bus::<P>::new();
    let mut ll = Vec::new();
    let mut ly = Vec::new();
    for cap in [1usize, 2, 1025] {
        for _ in 0..2 {
            ll.push(bus.subscriber("t").lossless(cap).subscribe().unwrap());
            ly.push(bus.subscriber("t").lossy(cap).subscribe().unwrap());
        }
    }
    // Lossless capacity 1 fills at once: drain it as we go.
    for n in 0..3000u64 {
        let mut p = ledger.make(0, n);
        loop {
            match bus.try_publish_to("t", p) {
                Ok(_) => break,
                Err(PublishError::Full { event, .. }) => {
                    p = event;
                    for s in &mut ll {
                        if !s.is_empty() {
                            let _ = s.try_recv().unwrap();
                        }
                    }
                }
                Err(e) => panic!("{e:?}"),
            }
        }
    }
    drop(bus);
    // Read some after the bus is gone, then drop everything.
    for s in ll.iter_mut().chain(ly.iter_mut()).step_by(2) {
        loop {
            match s.try_recv() {
                Ok(Some(_)) | Err(RecvError::Lagged(_)) => {}
                Ok(None) => break,
                Err(RecvError::Closed) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(s.recv().await.unwrap_err(), RecvError::Closed);
    }
    drop(ll);
    drop(ly);
    ledger.assert_each_dropped_once("bus_drop_then_subscribers_drop_releases_every_payload_once");
}

// ----- concurrency -----------------------------------------------------------

/// Members of one lossless ring that read concurrently with each other and
/// with a publisher, each dropping what it received at once: once all are
/// done, the ring holds nothing (no slot keeps its event after the last
/// member read it), even with the last-reader shortcut racing the others.
#[test]
fn concurrent_readers_leave_no_event_behind() {
    for cap in [1usize, 2, 4, 1025] {
        const N: u64 = 30_000;
        let ledger = Ledger::new(N as usize + 8);
        rt(3).block_on(async {
            let bus = Bus::<P>::new();
            let mut readers = Vec::new();
            let done_reading = Arc::new(tokio::sync::Barrier::new(5));
            for _ in 0..4 {
                let mut sub = bus.subscriber("t").lossless(cap).subscribe().unwrap();
                let done_reading = done_reading.clone();
                readers.push(tokio::spawn(async move {
                    for i in 0..N {
                        assert_eq!(sub.recv().await.unwrap().payload.n, i);
                    }
                    done_reading.wait().await;
                    sub
                }));
            }
            let b = bus.clone();
            let l = ledger.clone();
            let p = tokio::spawn(async move {
                for i in 0..N {
                    publish_mixed(&b, "t", l.make(0, i), i % 4 == 0).await;
                }
            });
            let subs = tokio::time::timeout(Duration::from_secs(300), async {
                p.await.unwrap();
                done_reading.wait().await;
                let mut subs = Vec::new();
                for r in readers {
                    subs.push(r.await.unwrap());
                }
                subs
            })
            .await
            .expect("hung");
            assert!(
                ledger.live() <= cap as i64,
                "cap {cap}: every member read every event, yet {} payloads are alive",
                ledger.live()
            );
            let stats = bus.stats();
            for s in &stats.subscribers {
                assert_eq!((s.delivered, s.received, s.queued), (N, N, 0));
            }
            drop(subs);
        });
        ledger.assert_each_dropped_once("concurrent_readers_leave_no_event_behind");
    }
}
