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

mod terminal;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use busline::{BoxError, Context, Module, RecvError};

use super::metric::Metric;
use super::sample::{unix_ms, Value};
use super::summary::{is_error, MINUTE};
pub use super::summary::{render, Aggregator, Summary};
use super::Shared;
use terminal::Terminal;

/// Queue capacity of the dashboard's lossy subscription.
pub const DASHBOARD_QUEUE: usize = 1024;
/// Summaries waiting for a slow terminal before the next is skipped.
pub const TERMINAL_QUEUE: usize = 4;
/// How much older than the current window an event may be and still count
/// in it (delivery through the log takes an fsync).
pub const LATE: Duration = Duration::from_millis(250);
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
                            .duration_since(env.timestamp())
                            .unwrap_or_default();
                        match past_offset(age, last.elapsed()) {
                            Some(before) => agg.record_past(&env.payload, env.timestamp(), before),
                            None => agg.record(&env.payload),
                        }
                        let source = env.payload.source();
                        env.payload.for_each_sample(|s| {
                            if let (true, Value::Error { message }) = (is_error(s), &s.value) {
                                self.shared.push_error(unix_ms(env.timestamp()), source, message);
                            }
                        });
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
mod tests;
