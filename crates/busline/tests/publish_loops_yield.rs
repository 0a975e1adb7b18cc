//! A publish loop that never has to wait for room still lets the other
//! tasks on its thread run (it takes part in tokio's cooperative budget),
//! whatever its subscribers: none, lossy, `latest`, or lossless ones with
//! room to spare; and it yields often enough that a lone lossy reader on
//! its thread loses nothing.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use busline::{Bus, Subscription};

/// Publishes in the loop (each one finds room).
const EVENTS: u64 = 50_000;

/// A bus and the subscriptions a case keeps for the length of its loop.
type Setup = (Bus<u64>, Vec<Subscription<u64>>);

/// How many events a loop on `topic` had published when another task on
/// the same single-thread runtime first ran (`EVENTS` if it never did
/// before the loop ended); through a [`busline::Publisher`] or not.
fn published_before_another_task_ran(
    (bus, _subs): Setup,
    topic: &'static str,
    handle: bool,
) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async move {
        let published = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(AtomicU64::new(EVENTS));
        let (p, s) = (published.clone(), seen.clone());
        let publisher = tokio::spawn(async move {
            let mut to = bus.publisher(topic).unwrap();
            let mut other = None;
            for i in 0..EVENTS {
                if handle {
                    to.publish(i).await.unwrap();
                } else {
                    bus.publish_to(topic, i).await.unwrap();
                }
                published.fetch_add(1, Ordering::SeqCst);
                if i == 0 {
                    // Queued behind the running loop: it runs only when
                    // the loop yields.
                    let (p, s) = (p.clone(), s.clone());
                    other = Some(tokio::spawn(async move {
                        s.store(p.load(Ordering::SeqCst), Ordering::SeqCst);
                    }));
                }
            }
            other
        });
        let other = publisher
            .await
            .unwrap()
            .expect("spawned after the first publish");
        other.await.unwrap();
        seen.load(Ordering::SeqCst)
    })
}

/// Asserts that a loop on `topic` of a bus `setup` makes lets the other
/// task run well before its end, with both ways of publishing.
fn assert_yields(topic: &'static str, setup: impl Fn() -> Setup) {
    for handle in [true, false] {
        let n = published_before_another_task_ran(setup(), topic, handle);
        assert!(
            n < EVENTS / 10,
            "{topic} (handle: {handle}): the other task first ran after {n} publishes"
        );
    }
}

#[test]
fn a_publish_loop_with_no_subscriber_yields() {
    assert_yields("nobody.listens", || (Bus::new(), vec![]));
}

#[test]
fn a_publish_loop_to_a_lossy_subscriber_yields() {
    // A small ring, and one with room for the whole loop (a lone lossy
    // reader's publisher takes less budget per publish, and still yields).
    for capacity in [16, EVENTS as usize] {
        assert_yields("lossy.events", || {
            let bus = Bus::new();
            let sub = bus
                .subscriber("lossy.>")
                .lossy(capacity)
                .subscribe()
                .unwrap();
            (bus, vec![sub])
        });
    }
}

/// A publish loop to a lone lossy reader on the same single-thread
/// runtime yields before it has filled the reader's ring, so the reader,
/// which runs at each yield, loses nothing (at capacities of at least two
/// runs of tokio's budget, 128 publishes).
#[test]
fn a_lone_lossy_reader_on_its_publishers_thread_loses_nothing() {
    for capacity in [256, 512, 1024, 4096] {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (got, lagged) = rt.block_on(async move {
            let bus = Bus::new();
            let mut sub = bus
                .subscriber("lossy.alone")
                .lossy(capacity)
                .subscribe()
                .unwrap();
            let reader = tokio::spawn(async move {
                let (mut got, mut lagged) = (0u64, 0u64);
                loop {
                    match sub.recv().await {
                        Ok(_) => got += 1,
                        Err(busline::RecvError::Lagged(n)) => lagged += n,
                        Err(_) => return (got, lagged),
                    }
                }
            });
            let mut to = bus.publisher("lossy.alone").unwrap();
            for i in 0..EVENTS {
                to.publish(i).await.unwrap();
            }
            bus.close();
            reader.await.unwrap()
        });
        assert_eq!((got, lagged), (EVENTS, 0), "capacity {capacity}");
    }
}

/// A lone reader's publisher that spends its budget leaves its waker with
/// the reader, to be woken when the reader parks; a reader woken by the
/// first publish that then stops receiving (its task waits on something
/// else) never parks, and the publish loop still goes on as after any
/// yield.
#[test]
fn a_lone_reader_that_stops_receiving_does_not_hold_its_publisher() {
    for lossless in [false, true] {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async move {
            let bus = Bus::new();
            let b = bus.subscriber("stuck.reader");
            let capacity = EVENTS as usize;
            let mut sub = if lossless {
                b.lossless(capacity)
            } else {
                b.lossy(capacity)
            }
            .subscribe()
            .unwrap();
            let reader = tokio::spawn(async move {
                let mut recv = Box::pin(sub.recv());
                let mut first = true;
                // Parks in the receive once, then is polled (woken by
                // the publishes) without looking at it again.
                std::future::poll_fn(|cx| {
                    if std::mem::take(&mut first) {
                        assert!(recv.as_mut().poll(cx).is_pending());
                    }
                    std::task::Poll::<()>::Pending
                })
                .await
            });
            tokio::task::yield_now().await;
            let mut to = bus.publisher("stuck.reader").unwrap();
            let publish = async {
                for i in 0..EVENTS {
                    to.publish(i).await.unwrap();
                }
            };
            // A guard against hanging, not a timing check: the loop takes
            // milliseconds.
            tokio::time::timeout(std::time::Duration::from_secs(120), publish)
                .await
                .unwrap_or_else(|_| panic!("lossless: {lossless}: the loop waits on its reader"));
            reader.abort();
        });
    }
}

#[test]
fn a_publish_loop_to_a_latest_subscriber_yields() {
    assert_yields("latest.events", || {
        let bus = Bus::new();
        let sub = bus.subscriber("latest.>").latest().subscribe().unwrap();
        (bus, vec![sub])
    });
}

/// Subscribers that make a publisher wait when they are full, with room
/// for the whole loop: nothing makes it wait, so only the budget can make
/// it yield. (A lone lossless reader paces its publisher: such a loop
/// takes less budget per publish, and still yields.)
#[test]
fn a_publish_loop_to_roomy_lossless_subscribers_and_groups_yields() {
    let roomy = EVENTS as usize;
    assert_yields("roomy.alone", || {
        let bus = Bus::new();
        let sub = bus
            .subscriber("roomy.alone")
            .lossless(roomy)
            .subscribe()
            .unwrap();
        (bus, vec![sub])
    });
    assert_yields("roomy.events", || {
        let bus = Bus::new();
        let subs = vec![
            bus.subscriber("roomy.>")
                .lossless(roomy)
                .subscribe()
                .unwrap(),
            bus.subscriber("roomy.events")
                .lossless(roomy)
                .subscribe()
                .unwrap(),
        ];
        (bus, subs)
    });
    assert_yields("roomy.work", || {
        let bus = Bus::new();
        let subs = vec![bus
            .subscriber("roomy.work")
            .queue("workers")
            .capacity(roomy)
            .subscribe()
            .unwrap()];
        (bus, subs)
    });
}
