use super::*;
use crate::stream::StreamOpsExt;
use futures::channel::mpsc;
use futures::{executor::block_on, stream, StreamExt};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::advance;

const S: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn tumbling_emits_every_window_including_empty_ones() {
    let (tx, rx) = mpsc::unbounded();
    let mut w = rx.tumbling(S);
    let t0 = Instant::now();
    tx.unbounded_send(1).unwrap();
    let first = w.next().await.unwrap();
    assert_eq!((first.start, first.end, first.items), (t0, t0 + S, vec![1]));
    let empty = w.next().await.unwrap();
    assert_eq!((empty.start, empty.end), (t0 + S, t0 + 2 * S));
    assert!(empty.is_empty());
    assert_eq!(empty.summary(|x| *x as f64).count, 0);
}

#[tokio::test(start_paused = true)]
async fn an_event_exactly_on_the_boundary_goes_to_the_next_window() {
    let (tx, rx) = mpsc::unbounded();
    let mut w = rx.tumbling(S);
    tx.unbounded_send("before").unwrap();
    // Let the operator take the first event at t0.
    assert!(futures::poll!(w.next()).is_pending());
    advance(S).await; // now exactly t0 + 1s
    tx.unbounded_send("on").unwrap();
    assert_eq!(w.next().await.unwrap().items, ["before"]);
    assert_eq!(w.next().await.unwrap().items, ["on"]);
}

#[tokio::test(start_paused = true)]
async fn long_idle_gaps_emit_each_missed_window_once() {
    let (tx, rx) = mpsc::unbounded::<u8>();
    let mut w = rx.tumbling(S);
    let t0 = Instant::now();
    advance(3 * S + Duration::from_millis(500)).await;
    for k in 1..=3 {
        let win = w.next().await.unwrap();
        assert_eq!(win.end, t0 + k * S);
        assert!(win.is_empty());
    }
    tx.unbounded_send(9).unwrap();
    let win = w.next().await.unwrap();
    assert_eq!((win.end, win.items), (t0 + 4 * S, vec![9]));
}

#[tokio::test(start_paused = true)]
async fn sliding_puts_each_event_in_size_over_slide_windows() {
    let (tx, rx) = mpsc::unbounded();
    let mut w = rx.sliding(2 * S, S);
    let t0 = Instant::now();
    tx.unbounded_send('a').unwrap();
    let w1 = w.next().await.unwrap(); // [t0-1s, t0+1s) clamped to t0
    assert_eq!(
        (w1.start, w1.end, w1.items.clone()),
        (t0, t0 + S, vec!['a'])
    );
    tx.unbounded_send('b').unwrap(); // at t0+1s
    let w2 = w.next().await.unwrap();
    assert_eq!(
        (w2.start, w2.end, w2.items),
        (t0, t0 + 2 * S, vec!['a', 'b'])
    );
    let w3 = w.next().await.unwrap();
    assert_eq!(
        (w3.start, w3.end, w3.items),
        (t0 + S, t0 + 3 * S, vec!['b'])
    );
    let w4 = w.next().await.unwrap();
    assert!(w4.is_empty());
}

#[tokio::test(start_paused = true)]
async fn end_of_input_flushes_open_windows_at_once() {
    let t0 = Instant::now();
    let out: Vec<_> = stream::iter([1, 2]).sliding(3 * S, S).collect().await;
    // Both events arrived at t0: windows ending at t0+1s, +2s, +3s hold them.
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|w| w.items == [1, 2]));
    assert_eq!(Instant::now(), t0, "flushed without waiting");
}

#[tokio::test(start_paused = true)]
async fn windows_flushed_at_the_end_of_input_are_partial_and_others_are_not() {
    let (tx, rx) = mpsc::unbounded();
    let mut w = rx.sliding(2 * S, S);
    tx.unbounded_send(1).unwrap();
    let closed = w.next().await.unwrap(); // at t0+1s, its boundary
    assert_eq!((closed.items.clone(), closed.partial), (vec![1], false));
    drop(tx);
    let flushed: Vec<_> = w.collect().await;
    // [t0-1s, t0+1s) closed; [t0, t0+2s) still held 1 when the input ended.
    assert_eq!(flushed.len(), 1);
    assert_eq!(
        (flushed[0].items.clone(), flushed[0].partial),
        (vec![1], true)
    );
}

#[tokio::test(start_paused = true)]
async fn keyed_and_aggregate_windows_flushed_at_the_end_are_partial() {
    let (tx, rx) = mpsc::unbounded();
    let mut keyed = Box::pin(rx.keyed_tumbling(S, 4, |k: &&str| *k));
    tx.unbounded_send("a").unwrap();
    assert!(!keyed.next().await.unwrap().partial);
    tx.unbounded_send("b").unwrap();
    drop(tx);
    let last = keyed.next().await.unwrap();
    assert_eq!((last.get(&"b"), last.partial), (Some(&["b"][..]), true));
    assert!(keyed.next().await.is_none());

    let (tx, rx) = mpsc::unbounded::<f64>();
    let mut agg = Box::pin(rx.tumbling_aggregate(S, |v| *v));
    tx.unbounded_send(1.0).unwrap();
    assert!(!agg.next().await.unwrap().partial);
    tx.unbounded_send(2.0).unwrap();
    drop(tx);
    let last = agg.next().await.unwrap();
    assert_eq!((last.summary().sum, last.partial), (2.0, true));
}

#[test]
fn event_time_windows_flushed_at_the_end_are_partial() {
    // [0,10) closes when 12 moves the watermark past 10; [10,20) is flushed.
    let out = event_windows(&[1, 12], 10, 10, 0);
    let flags: Vec<_> = out
        .into_iter()
        .filter_map(Windowed::window)
        .map(|w| (w.items, w.partial))
        .collect();
    assert_eq!(flags, vec![(vec![1], false), (vec![12], true)]);
}

#[tokio::test(start_paused = true)]
async fn keyed_windows_bound_keys_and_count_overflow() {
    let (tx, rx) = mpsc::unbounded();
    let w = rx.keyed_tumbling(S, 2, |(k, _): &(&str, u32)| *k);
    let overflow = w.overflow_counter();
    let mut w = Box::pin(w);
    for e in [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("c", 5), ("b", 6)] {
        tx.unbounded_send(e).unwrap();
    }
    let win = w.next().await.unwrap();
    assert_eq!(win.get(&"a").unwrap(), [("a", 1), ("a", 3)]);
    assert_eq!(win.get(&"b").unwrap(), [("b", 2), ("b", 6)]);
    assert_eq!(win.get(&"c"), None);
    assert_eq!(win.overflow, [("c", 4), ("c", 5)]);
    assert_eq!(overflow.get(), 2);
    // Keys are forgotten at the boundary: c gets its own group now.
    tx.unbounded_send(("c", 7)).unwrap();
    let win = w.next().await.unwrap();
    assert_eq!(win.groups, vec![("c", vec![("c", 7)])]);
    assert!(win.overflow.is_empty());
    // An empty span still ticks.
    assert!(w.next().await.unwrap().groups.is_empty());
    drop(tx);
    assert!(w.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn keyed_event_on_the_boundary_goes_to_the_next_window() {
    let (tx, rx) = mpsc::unbounded();
    let mut w = Box::pin(rx.keyed_tumbling(S, 10, |x: &u32| *x % 2));
    tx.unbounded_send(1).unwrap();
    assert!(futures::poll!(w.next()).is_pending());
    advance(S).await;
    tx.unbounded_send(3).unwrap();
    assert_eq!(w.next().await.unwrap().groups, vec![(1, vec![1])]);
    assert_eq!(w.next().await.unwrap().groups, vec![(1, vec![3])]);
}

fn at_s(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

fn event_windows(events: &[u64], size: u64, slide: u64, late: u64) -> Vec<Windowed<u64>> {
    let s = stream::iter(events.to_vec());
    block_on(
        s.event_sliding(
            Duration::from_secs(size),
            Duration::from_secs(slide),
            Duration::from_secs(late),
            |t| at_s(*t),
        )
        .collect(),
    )
}

#[test]
fn event_time_boundary_and_watermark() {
    // 10 is exactly on the boundary: it opens [10,20) and, with no lateness,
    // moves the watermark to 10, closing [0,10).
    let out = event_windows(&[0, 9, 10, 5], 10, 10, 0);
    assert_eq!(
        out,
        vec![
            Windowed::Window(Window {
                start: at_s(0),
                end: at_s(10),
                items: vec![0, 9],
                partial: false
            }),
            Windowed::Late(LateEvent {
                item: 5,
                timestamp: at_s(5),
                watermark: at_s(10)
            }),
            Windowed::Window(Window {
                start: at_s(10),
                end: at_s(20),
                items: vec![10],
                partial: true
            }),
        ]
    );
}

#[test]
fn allowed_lateness_keeps_windows_open() {
    // Lateness 3: [0,10) stays open until the watermark (max - 3) reaches 10.
    let out = event_windows(&[1, 11, 8, 12, 13, 2], 10, 10, 3);
    assert_eq!(
        out[0],
        Windowed::Window(Window {
            start: at_s(0),
            end: at_s(10),
            items: vec![1, 8],
            partial: false
        })
    );
    assert!(matches!(&out[1], Windowed::Late(l) if l.item == 2));
    assert_eq!(
        out[2],
        Windowed::Window(Window {
            start: at_s(10),
            end: at_s(20),
            items: vec![11, 12, 13],
            partial: true
        })
    );
    assert_eq!(out.len(), 3);
}

#[test]
fn sliding_event_time_late_for_some_windows_is_reported_and_kept_in_the_open_ones() {
    // size 10, slide 5: t=7 belongs to [0,10) and [5,15).
    let s = stream::iter(vec![1u64, 12, 7]);
    let w = s.event_sliding(10 * S, 5 * S, Duration::ZERO, |t| at_s(*t));
    let late = w.late_counter();
    let out: Vec<_> = block_on(w.collect());
    assert_eq!(late.get(), 1);
    assert_eq!(
        out[0],
        Windowed::Window(Window {
            start: at_s(0),
            end: at_s(10),
            items: vec![1],
            partial: false
        })
    );
    assert!(matches!(&out[1], Windowed::Late(l) if l.item == 7));
    // [5,15) still got 7; [10,20) has 12 only.
    assert_eq!(
        out[2],
        Windowed::Window(Window {
            start: at_s(5),
            end: at_s(15),
            items: vec![12, 7],
            partial: true
        })
    );
    assert_eq!(
        out[3],
        Windowed::Window(Window {
            start: at_s(10),
            end: at_s(20),
            items: vec![12],
            partial: true
        })
    );
}

#[test]
fn event_time_gaps_emit_no_empty_windows() {
    let out = event_windows(&[1, 1000], 10, 10, 0);
    assert_eq!(out.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn sliding_window_expires_values_exactly_at_span() {
    let mut w = SlidingWindow::new(Duration::from_secs(60));
    assert_eq!(w.summary(), Summary::default()); // empty
    w.record(5.0);
    advance(Duration::from_secs(59)).await;
    w.record(7.0);
    let s = w.summary();
    assert_eq!(
        (s.count, s.sum, s.min, s.max),
        (2, 12.0, Some(5.0), Some(7.0))
    );
    advance(Duration::from_secs(1)).await;
    assert_eq!(w.count(), 1);
    assert_eq!(w.sum(), 7.0);
    advance(Duration::from_secs(59)).await;
    assert_eq!(w.count(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The plain sliding window equals a brute-force recomputation over the
    /// same events, at any query time.
    #[test]
    fn sliding_window_matches_brute_force(
        events in prop::collection::vec((0u64..3_000, -1_000i32..1_000), 0..200),
        queries in prop::collection::vec(0u64..4_000, 1..20),
        span_ms in 1u64..2_000,
    ) {
        let base = Instant::now();
        let span = Duration::from_millis(span_ms);
        let mut sorted = events.clone();
        sorted.sort_by_key(|e| e.0);
        let mut queries = queries;
        queries.sort();
        let mut w = SlidingWindow::new(span);
        let mut next = 0;
        for q in queries {
            while next < sorted.len() && sorted[next].0 <= q {
                w.record_at(base + Duration::from_millis(sorted[next].0), sorted[next].1 as f64);
                next += 1;
            }
            let got = w.summary_at(base + Duration::from_millis(q));
            let live: Vec<f64> = sorted.iter()
                .filter(|(t, _)| *t <= q && q - *t < span_ms)
                .map(|(_, v)| *v as f64)
                .collect();
            prop_assert_eq!(got.count, live.len() as u64);
            prop_assert_eq!(got.sum, live.iter().sum::<f64>());
            prop_assert_eq!(got.min, live.iter().cloned().reduce(f64::min));
            prop_assert_eq!(got.max, live.iter().cloned().reduce(f64::max));
        }
    }

    /// Event-time sliding windows hold exactly the events a brute-force
    /// assignment gives each window, and every event is either in all of its
    /// windows or reported late.
    #[test]
    fn event_sliding_matches_brute_force(
        events in prop::collection::vec(0u64..200, 0..100),
        size in 1u64..30,
        slide_div in 1u64..4,
        lateness in 0u64..50,
    ) {
        let slide = (size / slide_div).max(1);
        let out = event_windows(&events, size, slide, lateness);
        // Replay the watermark to know which windows each event could still join.
        let mut closed_until = 0u64;
        let mut max_seen = 0u64;
        let mut expected: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut expected_late = Vec::new();
        let mut emitted: std::collections::BTreeSet<u64> = Default::default();
        for &t in &events {
            let starts: Vec<u64> = (0..=t / slide).map(|k| k * slide).filter(|s| s + size > t).collect();
            if closed_until > 0 && starts.iter().any(|s| s + size <= closed_until) {
                expected_late.push(t);
            }
            for s in starts {
                if s + size > closed_until {
                    expected.entry(s).or_default().push(t);
                }
            }
            max_seen = max_seen.max(t);
            let wm = max_seen.saturating_sub(lateness);
            if wm > closed_until {
                closed_until = wm;
                for (&s, _) in expected.range(..) {
                    if s + size <= wm { emitted.insert(s); }
                }
            }
        }
        let got_late: Vec<u64> = out.iter().filter_map(|o| match o { Windowed::Late(l) => Some(l.item), _ => None }).collect();
        prop_assert_eq!(got_late, expected_late);
        let mut got: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for o in &out {
            if let Windowed::Window(w) = o {
                let s = w.start.duration_since(UNIX_EPOCH).unwrap().as_secs();
                prop_assert_eq!(w.end.duration_since(UNIX_EPOCH).unwrap().as_secs(), s + size);
                prop_assert!(got.insert(s, w.items.clone()).is_none(), "window {} emitted twice", s);
            }
        }
        prop_assert_eq!(got, expected);
        // And each window's aggregate equals a brute-force one over its events.
        for o in &out {
            if let Windowed::Window(w) = o {
                let s = w.summary(|x| *x as f64);
                let sum: u64 = w.items.iter().sum();
                prop_assert_eq!(s.sum, sum as f64);
                prop_assert_eq!(s.max, w.items.iter().max().map(|m| *m as f64));
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn tumbling_aggregate_boundary_empty_and_end() {
    let (tx, rx) = mpsc::unbounded::<f64>();
    let mut w = Box::pin(rx.tumbling_aggregate(S, |v| *v));
    let t0 = Instant::now();
    tx.unbounded_send(1.0).unwrap();
    assert!(futures::poll!(w.next()).is_pending()); // taken at t0
    advance(S).await;
    tx.unbounded_send(100.0).unwrap(); // exactly on the boundary: next window
    let first = w.next().await.unwrap();
    assert_eq!((first.start, first.end), (t0, t0 + S));
    assert_eq!(first.summary().sum, 1.0);
    let second = w.next().await.unwrap();
    assert_eq!(second.summary().sum, 100.0);
    let empty = w.next().await.unwrap();
    assert_eq!(empty.summary(), Summary::default());
    tx.unbounded_send(5.0).unwrap();
    drop(tx);
    let last = w.next().await.unwrap(); // flushed at once at the end of input
    assert_eq!(last.summary().count, 1);
    assert_eq!(Instant::now(), t0 + 3 * S);
    assert!(w.next().await.is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Processing-time sliding windows, driven in paused time, hold exactly
    /// the events a brute-force `[start, end)` filter gives each window, and
    /// their aggregates match; the windows tick every `slide` without a gap
    /// and cover every event.
    #[test]
    fn processing_sliding_matches_brute_force(
        mut offsets in prop::collection::vec(0u64..5_000, 0..40),
        size_ms in 1u64..3_000,
        slide_div in 1u64..4,
    ) {
        offsets.sort();
        let slide_ms = (size_ms / slide_div).max(1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let (t0, windows) = rt.block_on(async {
            let t0 = Instant::now();
            let (tx, rx) = mpsc::unbounded::<u64>();
            let windows = rx.sliding(Duration::from_millis(size_ms), Duration::from_millis(slide_ms));
            let events = offsets.clone();
            tokio::spawn(async move {
                for o in events {
                    tokio::time::sleep_until(t0 + Duration::from_millis(o)).await;
                    tx.unbounded_send(o).unwrap();
                }
            });
            (t0, windows.collect::<Vec<_>>().await)
        });
        for (k, w) in windows.iter().enumerate() {
            let end = (k as u64 + 1) * slide_ms;
            prop_assert_eq!(w.end, t0 + Duration::from_millis(end));
            let start = end.saturating_sub(size_ms);
            prop_assert_eq!(w.start, t0 + Duration::from_millis(start));
            let expected: Vec<u64> = offsets.iter().copied().filter(|o| *o >= start && *o < end).collect();
            prop_assert_eq!(&w.items, &expected);
            let s = w.summary(|o| *o as f64);
            prop_assert_eq!(s.sum, expected.iter().sum::<u64>() as f64);
            prop_assert_eq!(s.min, expected.first().map(|m| *m as f64));
        }
        if let Some(last) = offsets.last() {
            let covered = windows.last().map(|w| w.end).unwrap();
            prop_assert!(covered > t0 + Duration::from_millis(*last), "the last event is in a window");
        } else {
            prop_assert!(windows.is_empty());
        }
    }
}
