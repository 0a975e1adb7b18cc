//! Several publishers, each publish writing several rings: every lossy
//! member's receives and lags are exact against a lossless recorder's
//! order.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;

use busline::{Bus, PublishError, RecvError};
use futures::executor::block_on;

use crate::ledger::{Ledger, P};
use crate::{join, scale, spawn, watchdog, Pace, TIMEOUT};

/// Three publishers on their own threads (clones of the bus, mixing
/// `try_publish_to` and `publish_to`) publish to a lossy ring of 2 shared by
/// three members, a filtered lossy member (its own ring of 1), and a
/// lossless recorder: each publish locks all three rings, so a publisher
/// spinning on one member's claim holds the others. The recorder gives the
/// order the rings were written in (every ring is written in one order
/// under those locks), so each lossy member's receives are checked exactly
/// against it: every event it got at its ring position, every lag exactly
/// the events it skipped.
#[test]
fn several_publishers_and_rings_exact_lag_against_a_recorder() {
    const PUBLISHERS: u32 = 3;
    let per: u64 = scale(40_000);
    let total: u64 = PUBLISHERS as u64 * per;
    // Events the filtered member takes (ids are 0..total).
    let takes = |id: u64| id % 3 != 0;
    let filtered_total = (0..total).filter(|&i| takes(i)).count() as u64;
    let ledger = Ledger::new(total as usize + 8);
    let l = ledger.clone();
    watchdog(TIMEOUT, "several publishers", move |fails| {
        let bus = Bus::<P>::new();
        let mut recorder = bus
            .subscriber("t")
            .lossless(4096)
            .name("rec")
            .subscribe()
            .unwrap();
        #[derive(Debug)]
        enum Got {
            Id(u64),
            Lag(u64),
        }
        let published = Arc::new(AtomicBool::new(false));
        let mut readers = Vec::new();
        for j in 0..4usize {
            let published = published.clone();
            let b = bus.subscriber("t").name(format!("m{j}"));
            let (mut sub, expect) = if j == 3 {
                (
                    b.lossy(1)
                        .filter(move |e| takes(e.payload.id))
                        .subscribe()
                        .unwrap(),
                    filtered_total,
                )
            } else {
                (b.lossy(2).subscribe().unwrap(), total)
            };
            readers.push(spawn(&fails, format!("reader m{j}"), move || {
                let who = format!("m{j}");
                let mut log = Vec::with_capacity(expect as usize);
                let (mut accounted, mut received, mut lag) = (0u64, 0u64, 0u64);
                let mut last = [None::<u64>; PUBLISHERS as usize];
                let mut publisher_done = false;
                while accounted < expect {
                    let r = if j == 0 {
                        block_on(sub.recv()).map(Some)
                    } else {
                        sub.try_recv()
                    };
                    match r {
                        Ok(Some(e)) => {
                            let p = e.payload.publisher as usize;
                            assert!(
                                last[p].is_none_or(|l| e.payload.n > l),
                                "{who}: publisher {p}: {} after {:?}",
                                e.payload.n,
                                last[p]
                            );
                            last[p] = Some(e.payload.n);
                            log.push(Got::Id(e.payload.id));
                            accounted += 1;
                            received += 1;
                        }
                        // Empty after the publisher was seen done: the end,
                        // with events unaccounted for (fails below).
                        Ok(None) if publisher_done => break,
                        // One more receive once the publisher is seen done:
                        // what it wrote since the receive above comes first.
                        Ok(None) => {
                            publisher_done = published.load(SeqCst);
                            std::thread::yield_now()
                        }
                        Err(RecvError::Lagged(k)) => {
                            assert!(k > 0);
                            log.push(Got::Lag(k));
                            accounted += k;
                            lag += k;
                        }
                        Err(e) => panic!("{who}: {e}"),
                    }
                }
                assert_eq!(accounted, expect, "{who}: received + lag != delivered");
                let st = sub.stats();
                assert_eq!(
                    (st.delivered, st.received, st.dropped, st.queued),
                    (expect, received, lag, 0),
                    "{who}"
                );
                (sub, log)
            }));
        }
        let rec = spawn(&fails, "recorder", move || {
            let mut order = Vec::with_capacity(total as usize);
            for _ in 0..total {
                order.push(block_on(recorder.recv()).unwrap().payload.id);
            }
            (recorder, order)
        });
        let pubs: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let bus = bus.clone();
                let l = l.clone();
                spawn(&fails, format!("publisher {p}"), move || {
                    let mut pace = Pace::new(p as u64 + 100);
                    for n in 0..per {
                        pace.step();
                        let ev = l.make(p, n);
                        let ev = if n % 2 == p as u64 % 2 {
                            match bus.try_publish_to("t", ev) {
                                Ok(r) => {
                                    assert!(r.subscribers >= 4);
                                    continue;
                                }
                                // The recorder is full: wait for it.
                                Err(PublishError::Full { event, .. }) => event,
                                Err(e) => panic!("{e:?}"),
                            }
                        } else {
                            ev
                        };
                        let r = block_on(bus.publish_to("t", ev)).unwrap();
                        assert!(r.subscribers >= 4);
                    }
                })
            })
            .collect();
        pubs.into_iter().for_each(join);
        published.store(true, SeqCst);
        let (recorder, order) = join(rec);
        let mut pos = vec![u64::MAX; total as usize];
        let mut fpos = vec![u64::MAX; total as usize];
        let mut f = 0;
        for (i, &id) in order.iter().enumerate() {
            assert_eq!(pos[id as usize], u64::MAX, "the recorder got {id} twice");
            pos[id as usize] = i as u64;
            if takes(id) {
                fpos[id as usize] = f;
                f += 1;
            }
        }
        let mut subs = vec![recorder];
        for (j, r) in readers.into_iter().enumerate() {
            let (sub, log) = join(r);
            let at = if j == 3 { &fpos } else { &pos };
            let mut next = 0u64;
            for (k, g) in log.iter().enumerate() {
                match *g {
                    Got::Id(id) => {
                        assert_eq!(
                            at[id as usize], next,
                            "m{j}: receive {k} was event {id} at ring position {}, expected position {next} \
                             (log around it: {:?})",
                            at[id as usize],
                            &log[k.saturating_sub(3)..(k + 3).min(log.len())]
                        );
                        next += 1;
                    }
                    Got::Lag(n) => next += n,
                }
            }
            subs.push(sub);
        }
        // The recorder's ring (4096) and the members' (1 and 2) hold at
        // most their capacities of read events.
        assert!(
            l.live() <= 4096 + 4 * 2,
            "every member is at its ring's end, yet {} payloads are alive",
            l.live()
        );
        let bs = bus.stats();
        assert_eq!(bs.delivered, 4 * total + filtered_total, "{bs:?}");
        assert_eq!(
            bs.delivered,
            bs.subscribers
                .iter()
                .map(|s| s.received + s.dropped)
                .sum::<u64>(),
            "{bs:?}"
        );
        drop(subs);
    });
    ledger.assert_each_dropped_once("several publishers");
}
