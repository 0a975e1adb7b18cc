//! `busline monitor`: the live metrics monitor.
//!
//! Modules on one bus of [`Metric`](metric::Metric)s:
//!
//! | module | subscribes | policy | does |
//! | --- | --- | --- | --- |
//! | `web-sim`, `db-sim` | — | — | publish simulated requests, queries and errors |
//! | `logger` | `metrics.>` | lossless | writes every metric (stdout or JSON Lines) |
//! | `dashboard` | `metrics.>` | lossy | prints a 1 s summary; feeds the web page |
//! | `series` | `metrics.>` | lossless | aggregates every series ([`series`]); runs with the dashboard |
//! | `alerter` | `metrics.>` | lossless | alert rules (the default: errors/min over a threshold) → `[ALERT]`, webhook |
//! | `web` | — | — | the page, SSE, `/api/events` (publishes as `api`), `/v1/metrics` (OTLP), `/metrics` |
//! | `otlp` | — | — | with `--otlp ADDR`: OTLP/HTTP `POST /v1/metrics` on a listener of its own ([`otlp`]) |
//! | `scrape` | — | — | with `--scrape URL`: scrapes Prometheus endpoints ([`scrape`]) |
//! | `statsd` | — | — | StatsD over UDP ([`statsd`]; of the `ingest` set) |
//! | `nats` | — | — | with `--nats`: the bus's link to the other processes ([`nats`]) |
//!
//! `--modules LIST` picks the modules this process runs (`publishers` =
//! `web-sim,db-sim`, `dashboard`, `logger`, `alerter`, `web`, `ingest` (the
//! protocol listeners: StatsD); default all).
//!
//! Every metric is also a series ([`series`]: per-second and per-minute
//! statistics of each source, name and label set), listed in `/api/summary`,
//! on the web page, under the 1 s summary (the busiest) and in the
//! full-screen view that `--tui` shows instead of plain lines ([`tui`]).
//!
//! ## Start and stop
//!
//! Subscribers start first, and the publishers only once the logger is
//! subscribed, so the log holds every metric from the first. On stop
//! (`--duration`, Ctrl-C) the publishers stop first, then the others; the
//! logger writes everything queued for it before it exits.
//!
//! ## The event log
//!
//! Every metric (`metrics.>`) is kept in a durable [`busline_log`] log in
//! `--data-dir` (default `./busline-data`; `--no-data-dir` or an empty
//! `--data-dir ''` for none), through [`Bus::persist`](busline::Bus::persist): an event is appended
//! and fsynced (group commit: appends that arrive during an fsync share the
//! next one) before any module sees it. At the monitor's rates (tens of
//! events a second) that costs a few milliseconds of latency and nothing in
//! throughput. Whole segments are deleted once their newest event is older
//! than `--log-retention-secs` (default an hour) or while the log is larger
//! than `--log-retention-mb` (default 256), so the directory does not grow
//! forever. `busline log read DIR` / `busline log verify DIR` read it.
//!
//! The log is opened before anything starts: if it cannot be (another
//! monitor holds its lock, a corrupt record), the monitor exits at once with
//! an error naming the directory and the cause.
//!
//! ## Warm-up after a restart
//!
//! With the log, the dashboard and the alerter subscribe from the last
//! minute of it (`StartAt::Time(now - 60 s)`; the alerter from its longest
//! rule window): they replay it, then go live
//! with no gap and no duplicate. Replayed events count at their own
//! timestamps (see [`alerter`] and [`dashboard`]): a restart neither loses
//! the errors of the minute before nor counts them all as "now". The logger
//! does not replay: it logs what happens while it runs.
//!
//! ## Across processes
//!
//! `--nats URL` joins the bus to a NATS server: a process running the
//! publishers exports `metrics.>`, a process running the dashboard, logger or
//! alerter imports it, and one running both does both and sees each event
//! once (JetStream, at-least-once, a durable consumer per module set;
//! `--nats-core` for at-most-once). See [`nats`] for the rules:
//!
//! ```text
//! busline monitor --nats nats://127.0.0.1:4222 --modules publishers --no-web
//! busline monitor --nats nats://127.0.0.1:4222 --modules dashboard,logger,alerter,web
//! ```

pub mod alert;
pub mod alerter;
pub mod bucket_midpoints;
pub mod config;
pub mod cumulative;
pub mod dashboard;
pub mod ingest;
pub mod ingest_status;
pub mod logger;
pub mod metric;
pub mod nats;
pub mod otlp;
pub mod publish_timeout;
pub mod publishers;
pub mod rule;
pub mod rule_state;
pub mod rule_window;
pub mod run;
pub mod sample;
pub mod sample_check;
pub mod scrape;
pub mod selector;
pub mod series;
mod shared;
mod start;
pub mod statsd;
pub mod summary;
pub mod tui;
pub mod web;
pub mod webhook;

pub use config::MonitorArgs;
pub use shared::Shared;
pub use start::run;

/// Prints a line to stdout; a closed stdout is ignored, never a panic.
pub(crate) fn say(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
}
