//! Closing the bus drains each member, then `Closed`; a publish racing the
//! close reaches every member or is refused with its event handed back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use busline::{Bus, PublishError, RecvError, Subscription};

use crate::ledger::{Ledger, P};
use crate::rt;

// ----- targeted deterministic cases ----------------------------------------

/// Closing a bus with a shared ring part read: each member gets its own
/// rest (lossy: its exact lag first), then `Closed`; a member joined
/// later gets only what came after it joined.
#[tokio::test]
async fn close_drains_each_member_then_closed() {
    for lossy in [false, true] {
        let bus = Bus::<u32>::new();
        let mk = || {
            let b = bus.subscriber("t");
            if lossy { b.lossy(8) } else { b.lossless(8) }
                .subscribe()
                .unwrap()
        };
        let (mut a, mut b) = (mk(), mk());
        for i in 0..5 {
            bus.publish_to("t", i).await.unwrap();
        }
        let mut c = mk();
        for i in 5..8 {
            bus.publish_to("t", i).await.unwrap();
        }
        for i in 0..3 {
            assert_eq!(a.recv().await.unwrap().payload, i);
        }
        if lossy {
            for i in 8..12 {
                bus.publish_to("t", i).await.unwrap();
            }
        }
        bus.close();
        let rest = |s: &mut Subscription<u32>| {
            let mut v = Vec::new();
            let mut lag = 0;
            loop {
                match s.try_recv() {
                    Ok(Some(e)) => v.push(e.payload),
                    Ok(None) => panic!("a closed bus's subscriber has nothing and is not closed"),
                    Err(RecvError::Lagged(n)) => lag += n,
                    Err(RecvError::Closed) => return (v, lag),
                    Err(e) => panic!("{e}"),
                }
            }
        };
        if lossy {
            assert_eq!(rest(&mut a), ((4..12).collect(), 1));
            assert_eq!(rest(&mut b), ((4..12).collect(), 4));
            assert_eq!(rest(&mut c), ((5..12).collect(), 0));
        } else {
            assert_eq!(rest(&mut a), ((3..8).collect(), 0));
            assert_eq!(rest(&mut b), ((0..8).collect(), 0));
            assert_eq!(rest(&mut c), ((5..8).collect(), 0));
        }
        assert_eq!(a.recv().await.unwrap_err(), RecvError::Closed);
        assert!(matches!(
            bus.try_publish_to("t", 1),
            Err(PublishError::Closed { event: 1 })
        ));
    }
}

// ----- concurrency -----------------------------------------------------------

/// Closing the bus while publishers wait on full shared rings and members
/// read: every publish that returned `Ok` reaches every member (they drain
/// after the close), every one that failed with `Closed` reaches none and
/// hands its event back; nothing else comes, nothing is dropped twice.
#[test]
fn close_races_waiting_publishers_and_readers() {
    for round in 0..60u64 {
        let cap = [1usize, 2, 3, 1025][(round % 4) as usize];
        let ledger = Ledger::new(100_000);
        rt(2).block_on(async {
            let bus = Bus::<P>::new();
            let mut readers = Vec::new();
            for j in 0..3u64 {
                let mut sub = bus.subscriber("t").lossless(cap).subscribe().unwrap();
                readers.push(tokio::spawn(async move {
                    let mut next = [0u64; 2];
                    loop {
                        match sub.recv().await {
                            Ok(e) => {
                                let p = e.payload.publisher as usize;
                                assert_eq!(e.payload.n, next[p], "round {round} member {j}");
                                next[p] += 1;
                                if j == 0 && (next[0] + next[1]) % 64 == 0 {
                                    tokio::task::yield_now().await;
                                }
                            }
                            Err(RecvError::Closed) => return next,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }));
            }
            let mut pubs = Vec::new();
            for p in 0..2u32 {
                let b = bus.clone();
                let l = ledger.clone();
                pubs.push(tokio::spawn(async move {
                    let mut ok = 0u64;
                    loop {
                        match b.publish_to("t", l.make(p, ok)).await {
                            Ok(r) => {
                                // One ring: all three members or none.
                                assert_eq!(r.subscribers, 3, "a publish racing close");
                                ok += 1;
                            }
                            Err(PublishError::Closed { event }) => {
                                assert_eq!(event.n, ok);
                                return ok;
                            }
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                }));
            }
            tokio::time::sleep(Duration::from_micros(200 + 300 * (round % 5))).await;
            bus.close();
            tokio::time::timeout(Duration::from_secs(60), async {
                let mut oks = [0u64; 2];
                for (i, p) in pubs.into_iter().enumerate() {
                    oks[i] = p.await.unwrap();
                }
                for r in readers {
                    assert_eq!(r.await.unwrap(), oks, "round {round} cap {cap}");
                }
            })
            .await
            .unwrap_or_else(|_| panic!("round {round}: hung"));
            drop(bus);
        });
        ledger.assert_each_dropped_once("close_races_waiting_publishers_and_readers");
    }
}

/// A publish that races `Bus::close` either is delivered (to every member of
/// the ring) or fails with `Closed` handing the event back. It must not come
/// back `Ok` having been delivered to no one (the event is gone and the
/// publisher is told it was published).
#[test]
fn a_publish_racing_close_is_refused_not_reported_delivered_to_none() {
    let seen = Arc::new(AtomicU64::new(0));
    for round in 0..200u64 {
        let bus = Bus::<u64>::new();
        let subs: Vec<_> = (0..2)
            .map(|_| bus.subscriber("t").lossy(1 << 12).subscribe().unwrap())
            .collect();
        let go = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let bus = bus.clone();
                let go = go.clone();
                let seen = seen.clone();
                std::thread::spawn(move || {
                    while !go.load(SeqCst) {
                        std::hint::spin_loop();
                    }
                    let mut i = 0u64;
                    loop {
                        match bus.try_publish_to("t", i) {
                            Ok(r) if r.subscribers == 2 => i += 1,
                            Ok(r) => {
                                seen.fetch_add(1, SeqCst);
                                return Some((i, r.subscribers));
                            }
                            Err(PublishError::Closed { .. }) => return None,
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                })
            })
            .collect();
        go.store(true, SeqCst);
        std::thread::sleep(Duration::from_micros(100 + round % 50));
        bus.close();
        for t in threads {
            if let Some((i, n)) = t.join().unwrap() {
                panic!(
                    "round {round}: try_publish of event {i} racing close returned Ok with {n} subscribers (not delivered, not handed back); {} such in all",
                    seen.load(SeqCst)
                );
            }
        }
        drop(subs);
    }
}
