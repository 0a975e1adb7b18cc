//! A deterministic model check of one shared ring, lossless and lossy:
//! after every step the results, counters, backpressure and live payloads
//! are exactly the model's.

use busline::{Bus, PublishError, RecvError, Subscription};

use crate::ledger::{Ledger, Rng, P};

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
