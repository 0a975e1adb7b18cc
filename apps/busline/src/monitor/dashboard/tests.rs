use super::*;
use std::io::Write;

/// An event 59.1 s before the current second began belongs to the
/// second 59 s back (out of the minute), not 58 (the allowance was
/// subtracted twice).
#[test]
fn a_past_event_counts_in_its_own_second() {
    let elapsed = Duration::from_millis(400);
    let age = elapsed + Duration::from_millis(59_100);
    assert_eq!(
        past_offset(age, elapsed),
        Some(Duration::from_millis(59_100))
    );
    // Within the allowance: still the current second.
    assert_eq!(
        past_offset(elapsed + Duration::from_millis(200), elapsed),
        None
    );
}

fn req(ms: f64) -> Metric {
    Metric::Request {
        path: "/".into(),
        latency_ms: ms,
        status: 200,
    }
}

#[test]
fn one_window() {
    let mut a = Aggregator::default();
    for ms in 1..=100 {
        a.record(&req(ms as f64));
    }
    a.record(&Metric::DbQuery {
        query: "q".into(),
        duration_ms: 4.0,
    });
    a.record(&Metric::Error {
        source: "web".into(),
        message: "x".into(),
    });
    a.missed(3);
    let s = a.tick(1.0);
    assert_eq!(s.requests, 100);
    let l = s.latency_ms.unwrap();
    assert_eq!(l.mean, 50.5);
    assert!((l.p50 - 50.0).abs() < 0.1, "{l:?}");
    assert!((l.p99 - 99.0).abs() < 0.1, "{l:?}");
    assert_eq!(l.max, 100.0);
    assert_eq!(s.db_queries, 1);
    assert_eq!((s.errors, s.errors_last_min, s.missed), (1, 1, 3));
    let text = render(&s);
    assert!(
        text.starts_with("[dashboard] === 1s summary ===\n"),
        "{text}"
    );
    assert!(
        text.contains("  Requests: 100, avg latency: 51ms (p50 50ms, p99 99ms)"),
        "{text}"
    );
    assert!(text.contains("missed 3 events"), "{text}");

    // The next window starts empty; totals and the minute carry on.
    let s = a.tick(1.0);
    assert_eq!((s.requests, s.errors, s.errors_last_min), (0, 0, 1));
    assert_eq!(s.totals.requests, 100);
    assert!(s.latency_ms.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_lagging_dashboard_counts_what_it_missed() {
    use super::super::config::{MonitorArgs, Settings};
    use busline::Bus;

    let bus = Bus::<Metric>::new();
    let settings = Settings::resolve(&MonitorArgs::default()).unwrap();
    let shared = Arc::new(Shared::new(&settings));
    let ctx = Context::detached("dashboard", bus.clone());
    let stop = ctx.shutdown_token();
    let mut dashboard = Dashboard::new(shared.clone(), Duration::from_secs(1));
    let task = tokio::spawn(async move { dashboard.run(ctx).await });
    while bus.stats().subscriber("dashboard").is_none() {
        tokio::task::yield_now().await;
    }
    // A burst the dashboard cannot take: the publisher never waits.
    let burst = DASHBOARD_QUEUE as u64 + 476;
    for _ in 0..burst {
        bus.try_publish(req(5.0)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let s = shared.latest().expect("a summary after a second");
    assert_eq!(s.missed, 476, "{s:?}");
    assert_eq!(s.requests, DASHBOARD_QUEUE as u64, "{s:?}");
    assert!(render(&s).contains("missed 476 events"));
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// A terminal that blocks until told to go on, recording what it got;
/// it says when a write starts (and so blocks).
struct Stuck {
    go: std::sync::mpsc::Receiver<()>,
    started: std::sync::mpsc::Sender<()>,
    got: Arc<parking_lot::Mutex<String>>,
}

impl Write for Stuck {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.started.send(());
        let _ = self.go.recv();
        self.got.lock().push_str(std::str::from_utf8(buf).unwrap());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_stuck_terminal_never_blocks_the_dashboard() {
    let (go, rx) = std::sync::mpsc::channel();
    let (started, writing) = std::sync::mpsc::channel();
    let got = Arc::default();
    let mut t = Terminal::start_with(Stuck {
        go: rx,
        started,
        got: Arc::clone(&got),
    })
    .unwrap();
    // The first is taken by the writer, which is stuck in it (waited for,
    // so that the writer thread's start cannot race the rest); then
    // TERMINAL_QUEUE wait and the rest are skipped.
    t.show("summary 0\n".into());
    writing.recv().unwrap();
    for i in 1..TERMINAL_QUEUE + 11 {
        t.show(format!("summary {i}\n")); // returns at once
    }
    assert_eq!(t.skipped, 10);
    let skipped = t.skipped;
    for _ in 0..TERMINAL_QUEUE + 2 {
        go.send(()).unwrap();
    }
    // Room again: the next summary says what was skipped.
    while t.skipped > 0 {
        t.show("later\n".into());
        tokio::task::yield_now().await;
    }
    drop(go); // unblocks the writer for good
    t.finish().await;
    let text = got.lock().clone();
    assert!(text.starts_with("summary 0\n"), "{text}");
    assert!(
        text.contains("summaries were not shown"),
        "no report of the {skipped} skipped: {text}"
    );
}

#[test]
fn past_errors_count_in_their_second() {
    let mut a = Aggregator::default();
    let e = Metric::Error {
        source: "db".into(),
        message: "x".into(),
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let ago = |d: Duration| (now - d, d);
    for d in [
        Duration::from_millis(500), // the last second
        Duration::from_secs(30),
        Duration::from_secs(59), // leaves the minute at the next tick
    ] {
        let (at, before) = ago(d);
        a.record_past(&e, at, before);
    }
    let (at, before) = ago(Duration::from_secs(3));
    a.record_past(
        &Metric::Request {
            path: "/".into(),
            latency_ms: 7.0,
            status: 200,
        },
        at,
        before,
    );
    // Each past second gets a summary of its own, in time order.
    let back = a.take_backfill();
    let at: Vec<u64> = back.iter().map(|s| s.at_ms / 1000).collect();
    assert_eq!(
        at,
        vec![1_000_000 - 58, 1_000_000 - 29, 1_000_000 - 2, 1_000_000]
    );
    assert_eq!(
        back.iter().map(|s| s.errors_last_min).collect::<Vec<_>>(),
        vec![1, 2, 2, 3]
    );
    assert_eq!(back[2].requests, 1);
    assert_eq!(back[2].latency_ms.unwrap().mean, 7.0);
    assert_eq!((back[3].totals.errors, back[3].totals.requests), (3, 1));
    assert!(a.take_backfill().is_empty());
    let s = a.tick(1.0);
    // Not in this second's counts; in the minute and the totals.
    assert_eq!((s.errors, s.requests, s.errors_last_min), (0, 0, 2));
    assert_eq!((s.totals.errors, s.totals.requests), (3, 1));
    for _ in 0..28 {
        assert_eq!(a.tick(1.0).errors_last_min, 2);
    }
    assert_eq!(a.tick(1.0).errors_last_min, 1); // 30 s + 1 s + 29 s = a minute
    for _ in 0..29 {
        assert_eq!(a.tick(1.0).errors_last_min, 1);
    }
    assert_eq!(a.tick(1.0).errors_last_min, 0);
}

#[test]
fn errors_leave_the_minute() {
    let mut a = Aggregator::default();
    a.record(&Metric::Error {
        source: "db".into(),
        message: "x".into(),
    });
    assert_eq!(a.tick(1.0).errors_last_min, 1);
    for _ in 0..59 {
        assert_eq!(a.tick(1.0).errors_last_min, 1);
    }
    assert_eq!(a.tick(1.0).errors_last_min, 0);
}
