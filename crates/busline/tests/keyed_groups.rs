//! Keyed queue groups: each key's events reach the group exactly once, in
//! publish order, one at a time, while members join and leave under load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busline::{Bus, SubscribeError, Subscription};
use parking_lot::Mutex;
use proptest::prelude::*;

/// An event: its key and its number among that key's events.
type Step = (u32, u32);

fn member(bus: &Bus<Step>, capacity: usize) -> Subscription<Step> {
    bus.subscriber("orders.>")
        .queue("workers")
        .key(|e| e.payload.0)
        .capacity(capacity)
        .subscribe()
        .unwrap()
}

/// What the group handled, in the order its members handled it: (member, key, step).
type Log = Arc<Mutex<Vec<(usize, u32, u32)>>>;

/// A member taking events until it has handled `leave_after` (then it drops
/// its subscription), or until the bus closes.
fn spawn_member(
    id: usize,
    mut sub: Subscription<Step>,
    leave_after: Option<usize>,
    log: Log,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut handled = 0;
        while let Ok(e) = sub.recv().await {
            let (key, step) = e.payload;
            log.lock().push((id, key, step));
            handled += 1;
            if handled % 3 == 0 {
                // Handling takes a while now and then, so others go ahead.
                tokio::task::yield_now().await;
            }
            if Some(handled) == leave_after {
                return;
            }
        }
    })
}

/// Every key's steps, as the group handled them, are 0, 1, 2, … with none
/// missing or repeated; and no key was handled by two members at once (a
/// member's events of a key form runs that never interleave with another's).
fn check(log: &[(usize, u32, u32)], keys: u32, per_key: u32) -> Result<(), String> {
    let mut next: HashMap<u32, u32> = HashMap::new();
    for &(m, key, step) in log {
        let want = next.entry(key).or_insert(0);
        if step != *want {
            return Err(format!(
                "key {key}: member {m} handled step {step}, expected {want}"
            ));
        }
        *want += 1;
    }
    for key in 0..keys {
        let got = next.get(&key).copied().unwrap_or(0);
        if got != per_key {
            return Err(format!("key {key}: {got} of {per_key} steps handled"));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Members join after some events and leave after handling some, while
    /// two publishers publish; per key, the sequence the group handled is
    /// exactly the published one: no gap, no duplicate, no reordering.
    #[test]
    fn each_keys_events_are_handled_once_in_order_while_members_come_and_go(
        keys in 1u32..24,
        per_key in 20u32..120,
        capacity in 1usize..48,
        comers in proptest::collection::vec((0u64..3000, 1usize..200), 0..8),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let result = rt.block_on(async move {
            let bus = Bus::<Step>::new();
            let log: Log = Arc::default();
            // One member stays throughout, so the group never closes.
            let stayer = spawn_member(0, member(&bus, capacity), None, log.clone());
            let published = Arc::new(AtomicU64::new(0));
            // Two publishers, each publishing every key's steps in order for
            // half of the keys.
            let publishers: Vec<_> = (0..2u32)
                .map(|half| {
                    let (bus, published) = (bus.clone(), published.clone());
                    tokio::spawn(async move {
                        for step in 0..per_key {
                            for key in (0..keys).filter(|k| k % 2 == half) {
                                bus.publish_to("orders.step", (key, step)).await.unwrap();
                                published.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            let mut comers = comers;
            comers.sort();
            let mut members = Vec::new();
            for (i, (at, leave_after)) in comers.into_iter().enumerate() {
                while published.load(Ordering::Relaxed) < at
                    && !publishers.iter().all(|p| p.is_finished())
                {
                    tokio::task::yield_now().await;
                }
                let sub = member(&bus, capacity);
                members.push(spawn_member(i + 1, sub, Some(leave_after), log.clone()));
            }
            for p in publishers {
                p.await.unwrap();
            }
            let total = (keys * per_key) as usize;
            let all_handled = async {
                while log.lock().len() < total {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            };
            if tokio::time::timeout(Duration::from_secs(60), all_handled).await.is_err() {
                return Err(format!("only {} of {total} events handled", log.lock().len()));
            }
            bus.close();
            stayer.await.unwrap();
            for m in members {
                m.await.unwrap();
            }
            let log = log.lock();
            if log.len() != total {
                return Err(format!("{} events handled, {total} published", log.len()));
            }
            check(&log, keys, per_key)
        });
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

/// With several members, keys spread over them: each member gets some.
#[tokio::test]
async fn keys_spread_over_the_members() {
    let bus = Bus::<Step>::new();
    let mut subs: Vec<_> = (0..4).map(|_| member(&bus, 4096)).collect();
    for key in 0..400 {
        bus.publish_to("orders.step", (key, 0)).await.unwrap();
    }
    let mut counts = Vec::new();
    for s in &mut subs {
        let mut n = 0;
        while let Ok(Some(_)) = s.try_recv() {
            n += 1;
        }
        counts.push(n);
    }
    assert_eq!(counts.iter().sum::<usize>(), 400);
    assert!(counts.iter().all(|&n| n >= 50), "{counts:?}");
}

/// A member slow on its keys does not hold the others up: their keys'
/// events go on to other members while it is busy.
#[tokio::test]
async fn a_busy_members_keys_wait_for_it_and_the_rest_go_on() {
    let bus = Bus::<Step>::new();
    let mut a = member(&bus, 64);
    let mut b = member(&bus, 64);
    for key in 0..20 {
        bus.publish_to("orders.step", (key, 0)).await.unwrap();
    }
    // `a` takes one event and stays busy with it; `b` takes all of its own.
    let held = a.try_recv().unwrap().expect("a has keys").payload.0;
    let mut b_keys = Vec::new();
    while let Ok(Some(e)) = b.try_recv() {
        b_keys.push(e.payload.0);
    }
    assert!(!b_keys.is_empty() && !b_keys.contains(&held));
    // The held key's next event waits for `a`, even though `b` is idle.
    bus.publish_to("orders.step", (held, 1)).await.unwrap();
    assert!(b.try_recv().unwrap().is_none());
    let mut a_rest = Vec::new();
    while let Ok(Some(e)) = a.try_recv() {
        a_rest.push(e.payload);
    }
    assert_eq!(a_rest.last(), Some(&(held, 1)));
}

/// A member leaving hands the events it had not taken to the others.
#[tokio::test]
async fn a_leaving_members_events_go_to_the_others() {
    let bus = Bus::<Step>::new();
    let a = member(&bus, 256);
    let mut b = member(&bus, 256);
    for step in 0..5 {
        for key in 0..20 {
            bus.publish_to("orders.step", (key, step)).await.unwrap();
        }
    }
    drop(a);
    let mut seen = Vec::new();
    while let Ok(Some(e)) = b.try_recv() {
        seen.push((0, e.payload.0, e.payload.1));
    }
    check(&seen, 20, 5).unwrap();
    assert_eq!(bus.stats().discarded, 0);
}

#[test]
fn a_key_needs_a_queue_group() {
    let bus = Bus::<Step>::new();
    let err = bus
        .subscriber("orders.>")
        .key(|e| e.payload.0)
        .subscribe()
        .unwrap_err();
    assert!(
        matches!(&err, SubscribeError::Options { reason, .. } if reason.contains(".queue(group)")),
        "{err}"
    );
}

#[test]
fn members_of_one_group_are_all_keyed_or_none() {
    let bus = Bus::<Step>::new();
    let _keyed = member(&bus, 16);
    let err = bus
        .subscriber("orders.>")
        .queue("workers")
        .subscribe()
        .unwrap_err();
    assert!(err.to_string().contains("is keyed"), "{err}");
    let _plain = bus.subscriber("jobs.>").queue("w").subscribe().unwrap();
    let err = bus
        .subscriber("jobs.>")
        .queue("w")
        .key(|e| e.payload.0)
        .subscribe()
        .unwrap_err();
    assert!(err.to_string().contains("not keyed"), "{err}");
}
