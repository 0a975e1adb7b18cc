//! The terminal dashboard: a summary of the last second, every second.
//!
//! ```text
//! [dashboard] === 1s summary ===
//!   Requests: 10, avg latency: 87ms (p50 80ms, p99 190ms)
//!   DB queries: 5, avg: 15ms (p99 31ms)
//!   Errors: 1 (4 in the last minute)
//! ```
//!
//! ## Lossy on purpose
//!
//! The dashboard subscribes *lossy*: a slow terminal never slows the
//! publishers. When it falls behind, the bus drops the oldest events queued
//! for it and tells it how many (`Lagged(n)`); the summary then says
//! `missed n events`, and the count goes into the web page and `/metrics`.
//!
//! ## A slow terminal
//!
//! The summaries are written by a thread of their own, behind a queue of
//! [`TERMINAL_QUEUE`] summaries, so a terminal that does not keep up never
//! blocks the dashboard (or the runtime's worker threads). If that queue is
//! full a summary is not printed, and the next one printed says how many
//! were skipped; the web page and `/api/summary` still get every one.
//!
//! ## Warm-up and event time
//!
//! With the event log (see [the monitor](super)) the dashboard starts
//! [`from`](busline::SubscriptionBuilder::from) the last minute of it, so a
//! restarted monitor shows the errors of the minute before at once. Events
//! count at the time they happened (their envelope's `timestamp`): one
//! older than the current window (by more than [`LATE`], for delivery
//! delays) goes into the second it belongs to in "in the last minute" and into
//! a summary of its own second, not into the current second's counts. At the
//! next tick those past seconds' summaries go into the web page's history
//! (charts are drawn by time, so the restarted page shows the minute before)
//! and their counts into the totals; the terminal gets one line,
//! `[dashboard] N earlier events from the event log, in S past seconds`.
//!
//! The summary it computes each second is also what the web dashboard and
//! `/api/summary` show: it is published to the shared [`Shared`] state.
//!
//! ## Every other series
//!
//! Under the three lines come the busiest other series (one line each) and,
//! when ingest refused or lost anything, one `Ingest:` line: see
//! [`series::lines`](super::series::lines). With only the seed's metrics
//! there are none, and the summary is exactly the seed's.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use busline::stream::Aggregate;
use busline::{BoxError, Context, Module, RecvError};
use serde::Serialize;

use super::metric::{Metric, Ms};
use super::sample::{unix_ms, Sample, Value};
use super::Shared;

/// Queue capacity of the dashboard's lossy subscription.
pub const DASHBOARD_QUEUE: usize = 1024;
/// Summaries waiting for a slow terminal before the next is skipped.
pub const TERMINAL_QUEUE: usize = 4;
/// How much older than the current window an event may be and still count
/// in it (delivery through the log takes an fsync).
pub const LATE: Duration = Duration::from_millis(250);
/// Seconds in the dashboard's "in the last minute".
const MINUTE: usize = 60;

/// Writes text to stdout on a thread of its own.
struct Terminal {
    tx: Option<std::sync::mpsc::SyncSender<String>>,
    thread: Option<std::thread::JoinHandle<()>>,
    skipped: u64,
}

impl Terminal {
    fn start() -> std::io::Result<Terminal> {
        Terminal::start_with(std::io::stdout())
    }

    fn start_with(mut out: impl Write + Send + 'static) -> std::io::Result<Terminal> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(TERMINAL_QUEUE);
        let thread = std::thread::Builder::new()
            .name("dashboard-stdout".into())
            .spawn(move || {
                for text in rx {
                    if out
                        .write_all(text.as_bytes())
                        .and_then(|_| out.flush())
                        .is_err()
                    {
                        break; // stdout is gone (closed pipe): nothing more to show
                    }
                }
            })?;
        Ok(Terminal {
            tx: Some(tx),
            thread: Some(thread),
            skipped: 0,
        })
    }

    /// Queues `text`; never waits.
    fn show(&mut self, mut text: String) {
        if self.skipped > 0 {
            text.push_str(&format!(
                "  (the terminal is slow: {} summaries were not shown)\n",
                self.skipped
            ));
        }
        let Some(tx) = &self.tx else { return };
        match tx.try_send(text) {
            Ok(()) => self.skipped = 0,
            Err(_) => self.skipped += 1,
        }
    }

    /// Waits until everything queued is written.
    async fn finish(mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// Latency statistics of one window, in milliseconds (percentiles from
/// busline's HDR-histogram [`Aggregate`], within 0.1%).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub max: f64,
}

impl Latency {
    /// The statistics of `agg`; `None` when it is empty.
    pub fn of(agg: &Aggregate) -> Option<Latency> {
        let s = agg.summary();
        Some(Latency {
            mean: s.mean?,
            p50: s.p50?,
            p90: s.p90?,
            p99: s.p99?,
            max: s.max?,
        })
    }
}

/// Running totals since the monitor started (as seen by the dashboard).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Requests.
    pub requests: u64,
    /// DB queries.
    pub db_queries: u64,
    /// Errors.
    pub errors: u64,
    /// Events the dashboard missed because it fell behind.
    pub missed: u64,
}

/// One second (one window) of metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// End of the window, Unix milliseconds.
    pub at_ms: u64,
    /// Length of the window in seconds.
    pub seconds: f64,
    /// Requests in the window.
    pub requests: u64,
    /// Requests per second.
    pub requests_per_sec: f64,
    /// Request latency.
    pub latency_ms: Option<Latency>,
    /// DB queries in the window.
    pub db_queries: u64,
    /// DB query time.
    pub db_ms: Option<Latency>,
    /// Errors in the window.
    pub errors: u64,
    /// Errors in the last minute (sliding, one-second steps).
    pub errors_last_min: u64,
    /// Events missed in this window (lag).
    pub missed: u64,
    /// Totals since start.
    pub totals: Totals,
}

/// The dashboard's arithmetic, separate from its I/O so it can be tested.
#[derive(Debug, Default)]
pub struct Aggregator {
    latency: Aggregate,
    db: Aggregate,
    requests: u64,
    errors: u64,
    missed: u64,
    last_minute: VecDeque<u64>,
    totals: Totals,
    past: BTreeMap<u64, PastSecond>,
}

/// Events of one past second (replayed), for its backfilled summary.
#[derive(Debug, Default)]
struct PastSecond {
    latency: Aggregate,
    db: Aggregate,
    requests: u64,
    errors: u64,
}

impl Aggregator {
    /// Counts one metric into the current window.
    pub fn record(&mut self, m: &Metric) {
        seed_parts(m, |part| match part {
            SeedPart::Request(ms) => {
                self.requests += 1;
                self.latency.record(ms);
            }
            SeedPart::Db(ms) => self.db.record(ms),
            SeedPart::Error => self.errors += 1,
        });
    }

    /// Counts a metric that happened at `at`, `before` the current window
    /// began (one replayed from the event log): for an error, into the second
    /// of the last minute it belongs to; and into a summary of its own second
    /// that [`take_backfill`](Self::take_backfill) returns.
    pub fn record_past(&mut self, m: &Metric, at: SystemTime, before: Duration) {
        let sec = unix_ms(at) / 1000;
        let past = self.past.entry(sec).or_default();
        let last_minute = &mut self.last_minute;
        seed_parts(m, |part| match part {
            SeedPart::Request(ms) => {
                past.requests += 1;
                past.latency.record(ms);
            }
            SeedPart::Db(ms) => past.db.record(ms),
            SeedPart::Error => {
                past.errors += 1;
                // 0: the last closed second; the window keeps MINUTE seconds,
                // the current one included.
                let k = before.as_secs() as usize;
                if k + 1 >= MINUTE {
                    return;
                }
                while last_minute.len() <= k {
                    last_minute.push_front(0);
                }
                let i = last_minute.len() - 1 - k;
                last_minute[i] += 1;
            }
        });
    }

    /// Summaries of the past seconds recorded with
    /// [`record_past`](Self::record_past) since the last call, oldest first
    /// (their `at_ms` is the end of their second; seconds without events
    /// have none). Their counts go into the totals.
    pub fn take_backfill(&mut self) -> Vec<Summary> {
        let past = std::mem::take(&mut self.past);
        let errors: Vec<(u64, u64)> = past.iter().map(|(s, p)| (*s, p.errors)).collect();
        let mut out = Vec::with_capacity(past.len());
        for (sec, p) in past {
            self.totals.requests += p.requests;
            self.totals.db_queries += p.db.count();
            self.totals.errors += p.errors;
            let errors_last_min = errors
                .iter()
                .filter(|(s, _)| *s <= sec && *s + MINUTE as u64 > sec)
                .map(|(_, e)| e)
                .sum();
            out.push(Summary {
                at_ms: (sec + 1) * 1000,
                seconds: 1.0,
                requests: p.requests,
                requests_per_sec: p.requests as f64,
                latency_ms: Latency::of(&p.latency),
                db_queries: p.db.count(),
                db_ms: Latency::of(&p.db),
                errors: p.errors,
                errors_last_min,
                missed: 0,
                totals: self.totals.clone(),
            });
        }
        out
    }

    /// Counts `n` events missed because the subscription lagged.
    pub fn missed(&mut self, n: u64) {
        self.missed += n;
    }

    /// Closes the current window (`seconds` long) and starts the next.
    pub fn tick(&mut self, seconds: f64) -> Summary {
        let latency = std::mem::take(&mut self.latency);
        let db = std::mem::take(&mut self.db);
        let requests = std::mem::take(&mut self.requests);
        let errors = std::mem::take(&mut self.errors);
        let missed = std::mem::take(&mut self.missed);
        self.last_minute.push_back(errors);
        while self.last_minute.len() > MINUTE {
            self.last_minute.pop_front();
        }
        self.totals.requests += requests;
        self.totals.db_queries += db.count();
        self.totals.errors += errors;
        self.totals.missed += missed;
        Summary {
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            seconds,
            requests,
            requests_per_sec: if seconds > 0.0 {
                requests as f64 / seconds
            } else {
                0.0
            },
            latency_ms: Latency::of(&latency),
            db_queries: db.count(),
            db_ms: Latency::of(&db),
            errors,
            errors_last_min: self.last_minute.iter().sum(),
            missed,
            totals: self.totals.clone(),
        }
    }
}

/// Formats a summary for the terminal.
pub fn render(s: &Summary) -> String {
    let mut out = String::from("[dashboard] === 1s summary ===\n");
    match &s.latency_ms {
        Some(l) => out.push_str(&format!(
            "  Requests: {}, avg latency: {}ms (p50 {}ms, p99 {}ms)\n",
            s.requests,
            Ms(l.mean),
            Ms(l.p50),
            Ms(l.p99)
        )),
        None => out.push_str("  Requests: 0\n"),
    }
    match &s.db_ms {
        Some(d) => out.push_str(&format!(
            "  DB queries: {}, avg: {}ms (p99 {}ms)\n",
            s.db_queries,
            Ms(d.mean),
            Ms(d.p99)
        )),
        None => out.push_str("  DB queries: 0\n"),
    }
    out.push_str(&format!(
        "  Errors: {} ({} in the last minute)\n",
        s.errors, s.errors_last_min
    ));
    if s.missed > 0 {
        out.push_str(&format!(
            "  Lagged: missed {} events (the dashboard fell behind; publishers were not slowed)\n",
            s.missed
        ));
    }
    out
}

/// The dashboard module.
#[derive(Clone)]
pub struct Dashboard {
    shared: Arc<Shared>,
    every: Duration,
    warm_up: bool,
}

impl Dashboard {
    /// A dashboard printing a summary `every` (normally one second).
    pub fn new(shared: Arc<Shared>, every: Duration) -> Self {
        Dashboard {
            shared,
            every,
            warm_up: false,
        }
    }

    /// Starts with the last minute of the bus's event store (the bus must
    /// persist `metrics.>`).
    pub fn warm_up(mut self) -> Self {
        self.warm_up = true;
        self
    }
}

impl Module<Metric> for Dashboard {
    fn name(&self) -> &str {
        "dashboard"
    }

    /// Runs until shutdown.
    async fn run(&mut self, ctx: Context<Metric>) -> Result<(), BoxError> {
        let mut builder = ctx
            .subscriber("metrics.>")
            .lossy(DASHBOARD_QUEUE)
            .name("dashboard");
        if self.warm_up {
            let since = SystemTime::now()
                .checked_sub(Duration::from_secs(MINUTE as u64))
                .unwrap_or(UNIX_EPOCH);
            builder = builder.from(busline::StartAt::Time(since));
        }
        let mut sub = builder.subscribe()?;
        let mut agg = Aggregator::default();
        let mut terminal = Terminal::start()?;
        let start = tokio::time::Instant::now() + self.every;
        let mut tick = tokio::time::interval_at(start, self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = tokio::time::Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = ctx.shutdown_requested() => break,
                now = tick.tick() => {
                    let secs = now.duration_since(last).as_secs_f64();
                    last = now;
                    let backfill = agg.take_backfill();
                    if !backfill.is_empty() {
                        let n: u64 = backfill
                            .iter()
                            .map(|s| s.requests + s.db_queries + s.errors)
                            .sum();
                        terminal.show(format!(
                            "[dashboard] {n} earlier events from the event log, in {} past seconds\n",
                            backfill.len()
                        ));
                        for s in backfill {
                            self.shared.push_past_summary(s);
                        }
                    }
                    let summary = agg.tick(secs);
                    summary_metrics(&summary);
                    let mut text = render(&summary);
                    text.push_str(&super::series::lines::render(
                        self.shared.series().as_deref(),
                        &self.shared.ingest.snapshot(),
                        self.shared.series_missed_total(),
                    ));
                    terminal.show(text);
                    self.shared.push_summary(summary);
                }
                ev = sub.recv() => match ev {
                    Ok(env) => {
                        let age = SystemTime::now()
                            .duration_since(env.timestamp)
                            .unwrap_or_default();
                        match past_offset(age, last.elapsed()) {
                            Some(before) => agg.record_past(&env.payload, env.timestamp, before),
                            None => agg.record(&env.payload),
                        }
                        let source = env.payload.source();
                        for s in env.payload.samples().iter() {
                            if let (true, Value::Error { message }) = (is_error(s), &s.value) {
                                self.shared.push_error(unix_ms(env.timestamp), source, message);
                            }
                        }
                    }
                    Err(RecvError::Lagged(n)) => agg.missed(n),
                    Err(RecvError::Closed) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        terminal.finish().await;
        Ok(())
    }
}

/// What a metric adds to the seed's summary.
enum SeedPart {
    /// A request and its latency (ms).
    Request(f64),
    /// A DB query and its duration (ms).
    Db(f64),
    /// An error.
    Error,
}

/// Calls `f` with each part of the seed's summary in `m`: the seed's shapes,
/// and samples of the generic form that use their names (`request.latency_ms`
/// from `web`, `db.query.duration_ms` from `db`, error samples named
/// `error`, which the built-in alert rule counts too), so the summary, the
/// series lines (which leave those series to it) and the rule agree.
fn seed_parts(m: &Metric, mut f: impl FnMut(SeedPart)) {
    match m {
        Metric::Request { latency_ms, .. } => f(SeedPart::Request(*latency_ms)),
        Metric::DbQuery { duration_ms, .. } => f(SeedPart::Db(*duration_ms)),
        Metric::Error { .. } => f(SeedPart::Error),
        Metric::Samples { source, samples } => {
            for s in samples {
                match (source.as_str(), s.name.as_str(), &s.value) {
                    ("web", "request.latency_ms", Value::Observation { value, .. }) => {
                        f(SeedPart::Request(*value))
                    }
                    ("db", "db.query.duration_ms", Value::Observation { value, .. }) => {
                        f(SeedPart::Db(*value))
                    }
                    _ if is_error(s) => f(SeedPart::Error),
                    _ => {}
                }
            }
        }
    }
}

/// An error sample the built-in rule counts (kind `error`, named `error`).
fn is_error(s: &Sample) -> bool {
    matches!(s.value, Value::Error { .. }) && s.name == "error"
}

/// The monitor's own numbers for `/metrics`.
fn summary_metrics(s: &Summary) {
    metrics::counter!("busline_monitor_requests_total").absolute(s.totals.requests);
    metrics::counter!("busline_monitor_db_queries_total").absolute(s.totals.db_queries);
    metrics::counter!("busline_monitor_errors_total").absolute(s.totals.errors);
    metrics::counter!("busline_monitor_dashboard_missed_total").absolute(s.totals.missed);
    metrics::gauge!("busline_monitor_errors_last_minute").set(s.errors_last_min as f64);
    metrics::gauge!("busline_monitor_requests_per_second").set(s.requests_per_sec);
    if let Some(l) = &s.latency_ms {
        metrics::gauge!("busline_monitor_request_latency_ms", "stat" => "mean").set(l.mean);
        metrics::gauge!("busline_monitor_request_latency_ms", "stat" => "p50").set(l.p50);
        metrics::gauge!("busline_monitor_request_latency_ms", "stat" => "p99").set(l.p99);
    }
    if let Some(d) = &s.db_ms {
        metrics::gauge!("busline_monitor_db_query_ms", "stat" => "mean").set(d.mean);
        metrics::gauge!("busline_monitor_db_query_ms", "stat" => "p99").set(d.p99);
    }
}

/// For an event `age` old, `elapsed` into the current second: how long
/// before that second began it happened, if it belongs to an earlier second
/// (older than the `LATE` allowance). The allowance only decides whether it
/// is past; its second is where its age puts it.
fn past_offset(age: Duration, elapsed: Duration) -> Option<Duration> {
    age.checked_sub(elapsed + LATE)?;
    Some(age - elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A terminal that blocks until told to go on, recording what it got.
    struct Stuck {
        go: std::sync::mpsc::Receiver<()>,
        got: Arc<parking_lot::Mutex<String>>,
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
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
        let got = Arc::default();
        let mut t = Terminal::start_with(Stuck {
            go: rx,
            got: Arc::clone(&got),
        })
        .unwrap();
        // One is taken by the stuck writer, TERMINAL_QUEUE wait, the rest are skipped.
        for i in 0..TERMINAL_QUEUE + 11 {
            t.show(format!("summary {i}\n")); // returns at once
        }
        assert!(t.skipped >= 10, "{}", t.skipped);
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
}
