//! Lossy rings: a publisher writing over what a member has not read
//! accounts for every event it drops, while members read, join and leave.

use busline::{Bus, RecvError};
use loom::future::block_on;
use loom::thread;

use super::{model, model_bounded, publish, publish_on_thread, receive_all_lossy};

/// Lossy, capacity 1: the publisher never waits; the receiver gets events
/// in order, always the newest, and what it got plus the reported lag is
/// exactly what was published.
#[test]
fn lossy_reports_exactly_what_it_dropped() {
    model(|| {
        let bus: Bus<u32> = Bus::new();
        let mut sub = bus.subscriber("t").lossy(1).subscribe().unwrap();
        let publisher = publish_on_thread(&bus, 0..3);
        drop(bus);
        let (got, lagged) = receive_all_lossy(&mut sub);
        publisher.join().unwrap();
        assert_eq!(got.len() as u64 + lagged, 3, "{got:?} + {lagged}");
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
        assert_eq!(got.last(), Some(&2), "the newest event is never dropped");
    });
}

/// Two lossy members sharing one ring of capacity 1, each on its own
/// thread, while the publisher writes over events they may be reading:
/// each gets what it got plus what it was told it missed, exactly, and
/// the slot's event is never taken while another member clones it.
#[test]
fn members_sharing_a_lossy_ring_account_for_every_event() {
    model_bounded(1, || {
        let bus: Bus<u32> = Bus::new();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let mut sub = bus.subscriber("t").lossy(1).subscribe().unwrap();
                thread::spawn(move || receive_all_lossy(&mut sub))
            })
            .collect();
        publish(&bus, 0..2);
        drop(bus);
        for r in readers {
            let (got, lagged) = r.join().unwrap();
            assert_eq!(got.len() as u64 + lagged, 2, "{got:?} + {lagged}");
            assert_eq!(got.last(), Some(&1), "the newest event is never dropped");
        }
    });
}

/// A lossy member that leaves after one receive, beside one that reads on,
/// while the publisher writes over a ring of capacity 1 (so it moves both
/// members' cursors past events they may be about to read): the member that
/// stays gets what it got plus what it was told it missed, exactly, and the
/// bus's totals account for every delivery to either member.
#[test]
fn a_lossy_member_leaving_while_the_ring_is_written_over_loses_nothing_silently() {
    model_bounded(1, || {
        let bus: Bus<u32> = Bus::new();
        let mut stay = bus.subscriber("t").lossy(1).subscribe().unwrap();
        let mut leave = bus.subscriber("t").lossy(1).subscribe().unwrap();
        let stayer = thread::spawn(move || {
            let (got, lagged) = receive_all_lossy(&mut stay);
            (got.len() as u64, lagged, stay)
        });
        let leaver = thread::spawn(move || {
            let got = block_on(leave.recv()).is_ok() as u64;
            drop(leave);
            got
        });
        publish(&bus, 0..2);
        let left_got = leaver.join().unwrap();
        bus.close();
        let (got, lagged, stay) = stayer.join().unwrap();
        assert_eq!(got + lagged, 2, "{got} + {lagged}");
        let stats = bus.stats();
        let mine = &stats.subscribers[0];
        assert_eq!((mine.received, mine.dropped), (got, lagged));
        assert_eq!(
            stats.delivered,
            got + left_got + stats.dropped + stats.discarded,
            "{stats:?}"
        );
        drop(stay);
    });
}

/// A lossy member of a ring of capacity 2 reading on its own thread while
/// the publisher writes over it four times: with two slots, the publisher
/// can move the member's cursor past one event to a position below the
/// ring's end the member last read (it then reads on without reading the
/// end again), or to one beyond it (it must read the end again first).
/// Every receive is exact: the event at the member's position, or
/// `Lagged(k)` for exactly the events it skipped; its counters agree.
#[test]
fn lossy_capacity_two_reader_moved_past_part_of_what_it_saw() {
    model(|| {
        let bus: Bus<u32> = Bus::new();
        let mut sub = bus.subscriber("t").lossy(2).subscribe().unwrap();
        let reader = thread::spawn(move || {
            block_on(async {
                let (mut next, mut got, mut lagged) = (0u32, 0u64, 0u64);
                loop {
                    match sub.recv().await {
                        Ok(e) => {
                            assert_eq!(e.payload, next, "got {} at position {next}", e.payload);
                            next += 1;
                            got += 1;
                        }
                        Err(RecvError::Lagged(n)) => {
                            next += n as u32;
                            lagged += n;
                        }
                        Err(_) => break,
                    }
                }
                let st = sub.stats();
                assert_eq!((st.received, st.dropped, st.queued), (got, lagged, 0));
                (next, got)
            })
        });
        publish(&bus, 0..4);
        drop(bus);
        let (next, got) = reader.join().unwrap();
        assert_eq!(next, 4, "received + lag == published");
        assert!(got >= 2, "the newest two events are never dropped");
    });
}

/// What a lossy member received until the bus closed, as `Ok(payload)` or
/// `Err(lag)`.
fn read_log(sub: &mut busline::Subscription<u32>) -> Vec<Result<u64, u64>> {
    block_on(async {
        let mut log = Vec::new();
        loop {
            match sub.recv().await {
                Ok(e) => log.push(Ok(e.payload as u64)),
                Err(RecvError::Lagged(n)) => log.push(Err(n)),
                Err(_) => break log,
            }
        }
    })
}

/// Checks a lossy member's receives, exactly, against the `published`
/// events (payload = position) and its counters: it joined `delivered`
/// before the end; each event is the one at its position, each lag the
/// events it skipped, and the newest event is never lost.
fn check_log(log: &[Result<u64, u64>], sub: &busline::Subscription<u32>, published: u64) {
    let st = sub.stats();
    let mut pos = published - st.delivered;
    let (mut got, mut lag) = (0, 0);
    for r in log {
        match *r {
            Ok(v) => {
                assert_eq!(v, pos, "{log:?} {st:?}");
                pos += 1;
                got += 1;
            }
            Err(n) => {
                pos += n;
                lag += n;
            }
        }
    }
    assert_eq!(
        pos, published,
        "received + lag == delivered: {log:?} {st:?}"
    );
    assert_eq!(
        (st.received, st.dropped, st.queued),
        (got, lag, 0),
        "{log:?}"
    );
    if st.delivered > 0 {
        assert_eq!(
            log.last(),
            Some(&Ok(published - 1)),
            "the newest event is lost"
        );
    }
}

/// A lossy member joins a ring of capacity 1 on its own thread while the
/// publisher writes over it: the publisher's cached lowest cursor must not
/// let it skip moving the newcomer, and the newcomer starts where it
/// joined. First with the ring's other member reading on a third thread
/// (bound 1), then with it read only once the publisher is done, so that
/// it lags behind the newcomer throughout (two threads, bound 4). Each
/// member's receives are exact from where it joined (see `check_log`).
#[test]
fn a_lossy_member_joining_while_the_ring_is_written_over_starts_where_it_joined() {
    for concurrent_reader in [true, false] {
        let bound = if concurrent_reader { 1 } else { 4 };
        model_bounded(bound, move || {
            let bus: Bus<u32> = Bus::new();
            let mut first = Some(bus.subscriber("t").lossy(1).subscribe().unwrap());
            let reader = if concurrent_reader {
                let mut first = first.take().unwrap();
                Some(thread::spawn(move || (read_log(&mut first), first)))
            } else {
                None
            };
            let joiner = {
                let bus = bus.clone();
                thread::spawn(move || {
                    let mut sub = bus.subscriber("t").lossy(1).subscribe().unwrap();
                    drop(bus);
                    (read_log(&mut sub), sub)
                })
            };
            publish(&bus, 0..3);
            drop(bus);
            let (log, sub) = joiner.join().unwrap();
            check_log(&log, &sub, 3);
            let (log, first) = match reader {
                Some(r) => r.join().unwrap(),
                None => {
                    let mut first = first.take().unwrap();
                    (read_log(&mut first), first)
                }
            };
            check_log(&log, &first, 3);
            drop((sub, first));
        });
    }
}
