//! The lock-free ring (lossless and lossy subscribers) loses, duplicates
//! and reorders no event, keeps no envelope alive (and drops none twice),
//! does not hang, and counts and signals backpressure exactly: tests that
//! try to make it do otherwise.
//!
//! Timeouts here are deadlock detectors only, never speed assertions.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use busline::{Bus, PublishError, RecvError, Subscription};

// ----- helpers -------------------------------------------------------------

#[path = "helpers/ledger.rs"]
mod ledger;
use ledger::{Ledger, Rng, P};

/// `RING_REVIEW_WORKERS` overrides the worker threads (more threads than
/// cores preempt tasks inside the protocol's windows more often).
fn rt(workers: usize) -> tokio::runtime::Runtime {
    let workers = std::env::var("RING_REVIEW_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(workers);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// Publishes `p`, first with `try_publish` when `try_first` (falling back to
/// a waiting publish with the event handed back on `Full`).
async fn publish_mixed(bus: &Bus<P>, topic: &str, p: P, try_first: bool) -> usize {
    let p = if try_first {
        match bus.try_publish_to(topic, p) {
            Ok(r) => return r.subscribers,
            Err(PublishError::Full { event, .. }) => event,
            Err(e) => panic!("try_publish: {e:?}"),
        }
    } else {
        p
    };
    bus.publish_to(topic, p).await.unwrap().subscribers
}

// ----- deterministic model check of one shared ring ------------------------

/// What one member of the model has done.
#[derive(Clone, Copy)]
struct ModelMember {
    joined: u64,
    cursor: u64,
    received: u64,
    reported: u64,
}

/// A model of one ring (lossless or lossy) shared by up to four members:
/// random publishes (try_publish), receives, joins, leaves (drop and
/// unsubscribe), checked after every step against the model: each receive's
/// result (event position or exact `Lagged(n)`), `Full`, every member's
/// counters, the bus totals, the backpressure signal, and how many payloads
/// are alive (the ring keeps an event alive only while a member that was
/// there when it was published has not read it yet).
fn model_ring(lossless: bool, cap: usize, seed: u64, steps: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut rng = Rng::from_state(seed | 1);
        let ledger = Ledger::new(4 * steps * (cap + 4) + 64);
        let bus = Bus::<P>::new();
        let pressure = bus.backpressure();
        let (high, low) = ((cap * 3 / 4).max(1) as u64, (cap / 4) as u64);
        let cap64 = cap as u64;
        let mk = |bus: &Bus<P>, name: String| {
            let b = bus.subscriber("m").name(name);
            if lossless {
                b.lossless(cap)
            } else {
                b.lossy(cap)
            }
            .subscribe()
            .unwrap()
        };
        let mut subs: Vec<Option<(Subscription<P>, ModelMember)>> = (0..4).map(|_| None).collect();
        // The current ring's end (a new ring starts at 0 once every member left).
        let mut tail = 0u64;
        // Positions whose slots the publisher emptied (every member read
        // them): it looks every `cap / 8` events (at least every one).
        let reclaim_every = (cap64 / 8).max(1);
        let mut reclaimed = 0u64;
        let mut pressured = false;
        let (mut full, mut gen) = (0u64, 0u32);
        // Bus totals of members gone.
        let (mut gone_delivered, mut gone_dropped, mut gone_discarded) = (0u64, 0u64, 0u64);
        let ctx = |what: &str, step: usize| {
            format!(
                "{} cap {cap} seed {seed} step {step}: {what}",
                if lossless { "lossless" } else { "lossy" }
            )
        };
        for step in 0..steps {
            let members = subs.iter().flatten().count();
            let min_cursor = subs.iter().flatten().map(|(_, m)| m.cursor).min();
            let op = rng.below(100);
            let i = rng.below(4) as usize;
            match op {
                // Publish a batch.
                0..=34 => {
                    let k = 1 + rng.below(if cap > 8 { cap64 * 3 / 2 } else { 3 * cap64 });
                    for _ in 0..k {
                        let members = subs.iter().flatten().count();
                        let min_cursor = subs.iter().flatten().map(|(_, m)| m.cursor).min();
                        let p = ledger.make(0, tail);
                        let is_full = lossless && min_cursor.is_some_and(|c| tail - c >= cap64);
                        match bus.try_publish_to("m", p) {
                            Ok(r) => {
                                assert!(!is_full, "{}", ctx("published into a full ring", step));
                                assert_eq!(r.subscribers, members, "{}", ctx("receipt", step));
                                if members > 0 {
                                    tail += 1;
                                    if tail % reclaim_every == 0 {
                                        // Every member's cursor, as the
                                        // publisher reads it now.
                                        let slowest = subs
                                            .iter()
                                            .flatten()
                                            .map(|(_, m)| m.cursor)
                                            .min()
                                            .unwrap();
                                        reclaimed = reclaimed.max(slowest);
                                    }
                                    if lossless && !pressured && tail - min_cursor.unwrap() >= high
                                    {
                                        pressured = true;
                                    }
                                }
                            }
                            Err(PublishError::Full { event, .. }) => {
                                assert!(is_full, "{}", ctx("Full with room", step));
                                assert_eq!(event.n, tail);
                                full += 1;
                                break;
                            }
                            Err(e) => panic!("{}: {e:?}", ctx("publish", step)),
                        }
                    }
                }
                // A member reads a few (or all it has).
                35..=69 => {
                    let Some((sub, m)) = subs[i].as_mut() else {
                        continue;
                    };
                    let k = 1 + rng.below(if cap > 8 { cap64 * 2 } else { 4 * cap64 });
                    for _ in 0..k {
                        let oldest = tail.saturating_sub(cap64);
                        let got = sub.try_recv();
                        if m.cursor < oldest {
                            assert!(!lossless);
                            let n = oldest - m.cursor;
                            match got {
                                Err(RecvError::Lagged(l)) => {
                                    assert_eq!(l, n, "{}", ctx("lag", step))
                                }
                                other => panic!("{}: {other:?}", ctx("expected Lagged", step)),
                            }
                            m.reported += n;
                            m.cursor = oldest;
                        } else if m.cursor < tail {
                            let e = got
                                .unwrap_or_else(|e| panic!("{}: {e}", ctx("recv", step)))
                                .unwrap_or_else(|| {
                                    panic!("{}", ctx("nothing, with events queued", step))
                                });
                            assert_eq!(e.payload.n, m.cursor, "{}", ctx("order", step));
                            m.cursor += 1;
                            m.received += 1;
                        } else {
                            assert!(
                                matches!(got, Ok(None)),
                                "{}",
                                ctx("an event with nothing queued", step)
                            );
                            break;
                        }
                    }
                    // Reading settles backpressure at the low watermark.
                    let min_cursor = subs.iter().flatten().map(|(_, m)| m.cursor).min().unwrap();
                    if pressured && tail - min_cursor <= low {
                        pressured = false;
                    }
                }
                // A member leaves (drop or unsubscribe).
                70..=79 => {
                    let Some((sub, m)) = subs[i].take() else {
                        continue;
                    };
                    let oldest = tail.saturating_sub(cap64);
                    let unread = tail - m.cursor.max(oldest);
                    let unreported = oldest.saturating_sub(m.cursor);
                    if rng.below(2) == 0 {
                        assert_eq!(sub.unsubscribe(), unread, "{}", ctx("unsubscribe", step));
                    } else {
                        drop(sub);
                    }
                    gone_delivered += tail - m.joined;
                    gone_dropped += m.reported + unreported;
                    gone_discarded += unread;
                    match subs.iter().flatten().map(|(_, m)| m.cursor).min() {
                        None => {
                            tail = 0;
                            reclaimed = 0;
                            pressured = false;
                        }
                        Some(c) => {
                            if pressured && tail - c <= low {
                                pressured = false;
                            }
                        }
                    }
                }
                // A member joins.
                80..=89 => {
                    if subs[i].is_some() {
                        continue;
                    }
                    gen += 1;
                    let sub = mk(&bus, format!("m{i}-{gen}"));
                    subs[i] = Some((
                        sub,
                        ModelMember {
                            joined: tail,
                            cursor: tail,
                            received: 0,
                            reported: 0,
                        },
                    ));
                }
                _ => {}
            }
            let _ = (members, min_cursor);
            // Check everything.
            let oldest = tail.saturating_sub(cap64);
            let min_cursor = subs.iter().flatten().map(|(_, m)| m.cursor).min();
            // A slot holds its event until the publisher's reclaim after
            // every member read it, or until written over; a ring whose last
            // member left holds none.
            let expect_live =
                min_cursor.map_or(0, |_| tail - reclaimed.max(tail.saturating_sub(cap64))) as i64;
            assert_eq!(
                ledger.live(),
                expect_live,
                "{}",
                ctx(
                    "payloads alive (the ring keeps what every member read, or lost some)",
                    step
                )
            );
            assert_eq!(
                pressure.is_high(),
                pressured,
                "{}",
                ctx("backpressure", step)
            );
            let bs = bus.stats();
            let (mut d, mut dr, mut q) = (gone_delivered, gone_dropped, 0u64);
            for (sub, m) in subs.iter().flatten() {
                let st = sub.stats();
                let unreported = oldest.saturating_sub(m.cursor);
                let queued = tail - m.cursor.max(oldest);
                let want = (
                    tail - m.joined,
                    m.received,
                    m.reported + unreported,
                    queued as usize,
                );
                assert_eq!(
                    (st.delivered, st.received, st.dropped, st.queued),
                    want,
                    "{}: {st:?}",
                    ctx("member stats (delivered, received, dropped, queued)", step)
                );
                assert_eq!(st.delivered, st.received + st.dropped + st.queued as u64);
                // (A lossy member's peak past its capacity has a test of its own.)
                assert!(
                    (!lossless || st.peak <= cap) && st.peak >= st.queued,
                    "{}: {st:?}",
                    ctx("peak out of [queued, capacity]", step)
                );
                assert_eq!(sub.len(), queued as usize, "{}", ctx("len", step));
                assert_eq!(bs.subscriber(sub.name()).unwrap(), &st);
                d += tail - m.joined;
                dr += m.reported + unreported;
                q += queued;
            }
            let _ = q;
            assert_eq!(
                (bs.delivered, bs.dropped, bs.discarded, bs.cancelled),
                (d, dr, gone_discarded, full),
                "{}",
                ctx(
                    "bus totals (delivered, dropped, discarded, cancelled)",
                    step
                )
            );
        }
        drop(subs);
        drop(bus);
        ledger.assert_each_dropped_once("model_ring");
    });
}

#[test]
fn model_lossless_small_capacities() {
    for cap in [1, 2, 3, 4, 7] {
        for seed in 1..=12 {
            model_ring(true, cap, seed * 7919, 1500);
        }
    }
}

#[test]
fn model_lossy_small_capacities() {
    for cap in [1, 2, 3, 4, 7] {
        for seed in 1..=12 {
            model_ring(false, cap, seed * 104_729, 1500);
        }
    }
}

/// Capacities past one chunk of 1024 slots, wrapping around many times.
#[test]
fn model_lossless_large_capacities() {
    for cap in [1023, 1024, 1025, 2048, 3000] {
        for seed in 1..=2 {
            model_ring(true, cap, seed * 31, 250);
        }
    }
}

#[test]
fn model_lossy_large_capacities() {
    for cap in [1023, 1024, 1025, 2048, 3000] {
        for seed in 1..=2 {
            model_ring(false, cap, seed * 37, 250);
        }
    }
}

// ----- targeted deterministic cases ----------------------------------------

/// A lossy queue holds at most its capacity, so its peak is at most that:
/// but when another member of its ring leaves, the ring refreshes every
/// member's peak from `tail - cursor`, which for a lossy member that fell
/// behind counts events long overwritten.
#[tokio::test]
async fn lossy_peak_stays_within_capacity_when_a_ring_member_leaves() {
    let bus = Bus::<u32>::new();
    let a = bus.subscriber("t").lossy(4).name("a").subscribe().unwrap();
    let b = bus.subscriber("t").lossy(4).name("b").subscribe().unwrap();
    for i in 0..100 {
        bus.publish_to("t", i).await.unwrap();
    }
    assert!(a.stats().peak <= 4, "{:?}", a.stats());
    drop(b);
    let st = a.stats();
    assert_eq!(st.queued, 4);
    assert!(st.peak <= 4, "peak {} > capacity 4: {st:?}", st.peak);
}

/// The publisher waited on `slow` (the only member whose queue was full;
/// `try_publish` named it), not on `fast`: the waiting time is `slow`'s.
#[tokio::test(flavor = "current_thread")]
async fn blocked_time_is_charged_to_the_member_the_publisher_waited_on() {
    let bus = Bus::<u32>::new();
    let mk = |n: &str| bus.subscriber("t").lossless(4).name(n).subscribe().unwrap();
    let (mut slow, mut fast) = (mk("slow"), mk("fast"));
    for i in 0..4 {
        bus.try_publish_to("t", i).unwrap();
    }
    for i in 0..2 {
        assert_eq!(fast.recv().await.unwrap().payload, i);
    }
    let b = bus.clone();
    let p = tokio::spawn(async move { b.publish_to("t", 4).await.unwrap().subscribers });
    tokio::time::sleep(Duration::from_millis(50)).await; // the publisher waits
    assert!(!p.is_finished());
    match bus.try_publish_to("t", 99) {
        Err(PublishError::Full { subscriber, .. }) => assert_eq!(&*subscriber, "slow"),
        other => panic!("{other:?}"),
    }
    for i in 0..4 {
        assert_eq!(slow.recv().await.unwrap().payload, i);
    }
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), p)
            .await
            .expect("hung")
            .unwrap(),
        2
    );
    let stats = bus.stats();
    let (s, f) = (
        stats.subscriber("slow").unwrap(),
        stats.subscriber("fast").unwrap(),
    );
    assert!(
        s.blocked >= Duration::from_millis(40) && f.blocked == Duration::ZERO,
        "the publisher waited on `slow` only: slow.blocked {:?}, fast.blocked {:?}",
        s.blocked,
        f.blocked
    );
}

/// Same as above with the member it waited on leaving (which is what
/// released the publisher): the wait is not charged to the member left.
#[tokio::test(flavor = "current_thread")]
async fn blocked_time_is_not_charged_to_a_member_that_never_was_full() {
    let bus = Bus::<u32>::new();
    let mk = |n: &str| bus.subscriber("t").lossless(4).name(n).subscribe().unwrap();
    let (idle, mut keen) = (mk("idle"), mk("keen"));
    for i in 0..4 {
        bus.try_publish_to("t", i).unwrap();
        assert_eq!(keen.recv().await.unwrap().payload, i);
    }
    let b = bus.clone();
    let p = tokio::spawn(async move { b.publish_to("t", 4).await.unwrap().subscribers });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!p.is_finished());
    drop(idle);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), p)
            .await
            .expect("hung")
            .unwrap(),
        1
    );
    let st = keen.stats();
    assert_eq!(
        st.blocked,
        Duration::ZERO,
        "keen's queue never was full: {st:?}"
    );
}

/// Watermarks on a shared lossless ring: raised when the slowest member
/// reaches high, kept while it stays above low (hysteresis), lowered when
/// it leaves and the rest are at or below low, or when the rest read down
/// to low after it left, and when the last member leaves.
#[tokio::test]
async fn backpressure_follows_the_slowest_member_as_members_leave() {
    let bus = Bus::<u32>::new();
    let pressure = bus.backpressure();
    let mk = |n: &str| {
        bus.subscriber("t")
            .lossless(8)
            .watermarks(6, 2)
            .name(n)
            .subscribe()
            .unwrap()
    };
    let (mut a, b) = (mk("a"), mk("b"));
    for i in 0..5 {
        bus.try_publish_to("t", i).unwrap();
    }
    assert!(!pressure.is_high());
    bus.try_publish_to("t", 5).unwrap();
    assert!(pressure.is_high(), "b has 6 = high waiting");
    for _ in 0..6 {
        a.recv().await.unwrap();
    }
    assert!(pressure.is_high(), "b still has 6 waiting");
    let st = bus.stats();
    assert!(st.subscriber("b").unwrap().pressured);
    assert!(!st.subscriber("a").unwrap().pressured);
    drop(b); // the slowest leaves; a has nothing waiting
    assert!(!pressure.is_high(), "a is at 0 <= low");

    // Hysteresis: the slowest leaves while the other is between low and high.
    let b = mk("b2");
    for i in 0..6 {
        bus.try_publish_to("t", i).unwrap();
    }
    assert!(pressure.is_high());
    for _ in 0..3 {
        a.recv().await.unwrap();
    }
    drop(b);
    assert!(pressure.is_high(), "a has 3 > low waiting: stays high");
    a.recv().await.unwrap();
    assert_eq!(a.len(), 2);
    assert!(!pressure.is_high(), "a drained to low (2 waiting)");
    // The last member leaving with a full queue lowers it too.
    while a.try_recv().unwrap().is_some() {}
    for i in 0..8 {
        bus.try_publish_to("t", i).unwrap();
    }
    assert!(pressure.is_high());
    drop(a);
    assert!(!pressure.is_high(), "no subscriber left");
}

/// `unsubscribe()` returns what that member was handed and never received,
/// for each member of a shared ring; bus totals add up.
#[tokio::test]
async fn unsubscribe_counts_per_ring_member() {
    let bus = Bus::<u32>::new();
    let mk = |n: &str| {
        bus.subscriber("t")
            .lossless(16)
            .name(n)
            .subscribe()
            .unwrap()
    };
    let (mut a, mut b, mut c) = (mk("a"), mk("b"), mk("c"));
    for i in 0..10 {
        bus.publish_to("t", i).await.unwrap();
    }
    for i in 0..3 {
        assert_eq!(a.recv().await.unwrap().payload, i);
    }
    for i in 0..10 {
        assert_eq!(b.recv().await.unwrap().payload, i);
    }
    assert_eq!(a.unsubscribe(), 7);
    assert_eq!(b.unsubscribe(), 0);
    assert_eq!(bus.stats().discarded, 7);
    for i in 10..12 {
        assert_eq!(bus.publish_to("t", i).await.unwrap().subscribers, 1);
    }
    assert_eq!(c.recv().await.unwrap().payload, 0);
    assert_eq!(c.unsubscribe(), 11);
    let st = bus.stats();
    assert_eq!((st.delivered, st.discarded, st.dropped), (32, 18, 0));

    // Lossy: lost events are dropped (reported or not), queued ones discarded.
    let bus = Bus::<u32>::new();
    let mk = |n: &str| bus.subscriber("t").lossy(4).name(n).subscribe().unwrap();
    let (mut x, y) = (mk("x"), mk("y"));
    for i in 0..10 {
        bus.publish_to("t", i).await.unwrap();
    }
    assert_eq!(x.recv().await.unwrap_err(), RecvError::Lagged(6));
    assert_eq!(x.recv().await.unwrap().payload, 6);
    assert_eq!(x.recv().await.unwrap().payload, 7);
    let (sx, sy) = (x.stats(), y.stats());
    assert_eq!(
        (sx.delivered, sx.received, sx.dropped, sx.queued),
        (10, 2, 6, 2)
    );
    assert_eq!(
        (sy.delivered, sy.received, sy.dropped, sy.queued),
        (10, 0, 6, 4)
    );
    assert_eq!(y.unsubscribe(), 4);
    assert_eq!(x.unsubscribe(), 2);
    let st = bus.stats();
    assert_eq!((st.delivered, st.dropped, st.discarded), (20, 12, 6));
}

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

/// A member joining a full lossless ring while a publisher waits: it does
/// not add to the wait, and gets what comes after it joined, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_a_full_ring_while_a_publisher_waits() {
    for cap in [1usize, 2, 1025] {
        let bus = Bus::<u64>::new();
        let mk = || bus.subscriber("t").lossless(cap).subscribe().unwrap();
        let mut slow = mk();
        for i in 0..cap as u64 {
            bus.try_publish_to("t", i).unwrap();
        }
        let b = bus.clone();
        let n = cap as u64 + 5;
        let p = tokio::spawn(async move {
            for i in cap as u64..n {
                b.publish_to("t", i).await.unwrap();
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!p.is_finished());
        let mut late = mk();
        let got = tokio::time::timeout(Duration::from_secs(20), async {
            let mut late_got = Vec::new();
            for i in 0..n {
                assert_eq!(slow.recv().await.unwrap().payload, i);
                while let Some(e) = late.try_recv().unwrap() {
                    late_got.push(e.payload);
                }
            }
            p.await.unwrap();
            while let Some(e) = late.try_recv().unwrap() {
                late_got.push(e.payload);
            }
            late_got
        })
        .await
        .expect("hung");
        assert_eq!(got, (cap as u64..n).collect::<Vec<_>>(), "cap {cap}");
    }
}

/// A publisher waiting on a full lossless ring is woken by the reads of
/// the member it waits on (the slowest) alone, however far ahead the
/// others are: they are past the mark it waits for and leave the ring to
/// the slowest one's reads, which must wake it on each run it has
/// waiting. Step by step on one thread, polling the publish by hand.
#[test]
fn the_slowest_members_reads_wake_a_waiting_publisher() {
    struct Flag(AtomicBool);
    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, SeqCst);
        }
    }
    for cap in [1usize, 2, 8, 16, 1025] {
        let bus = Bus::<u64>::new();
        let mk = |n: &str| {
            bus.subscriber("t")
                .lossless(cap)
                .name(n)
                .subscribe()
                .unwrap()
        };
        let (mut fast, mut slow) = (mk("fast"), mk("slow"));
        let (mut next, mut read) = (0u64, 0u64);
        for run in 0..3 {
            while bus.try_publish_to("t", next).is_ok() {
                next += 1;
            }
            let flag = Arc::new(Flag(AtomicBool::new(false)));
            let waker = std::task::Waker::from(flag.clone());
            let mut cx = std::task::Context::from_waker(&waker);
            let mut publish = std::pin::pin!(bus.publish_to("t", next));
            assert!(
                publish.as_mut().poll(&mut cx).is_pending(),
                "cap {cap}: full"
            );
            // Every event not read yet, in order, to each member.
            let unread: Vec<u64> = (read..next).collect();
            let fast_got: Vec<u64> = fast.drain().iter().map(|e| e.payload).collect();
            assert_eq!(fast_got, unread, "cap {cap} run {run}");
            assert!(!flag.0.load(SeqCst), "cap {cap}: woken with no room");
            let slow_got: Vec<u64> = slow.drain().iter().map(|e| e.payload).collect();
            assert_eq!(slow_got, unread, "cap {cap} run {run}");
            read = next;
            assert!(
                flag.0.load(SeqCst),
                "cap {cap} run {run}: the slowest member read the ring empty and the publisher was not woken"
            );
            assert!(publish.as_mut().poll(&mut cx).is_ready(), "cap {cap}: room");
            next += 1;
        }
    }
}

// ----- concurrency -----------------------------------------------------------

/// Shared rings of every shape (lossless and lossy; capacity 1, 2 and 1025)
/// on one topic tree: two publishers mixing `try_publish` and `publish`,
/// members joining, reading at different speeds and leaving (dropped or
/// unsubscribed, with unread events) all along. Each lossless member sees
/// each publisher's events with no gap or duplicate after its first; lossy
/// ones in order; each member's counters add up; every payload is dropped
/// exactly once in the end, and never more are alive than the rings can
/// hold plus what is in flight.
#[test]
fn shared_rings_churn_with_mixed_publishers() {
    const PUBLISHERS: u32 = 2;
    let per_scale: u64 = std::env::var("RING_REVIEW_SCALE")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1);
    #[allow(non_snake_case)]
    let PER: u64 = 25_000 * per_scale;
    let ledger = Ledger::new((PUBLISHERS as u64 * PER) as usize + 16);
    let configs: [(bool, usize); 6] = [
        (true, 1),
        (true, 2),
        (true, 1025),
        (false, 1),
        (false, 2),
        (false, 1025),
    ];
    let bound: i64 = configs.iter().map(|c| c.1 as i64).sum::<i64>() + 64;
    rt(3).block_on(async {
        let bus = Bus::<P>::new();
        let stop = Arc::new(AtomicBool::new(false));
        let mut members = Vec::new();
        for (k, &(lossless, cap)) in configs.iter().enumerate() {
            for j in 0..3u64 {
                let bus = bus.clone();
                let stop = stop.clone();
                members.push(tokio::spawn(async move {
                    let mut rng = Rng::from_state(0x9E37_79B9 ^ ((k as u64) << 8) ^ j);
                    let mut generation = 0u32;
                    loop {
                        let b = bus
                            .subscriber("c.>")
                            .name(format!("c{k}-{j}-{generation}"));
                        let mut sub = if lossless { b.lossless(cap) } else { b.lossy(cap) }
                            .subscribe()
                            .unwrap();
                        let mut last = [None::<u64>; PUBLISHERS as usize];
                        let (mut received, mut lag) = (0u64, 0u64);
                        let quota = 1 + rng.below(3 * cap as u64 + 200);
                        let stall_every = 20 + rng.below(300);
                        let closed = loop {
                            if received >= quota {
                                break false;
                            }
                            match sub.recv().await {
                                Ok(e) => {
                                    let (p, n) = (e.payload.publisher as usize, e.payload.n);
                                    match last[p] {
                                        Some(l) if lossless => assert_eq!(
                                            n,
                                            l + 1,
                                            "lossless {cap} member {j}: publisher {p} gap or duplicate"
                                        ),
                                        Some(l) => assert!(
                                            n > l,
                                            "lossy {cap} member {j}: publisher {p}: {n} after {l}"
                                        ),
                                        None => {}
                                    }
                                    last[p] = Some(n);
                                    received += 1;
                                    if received % stall_every == 0 {
                                        if j == 0 {
                                            tokio::time::sleep(Duration::from_micros(300)).await;
                                        } else {
                                            tokio::task::yield_now().await;
                                        }
                                    }
                                }
                                Err(RecvError::Lagged(n)) => {
                                    assert!(!lossless, "a lossless member lagged");
                                    assert!(n > 0);
                                    lag += n;
                                }
                                Err(RecvError::Closed) => break true,
                                Err(e) => panic!("{e}"),
                            }
                        };
                        let st = sub.stats();
                        assert_eq!(
                            st.delivered,
                            received + st.dropped + st.queued as u64,
                            "{st:?} received {received}"
                        );
                        assert_eq!(st.received, received);
                        assert!(st.dropped >= lag, "{st:?} lag {lag}");
                        assert!(st.queued <= cap, "{st:?}");
                        if lossless {
                            assert_eq!(st.dropped, 0);
                            assert!(st.peak <= cap, "{st:?}");
                        }
                        if rng.below(2) == 0 {
                            let _ = sub.unsubscribe();
                        } else {
                            drop(sub);
                        }
                        generation += 1;
                        if closed || stop.load(SeqCst) {
                            return generation;
                        }
                    }
                }));
            }
        }
        let mut pubs = Vec::new();
        for p in 0..PUBLISHERS {
            let bus = bus.clone();
            let ledger = ledger.clone();
            pubs.push(tokio::spawn(async move {
                let topic = format!("c.p{p}");
                let mut max_live = 0;
                for n in 0..PER {
                    let payload = ledger.make(p, n);
                    publish_mixed(&bus, &topic, payload, n % 3 == p as u64).await;
                    if n % 97 == 0 {
                        max_live = max_live.max(ledger.live());
                    }
                }
                max_live
            }));
        }
        let all = async {
            let mut max_live = 0;
            for p in pubs {
                max_live = max_live.max(p.await.unwrap());
            }
            stop.store(true, SeqCst);
            bus.close();
            for m in members {
                assert!(m.await.unwrap() > 0);
            }
            max_live
        };
        let max_live = tokio::time::timeout(Duration::from_secs(300), all)
            .await
            .expect("a member or publisher hung (lost wake-up?)");
        assert!(
            max_live <= bound,
            "{max_live} payloads alive at once, more than the rings hold ({bound})"
        );
        let stats = bus.stats();
        assert!(stats.subscribers.is_empty());
        drop(bus);
    });
    ledger.assert_each_dropped_once("shared_rings_churn_with_mixed_publishers");
}

/// Two publishers and three members on a capacity-1 (and 2) lossless ring,
/// readers and publishers on different threads: every member gets every
/// event, each publisher's in order. A lost wake-up hangs (timeout).
#[test]
fn tiny_lossless_rings_two_publishers_three_members() {
    for cap in [1usize, 2] {
        const PER: u64 = 20_000;
        let ledger = Ledger::new(2 * PER as usize + 8);
        rt(2).block_on(async {
            let bus = Bus::<P>::new();
            let mut readers = Vec::new();
            for j in 0..3 {
                let mut sub = bus.subscriber("t").lossless(cap).subscribe().unwrap();
                readers.push(tokio::spawn(async move {
                    let mut next = [0u64; 2];
                    let mut total = 0;
                    loop {
                        match sub.recv().await {
                            Ok(e) => {
                                let p = e.payload.publisher as usize;
                                assert_eq!(e.payload.n, next[p], "member {j} cap {cap}");
                                next[p] += 1;
                                total += 1;
                                if j == 2 && total % 1000 == 0 {
                                    tokio::time::sleep(Duration::from_millis(1)).await;
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
                let bus = bus.clone();
                let ledger = ledger.clone();
                pubs.push(tokio::spawn(async move {
                    for n in 0..PER {
                        let r = publish_mixed(&bus, "t", ledger.make(p, n), n % 5 == 0).await;
                        assert_eq!(r, 3);
                    }
                }));
            }
            let done = async {
                for p in pubs {
                    p.await.unwrap();
                }
                drop(bus);
                for r in readers {
                    assert_eq!(r.await.unwrap(), [PER, PER]);
                }
            };
            tokio::time::timeout(Duration::from_secs(300), done)
                .await
                .expect("hung");
        });
        ledger.assert_each_dropped_once("tiny_lossless_rings_two_publishers_three_members");
    }
}

/// Lossy members sharing a ring with a publisher on another thread, lagging
/// by more than the capacity many times: events in order, never twice, and
/// received + reported lag == published exactly; the counters agree.
#[test]
fn lossy_members_lag_many_times_with_a_concurrent_publisher() {
    for cap in [1usize, 2, 3, 1025, 2048, 3000] {
        let n_events: u64 = if cap > 3 { 40 * cap as u64 } else { 60_000 };
        let ledger = Ledger::new(n_events as usize + 8);
        rt(2).block_on(async {
            let bus = Bus::<P>::new();
            let mut readers = Vec::new();
            for j in 0..3u64 {
                let mut sub = bus.subscriber("t").lossy(cap).subscribe().unwrap();
                readers.push(tokio::spawn(async move {
                    let (mut received, mut lag, mut last) = (0u64, 0u64, None::<u64>);
                    let mut laps = 0u64;
                    loop {
                        match sub.recv().await {
                            Ok(e) => {
                                let n = e.payload.n;
                                assert!(
                                    last.is_none_or(|l| n > l),
                                    "cap {cap}: {n} after {last:?}"
                                );
                                // Exact: what was skipped is what was reported.
                                assert_eq!(n, received + lag, "cap {cap} member {j}");
                                last = Some(n);
                                received += 1;
                                if received % (cap as u64 * (j + 1) + 7) == 0 {
                                    tokio::time::sleep(Duration::from_micros(200)).await;
                                }
                            }
                            Err(RecvError::Lagged(n)) => {
                                assert!(n > 0);
                                lag += n;
                                laps += 1;
                            }
                            Err(RecvError::Closed) => {
                                let st = sub.stats();
                                return (received, lag, laps, st);
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }));
            }
            let b = bus.clone();
            let ledger2 = ledger.clone();
            let p = tokio::spawn(async move {
                for n in 0..n_events {
                    let p = ledger2.make(0, n);
                    if n % 2 == 0 {
                        b.try_publish_to("t", p).unwrap();
                    } else {
                        b.publish_to("t", p).await.unwrap();
                    }
                }
            });
            let done = async {
                p.await.unwrap();
                bus.close();
                let mut res = Vec::new();
                for r in readers {
                    res.push(r.await.unwrap());
                }
                res
            };
            let res = tokio::time::timeout(Duration::from_secs(300), done)
                .await
                .expect("hung");
            for (received, lag, _laps, st) in res {
                assert_eq!(received + lag, n_events, "cap {cap}");
                assert_eq!(
                    (st.delivered, st.received, st.dropped, st.queued),
                    (n_events, received, lag, 0),
                    "cap {cap}"
                );
            }
        });
        ledger.assert_each_dropped_once("lossy_members_lag_many_times_with_a_concurrent_publisher");
    }
}

/// Lossless rings past one chunk (1025, 2048, 3000 slots) wrapping around
/// several times with a stalling member, a member joining and leaving part
/// way, and `try_publish` mixed in.
#[test]
fn large_lossless_rings_wrap_around() {
    for cap in [1025usize, 2048, 3000] {
        let n_events = 4 * cap as u64 + 17;
        let ledger = Ledger::new(n_events as usize + 8);
        rt(2).block_on(async {
            let bus = Bus::<P>::new();
            let reader = move |mut sub: Subscription<P>, stall: bool, stop_after: Option<u64>| {
                tokio::spawn(async move {
                    let mut first = None;
                    let mut next = None::<u64>;
                    let mut got = 0u64;
                    loop {
                        if stop_after.is_some_and(|s| got >= s) {
                            return (first, next, got);
                        }
                        match sub.recv().await {
                            Ok(e) => {
                                let n = e.payload.n;
                                if let Some(x) = next {
                                    assert_eq!(n, x, "cap {cap}: gap or duplicate");
                                } else {
                                    first = Some(n);
                                }
                                next = Some(n + 1);
                                got += 1;
                                if stall && got % (cap as u64 / 3) == 0 {
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                }
                            }
                            Err(RecvError::Closed) => return (first, next, got),
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            };
            let mk = || bus.subscriber("t").lossless(cap).subscribe().unwrap();
            let fast = reader(mk(), false, None);
            let slow = reader(mk(), true, None);
            let b = bus.clone();
            let ledger2 = ledger.clone();
            let p = tokio::spawn(async move {
                let mut mid = None;
                for n in 0..n_events {
                    if n == n_events / 3 {
                        let s = b.subscriber("t").lossless(cap).subscribe().unwrap();
                        mid = Some((n, reader(s, false, Some(cap as u64 + 5))));
                    }
                    publish_mixed(&b, "t", ledger2.make(0, n), n % 7 == 0).await;
                }
                mid.unwrap()
            });
            let done = async {
                let (joined_at, mid) = p.await.unwrap();
                let (first, _, got) = mid.await.unwrap();
                assert_eq!(
                    first,
                    Some(joined_at),
                    "cap {cap}: the member joining mid-way"
                );
                assert_eq!(got, cap as u64 + 5);
                drop(bus);
                for r in [fast, slow] {
                    assert_eq!(
                        r.await.unwrap(),
                        (Some(0), Some(n_events), n_events),
                        "cap {cap}"
                    );
                }
            };
            tokio::time::timeout(Duration::from_secs(300), done)
                .await
                .expect("hung");
        });
        ledger.assert_each_dropped_once("large_lossless_rings_wrap_around");
    }
}

/// A subscriber dropped (or unsubscribed), from another task, while a
/// publisher waits on its full queue: the publisher goes on, the other
/// member gets everything, nothing leaks. Many rounds, capacities 1 and 2.
#[test]
fn dropping_a_member_a_publisher_waits_on_never_hangs() {
    let ledger = Ledger::new(100_000);
    rt(2).block_on(async {
        for round in 0..400u64 {
            let cap = 1 + (round % 2) as usize;
            let bus = Bus::<P>::new();
            let mk = || bus.subscriber("t").lossless(cap).subscribe().unwrap();
            let (mut keen, idle) = (mk(), mk());
            let n = cap as u64 + 3;
            let b = bus.clone();
            let l = ledger.clone();
            let p = tokio::spawn(async move {
                for i in 0..n {
                    publish_mixed(&b, "t", l.make(0, i), i % 2 == 1).await;
                }
            });
            let k = tokio::spawn(async move {
                for i in 0..n {
                    assert_eq!(keen.recv().await.unwrap().payload.n, i);
                }
                keen
            });
            // Leave at different moments: at once, after a yield, after a
            // short sleep (the publisher waits by then).
            match round % 4 {
                0 => {}
                1 => tokio::task::yield_now().await,
                _ => tokio::time::sleep(Duration::from_micros(50 * (round % 7))).await,
            }
            let d = tokio::spawn(async move {
                if round % 3 == 0 {
                    idle.unsubscribe()
                } else {
                    drop(idle);
                    0
                }
            });
            let (keen, d_ret) = tokio::time::timeout(Duration::from_secs(20), async {
                p.await.unwrap();
                let d_ret = d.await.unwrap();
                (k.await.unwrap(), d_ret)
            })
            .await
            .unwrap_or_else(|_| panic!("round {round}: hung"));
            let unsubscribed = d_ret;
            let st = bus.stats();
            assert_eq!(st.subscribers.len(), 1);
            let ks = keen.stats();
            assert_eq!(
                (ks.delivered, ks.received, ks.queued),
                (n, n, 0),
                "round {round}"
            );
            // idle received nothing: all it was delivered it discarded.
            assert_eq!(st.delivered, n + st.discarded, "round {round}: {st:?}");
            if round % 3 == 0 {
                assert_eq!(unsubscribed, st.discarded, "round {round}");
            }
            drop(keen);
            drop(bus);
        }
    });
    ledger.assert_each_dropped_once("dropping_a_member_a_publisher_waits_on_never_hangs");
}

/// Backpressure on a shared lossless ring with members reading at their
/// own pace on other threads: each round fills the ring past high (the
/// publisher has to wait), the members drain it, and then the signal must
/// be low again, whichever member happened to read last.
#[test]
fn backpressure_is_low_after_every_member_drained() {
    rt(2).block_on(async {
        let bus = Bus::<u64>::new();
        let pressure = bus.backpressure();
        const ROUNDS: u64 = 200;
        const BURST: u64 = 20;
        let mut readers = Vec::new();
        let barrier = Arc::new(tokio::sync::Barrier::new(4));
        for j in 0..3u64 {
            let mut sub = bus
                .subscriber("t")
                .lossless(8)
                .watermarks(6, 2)
                .subscribe()
                .unwrap();
            let barrier = barrier.clone();
            readers.push(tokio::spawn(async move {
                let mut next = 0;
                for round in 0..ROUNDS {
                    for _ in 0..BURST {
                        let e = sub.recv().await.unwrap();
                        assert_eq!(e.payload, next);
                        next += 1;
                        if (next + j + round) % 5 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    barrier.wait().await;
                    barrier.wait().await; // the main task checked
                }
                sub
            }));
        }
        let done = async {
            let mut high_rounds = 0;
            for round in 0..ROUNDS {
                let mut went_high = false;
                for i in 0..BURST {
                    bus.publish_to("t", round * BURST + i).await.unwrap();
                    went_high |= pressure.is_high();
                }
                barrier.wait().await; // every member read the burst
                assert!(
                    !pressure.is_high(),
                    "round {round}: every member drained, backpressure still high: {:?}",
                    bus.stats().subscribers
                );
                high_rounds += went_high as u64;
                barrier.wait().await;
            }
            for r in readers {
                r.await.unwrap();
            }
            high_rounds
        };
        let high_rounds = tokio::time::timeout(Duration::from_secs(120), done)
            .await
            .expect("hung");
        assert!(high_rounds > 0);
    });
}

/// The lossless slowest member leaves from another thread while the other
/// members read and a publisher waits; the bus's backpressure count must
/// end low once everything is drained (no raise without its lower).
#[test]
fn backpressure_with_members_leaving_concurrently_ends_low() {
    rt(2).block_on(async {
        let bus = Bus::<u64>::new();
        let pressure = bus.backpressure();
        for round in 0..300u64 {
            let mk = || {
                bus.subscriber("t")
                    .lossless(4)
                    .watermarks(3, 1)
                    .subscribe()
                    .unwrap()
            };
            let (mut a, idle) = (mk(), mk());
            let b = bus.clone();
            let p = tokio::spawn(async move {
                for i in 0..12 {
                    b.publish_to("t", i).await.unwrap();
                }
            });
            let r = tokio::spawn(async move {
                for i in 0..12 {
                    assert_eq!(a.recv().await.unwrap().payload, i);
                    if (i + round) % 3 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                a
            });
            if round % 2 == 0 {
                tokio::time::sleep(Duration::from_micros(30)).await;
            }
            tokio::spawn(async move { drop(idle) });
            let a = tokio::time::timeout(Duration::from_secs(20), async {
                p.await.unwrap();
                r.await.unwrap()
            })
            .await
            .unwrap_or_else(|_| panic!("round {round}: hung"));
            assert_eq!(a.len(), 0);
            assert!(
                !pressure.is_high(),
                "round {round}: drained and the slowest left, backpressure still high: {:?}",
                bus.stats().subscribers
            );
            drop(a);
        }
    });
}

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

/// Many members join a ring at once while a publisher runs and leave again:
/// each gets a gap-free run starting where it joined; the receipts count
/// exactly the members present.
#[test]
fn members_joining_in_bursts_get_gap_free_runs() {
    rt(2).block_on(async {
        let bus = Bus::<u64>::new();
        let mut anchor = bus.subscriber("t").lossless(64).subscribe().unwrap();
        let b = bus.clone();
        const N: u64 = 50_000;
        let p = tokio::spawn(async move {
            let mut counts: HashMap<usize, u64> = HashMap::new();
            for i in 0..N {
                let r = b.publish_to("t", i).await.unwrap();
                *counts.entry(r.subscribers).or_default() += 1;
            }
            counts
        });
        let a = tokio::spawn(async move {
            for i in 0..N {
                assert_eq!(anchor.recv().await.unwrap().payload, i);
            }
        });
        let mut joiners = Vec::new();
        for wave in 0..40u64 {
            for j in 0..4u64 {
                let mut s = bus.subscriber("t").lossless(64).subscribe().unwrap();
                joiners.push(tokio::spawn(async move {
                    let first = match s.recv().await {
                        Ok(e) => e.payload,
                        Err(RecvError::Closed) => return,
                        Err(e) => panic!("{e}"),
                    };
                    for k in 1..(50 + 30 * j + wave) {
                        match s.recv().await {
                            Ok(e) => assert_eq!(e.payload, first + k, "wave {wave} member {j}"),
                            Err(RecvError::Closed) => return,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }));
            }
            tokio::time::sleep(Duration::from_micros(300)).await;
        }
        let counts = tokio::time::timeout(Duration::from_secs(120), async {
            let c = p.await.unwrap();
            a.await.unwrap();
            bus.close();
            for j in joiners {
                j.await.unwrap();
            }
            c
        })
        .await
        .expect("hung");
        assert_eq!(counts.values().sum::<u64>(), N);
        assert!(counts.keys().all(|&k| k >= 1));
    });
}

/// Publishes given up while they wait (a timeout drops the future) deliver
/// to no one: retried with the same number, each member sees every number
/// exactly once, in order; `cancelled` counts the give-ups; every payload
/// (given up ones included) is dropped exactly once.
#[test]
fn cancelled_waiting_publishes_deliver_nothing() {
    for cap in [1usize, 2, 1025] {
        const N: u64 = 6_000;
        let ledger = Ledger::new(20 * N as usize);
        rt(2).block_on(async {
            let bus = Bus::<P>::new();
            let mut readers = Vec::new();
            for j in 0..2u64 {
                let mut sub = bus.subscriber("t").lossless(cap).subscribe().unwrap();
                readers.push(tokio::spawn(async move {
                    let mut next = 0u64;
                    loop {
                        match sub.recv().await {
                            Ok(e) => {
                                assert_eq!(e.payload.n, next, "cap {cap} member {j}");
                                next += 1;
                                if j == 1 && next % 50 == 0 {
                                    tokio::time::sleep(Duration::from_micros(500)).await;
                                }
                            }
                            Err(RecvError::Closed) => return next,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }));
            }
            let b = bus.clone();
            let l = ledger.clone();
            let p = tokio::spawn(async move {
                let mut gave_up = 0u64;
                let mut rng = Rng::from_state(77);
                for n in 0..N {
                    loop {
                        let wait = Duration::from_micros(rng.below(300));
                        match tokio::time::timeout(wait, b.publish_to("t", l.make(0, n))).await {
                            Ok(r) => {
                                r.unwrap();
                                break;
                            }
                            Err(_) => gave_up += 1,
                        }
                    }
                }
                gave_up
            });
            let (gave_up, got) = tokio::time::timeout(Duration::from_secs(300), async {
                let g = p.await.unwrap();
                let cancelled = bus.stats().cancelled;
                assert_eq!(cancelled, g, "cap {cap}: cancelled counts the give-ups");
                drop(bus);
                let mut got = Vec::new();
                for r in readers {
                    got.push(r.await.unwrap());
                }
                (g, got)
            })
            .await
            .expect("hung");
            assert_eq!(got, vec![N, N], "cap {cap} ({gave_up} give-ups)");
        });
        ledger.assert_each_dropped_once("cancelled_waiting_publishes_deliver_nothing");
    }
}

/// Ring members whose `recv` is given up again and again (a `select!` with
/// a short timer) lose nothing and are still woken for what comes next.
#[test]
fn ring_members_with_cancelled_recvs_lose_nothing() {
    const N: u64 = 20_000;
    rt(2).block_on(async {
        let bus = Bus::<u64>::new();
        let mut readers = Vec::new();
        for j in 0..3u64 {
            let mut sub = bus.subscriber("t").lossless(2).subscribe().unwrap();
            readers.push(tokio::spawn(async move {
                let mut next = 0u64;
                let mut gave_up = 0u64;
                loop {
                    tokio::select! {
                        r = sub.recv() => match r {
                            Ok(e) => {
                                assert_eq!(e.payload, next, "member {j}");
                                next += 1;
                            }
                            Err(RecvError::Closed) => return (next, gave_up),
                            Err(e) => panic!("{e}"),
                        },
                        _ = tokio::time::sleep(Duration::from_micros(20 * (j + 1))) => gave_up += 1,
                    }
                }
            }));
        }
        let b = bus.clone();
        let p = tokio::spawn(async move {
            for i in 0..N {
                b.publish_to("t", i).await.unwrap();
                if i % 1000 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(300), async {
            p.await.unwrap();
            drop(bus);
            for r in readers {
                assert_eq!(r.await.unwrap().0, N);
            }
        })
        .await
        .expect("hung");
    });
}

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
