//! The stream operators at their edges: nothing is lost silently (a failed replay, a huge
//! value, a far-future timestamp, `Duration::MAX`), the priority shares hold,
//! and no operator takes unbounded input in one poll.

mod helpers;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use busline::stream::{Accumulator, Lanes, Priority, StreamOpsExt, Windowed};
use busline::{Bus, StartAt};
use futures::{Stream, StreamExt};
use helpers::FlakyReplay;

/// A failed replay does not end `count_lag`: the subscription goes on live,
/// and the error is counted.
#[tokio::test]
async fn count_lag_goes_on_live_after_a_failed_replay() {
    let bus = Bus::<u32>::new();
    bus.persist("t", Arc::new(FlakyReplay::new(1))).unwrap();
    for i in 0..3 {
        bus.publish_to("t", i).await.unwrap();
    }
    let sub = bus
        .subscriber("t")
        .from(StartAt::Beginning)
        .subscribe()
        .unwrap();
    for i in 10..13 {
        bus.publish_to("t", i).await.unwrap();
    }
    bus.close();
    let events = sub.count_lag();
    let errors = events.store_error_counter();
    let got: Vec<u32> = events.map(|env| env.payload).collect().await;
    assert_eq!(got, [0, 10, 11, 12]);
    assert_eq!(errors.get(), 1);
}

fn class(s: &String) -> Priority {
    match s.as_bytes()[0] {
        b'h' => Priority::High,
        b'n' => Priority::Normal,
        _ => Priority::Low,
    }
}

/// Every lane flooded: while normal and low events wait, every
/// `normal_every` outputs hold a normal one and every `low_every` a low
/// one, for any shares of 2 or more (when both were due at once, one of
/// them missed its turn).
#[tokio::test]
async fn both_priority_shares_hold_for_any_shares_of_two_or_more() {
    for normal_every in 2..=8u32 {
        for low_every in 2..=12u32 {
            let mut input = Vec::new();
            for i in 0..200 {
                input.extend([format!("h{i}"), format!("n{i}"), format!("l{i}")]);
            }
            let lanes = Lanes {
                normal_every,
                low_every,
                ..Lanes::default()
            };
            let out: Vec<String> = futures::stream::iter(input)
                .prioritize(lanes, class)
                .collect()
                .await;
            // Normals and lows all wait through the first 150 outputs.
            let head = &out[..150];
            let kinds: String = head.iter().map(|s| &s[..1]).collect();
            for (every, kind) in [(normal_every, 'n'), (low_every, 'l')] {
                for w in head.windows(every as usize) {
                    assert!(
                        w.iter().any(|s| s.starts_with(kind)),
                        "normal_every {normal_every}, low_every {low_every}: {every} outputs without `{kind}`: {kinds}"
                    );
                }
            }
        }
    }
}

/// A value past what the histogram holds is reported as unranked, not
/// ranked at the histogram's limit (a wrong percentile, silently).
#[test]
fn a_huge_value_is_unranked_not_ranked_wrong() {
    let s = Accumulator::from_values([1.0, 1.7e18]).summary();
    assert_eq!((s.count, s.unranked), (2, 1), "{s:?}");
    assert_eq!(s.max, Some(1.7e18));
}

/// An event past u64 nanoseconds since the epoch (year 2554) lands in a
/// window (it was in none, and not reported late).
#[test]
fn a_far_future_event_time_lands_in_a_window() {
    let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
    let far = 20_000_000_000u64; // seconds: year ~2603
    let w = futures::stream::iter([1u64, far]).event_tumbling(
        Duration::from_secs(10),
        Duration::ZERO,
        move |s| at(*s),
    );
    let out: Vec<Windowed<u64>> = futures::executor::block_on(w.collect());
    let windows: Vec<Vec<u64>> = out
        .into_iter()
        .filter_map(Windowed::window)
        .map(|w| w.items)
        .collect();
    assert_eq!(windows, [vec![1], vec![far]]);
}

/// `Duration::MAX` means "never by time"; it panicked adding to an instant.
#[tokio::test(start_paused = true)]
async fn duration_max_means_never_by_time() {
    let three = || futures::stream::iter([1, 2, 3]);
    let batches: Vec<_> = three().batch(2, Duration::MAX).collect().await;
    assert_eq!(batches, [vec![1, 2], vec![3]]);
    let throttled: Vec<_> = three().throttle(Duration::MAX).collect().await;
    assert_eq!(throttled, [1]);
    let debounced: Vec<_> = three().debounce(Duration::MAX).collect().await;
    assert_eq!(debounced, [3]);
    let windows: Vec<_> = three().tumbling(Duration::MAX).collect().await;
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0].items, [1, 2, 3]);
    let sums: Vec<_> = futures::stream::iter([1.0, 2.0])
        .tumbling_aggregate(Duration::MAX, |x: &f64| *x)
        .collect()
        .await;
    assert_eq!(sums.len(), 1);
    assert_eq!(sums[0].summary().sum, 3.0);
}

const N: usize = 200_000;

/// An always-ready input that counts what was taken from it.
fn counted() -> (impl Stream<Item = u64> + Unpin, Arc<AtomicUsize>) {
    let taken = Arc::new(AtomicUsize::new(0));
    let t = taken.clone();
    let s = futures::stream::iter(0..N as u64).inspect(move |_| {
        t.fetch_add(1, Ordering::Relaxed);
    });
    (s, taken)
}

/// Throttle, debounce and event-time windows take a bounded number of
/// ready items per poll, then let other tasks run (as the other window
/// operators do); they drained the whole input in one poll.
#[tokio::test(start_paused = true)]
async fn operators_yield_after_a_budget_of_ready_input() {
    let (s, taken) = counted();
    let mut t = s.throttle(Duration::from_secs(1));
    assert_eq!(t.next().await, Some(0));
    let _ = futures::poll!(t.next());
    assert!(taken.load(Ordering::Relaxed) <= 2048, "throttle: {taken:?}");

    let (s, taken) = counted();
    let mut d = s.debounce(Duration::from_secs(1));
    let _ = futures::poll!(d.next());
    assert!(taken.load(Ordering::Relaxed) <= 1024, "debounce: {taken:?}");

    let (s, taken) = counted();
    let mut w = s.event_tumbling(Duration::from_secs(3600), Duration::ZERO, |x| {
        UNIX_EPOCH + Duration::from_millis(*x)
    });
    let _ = futures::poll!(w.next());
    assert!(
        taken.load(Ordering::Relaxed) <= 1024,
        "event windows: {taken:?}"
    );

    // And each still gives its full result.
    let (s, _) = counted();
    let n = s
        .event_tumbling(Duration::from_secs(3600), Duration::ZERO, |x| {
            UNIX_EPOCH + Duration::from_millis(*x)
        })
        .filter_map(|w| async move { w.window() })
        .map(|w| w.items.len())
        .fold(0, |a, b| async move { a + b })
        .await;
    assert_eq!(n, N);
    let (s, _) = counted();
    assert_eq!(
        s.debounce(Duration::from_secs(1)).collect::<Vec<_>>().await,
        [N as u64 - 1]
    );
}
