//! A stats snapshot taken while a lossy member reads is at most one event
//! apart.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;

use busline::{Bus, RecvError};

use crate::{join, spawn, watchdog, TIMEOUT};

/// `SubscriberStats::queued` documents that a ring member's snapshot taken
/// while it reads "may be one event apart" between `delivered` and
/// `received + dropped + queued`. `of_member` loads the member's cursor
/// first and its `received` counter (published after the cursor) only
/// after formatting the name, pattern and policy, so a member reading on
/// another core meanwhile puts `received` any number of events ahead.
/// A publisher and a reader spin on a lossy ring of 1024 while the stats
/// are polled: every snapshot must be within one.
#[test]
fn a_stats_snapshot_while_a_lossy_member_reads_is_at_most_one_event_apart() {
    watchdog(TIMEOUT, "stats snapshot", |fails| {
        let bus = Bus::<u64>::new();
        let mut sub = bus
            .subscriber("t")
            .lossy(1024)
            .name("r")
            .subscribe()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let stop = stop.clone();
            spawn(&fails, "reader", move || {
                while !stop.load(SeqCst) {
                    match sub.try_recv() {
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                sub
            })
        };
        let publisher = {
            let (bus, stop) = (bus.clone(), stop.clone());
            spawn(&fails, "publisher", move || {
                let mut i = 0u64;
                while !stop.load(SeqCst) {
                    bus.try_publish_to("t", i).unwrap();
                    i += 1;
                }
            })
        };
        let mut worst = None;
        for _ in 0..200_000 {
            let bs = bus.stats();
            let s = bs.subscriber("r").unwrap();
            let by_cursor = s.delivered - s.dropped - s.queued as u64;
            if s.received.abs_diff(by_cursor) > 1 {
                worst = Some(s.clone());
                break;
            }
        }
        stop.store(true, SeqCst);
        join(publisher);
        let sub = join(reader);
        let st = sub.stats();
        assert_eq!(
            st.delivered,
            st.received + st.dropped + st.queued as u64,
            "quiescent: {st:?}"
        );
        if let Some(s) = worst {
            panic!(
                "a snapshot taken while the member reads is {} events apart \
                 (received {} vs delivered - dropped - queued {}): {s:?}",
                s.received
                    .abs_diff(s.delivered - s.dropped - s.queued as u64),
                s.received,
                s.delivered - s.dropped - s.queued as u64
            );
        }
    });
}
