//! A queue group delivers each event to exactly one member, while members
//! come and go and when a member gives up its `recv`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use busline::{Bus, RecvError};

use crate::rt;

/// Queue groups: each event exactly once across members while members come and go.
#[test]
fn queue_group_delivers_each_event_once_under_churn() {
    const N: u64 = 20_000;
    rt().block_on(async {
        let bus = Bus::<u64>::new();
        // One member stays for the whole run so the group always exists.
        let anchor = bus
            .subscriber("jobs.*")
            .queue("workers")
            .capacity(64)
            .subscribe()
            .unwrap();
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for w in 0..6u64 {
            let bus = bus.clone();
            let seen = seen.clone();
            tasks.push(tokio::spawn(async move {
                // Join, take a few, leave; again and again.
                for round in 0..40u64 {
                    let mut m = bus
                        .subscriber("jobs.*")
                        .queue("workers")
                        .subscribe()
                        .unwrap();
                    let take = 1 + (w * 7 + round * 3) % 25;
                    for _ in 0..take {
                        match tokio::time::timeout(Duration::from_millis(50), m.recv()).await {
                            Ok(Ok(e)) => seen.lock().push(e.payload),
                            Ok(Err(RecvError::Closed)) => return,
                            Ok(Err(e)) => panic!("{e}"),
                            Err(_) => break,
                        }
                    }
                    drop(m);
                    tokio::task::yield_now().await;
                }
            }));
        }
        let publisher = {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in 0..N {
                    bus.publish_to("jobs.a", i).await.unwrap();
                }
            })
        };
        let mut anchor = anchor;
        let seen2 = seen.clone();
        let drainer = tokio::spawn(async move {
            while let Ok(e) = anchor.recv().await {
                seen2.lock().push(e.payload);
            }
        });
        publisher.await.unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        drop(bus);
        drainer.await.unwrap();
        let seen = seen.lock();
        let unique: HashSet<u64> = seen.iter().copied().collect();
        assert_eq!(
            seen.len() as u64,
            N,
            "some event was delivered twice or lost"
        );
        assert_eq!(unique.len() as u64, N);
    });
}

/// A queue group member whose `recv` gave up (a timeout, a `select!`) stays
/// a member; the group's next event must still reach a member that waits.
#[tokio::test(start_paused = true)]
async fn a_cancelled_queue_group_recv_never_keeps_an_event_from_a_waiting_member() {
    let bus = Bus::<u32>::new();
    let mut a = bus.subscriber("jobs").queue("g").subscribe().unwrap();
    let mut b = bus.subscriber("jobs").queue("g").subscribe().unwrap();
    // A waits, then gives up before anything comes.
    assert!(tokio::time::timeout(Duration::from_millis(10), a.recv())
        .await
        .is_err());
    let hb = tokio::spawn(async move { b.recv().await.map(|e| e.payload) });
    tokio::task::yield_now().await; // B waits now
    bus.publish_to("jobs", 7).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), hb)
        .await
        .expect("B never got the job")
        .unwrap();
    assert_eq!(got.unwrap(), 7);

    // A is woken for a job, and gives up its recv before it runs (staying a
    // member): the wake-up goes on to the other waiting member.
    let mut b = bus.subscriber("jobs").queue("g").subscribe().unwrap();
    let (give_up, gave_up) = tokio::sync::oneshot::channel::<()>();
    let ha = tokio::spawn(async move {
        tokio::select! {
            biased;
            _ = gave_up => {}
            _ = a.recv() => panic!("A was to give up first"),
        }
        a // still a member
    });
    tokio::task::yield_now().await; // A waits first
    let hb = tokio::spawn(async move { b.recv().await.map(|e| e.payload) });
    tokio::task::yield_now().await; // then B
    bus.publish_to("jobs", 8).await.unwrap(); // wakes A
    give_up.send(()).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), hb)
        .await
        .expect("the job stayed queued with B waiting")
        .unwrap();
    assert_eq!(got.unwrap(), 8);
    let a = ha.await.unwrap();
    assert_eq!(a.stats().members, 1, "A is still in the group");
}
