//! The dashboard's arithmetic, apart from its I/O (`dashboard`): one second's summary of
//! the seed's metrics (requests, DB queries, errors), the last minute of
//! errors, and seconds replayed from the event log.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use busline::stream::Accumulator;
use serde::Serialize;

use super::metric::{Metric, Ms};
use super::sample::{unix_ms, Sample, Value};

/// Seconds in the dashboard's "in the last minute".
pub(super) const MINUTE: usize = 60;

/// Latency statistics of one window, in milliseconds (percentiles from
/// busline's HDR-histogram [`Accumulator`], within 0.1%).
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
    pub fn of(agg: &Accumulator) -> Option<Latency> {
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
    latency: Accumulator,
    db: Accumulator,
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
    latency: Accumulator,
    db: Accumulator,
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
        Metric::Samples { .. } | Metric::Runs { .. } => {
            let source = m.source();
            m.for_each_sample(|s| match (source, s.name.as_str(), &s.value) {
                ("web", "request.latency_ms", Value::Observation { value, .. }) => {
                    f(SeedPart::Request(*value))
                }
                ("db", "db.query.duration_ms", Value::Observation { value, .. }) => {
                    f(SeedPart::Db(*value))
                }
                _ if is_error(s) => f(SeedPart::Error),
                _ => {}
            });
        }
    }
}

/// An error sample the built-in rule counts (kind `error`, named `error`).
pub(super) fn is_error(s: &Sample) -> bool {
    matches!(s.value, Value::Error { .. }) && s.name == "error"
}
