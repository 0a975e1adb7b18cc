//! `busline monitor`: the live metrics monitor.
//!
//! Modules on one bus of [`Metric`]s:
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
//! `--data-dir ''` for none), through [`Bus::persist`]: an event is appended
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

pub mod alerter;
pub mod bucket_midpoints;
pub mod config;
pub mod cumulative;
pub mod dashboard;
pub mod ingest;
pub mod ingest_status;
pub mod logger;
#[allow(dead_code)] // TEMP: used once the listeners land
pub mod metric;
pub mod nats;
pub mod otlp;
pub mod publishers;
pub mod rule;
pub mod rule_state;
pub mod rule_window;
#[allow(dead_code)] // TEMP: used once the listeners land
pub mod sample;
pub mod sample_check;
pub mod scrape;
pub mod selector;
pub mod series;
pub mod statsd;
pub mod tui;
pub mod web;
pub mod webhook;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use busline::{Bus, EventStore, ModuleStatus, Runtime, RuntimeHandle, StopReason};
use busline_log::LogStore;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

use alerter::AlertRecord;
pub use config::MonitorArgs;
use config::Settings;
use dashboard::Summary;
use metric::Metric;
use webhook::Webhook;

/// How many seconds of summaries the page gets when it connects.
pub const HISTORY: usize = 300;

/// An error metric, for the page's "recent errors" list.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorLine {
    /// When it happened (its event's timestamp), Unix milliseconds.
    pub at_ms: u64,
    /// The failing service.
    pub source: String,
    /// Its message.
    pub message: String,
}

/// State shared by the dashboard, alerter and web modules.
pub struct Shared {
    started: Instant,
    threshold: u64,
    settings_json: serde_json::Value,
    summaries: Mutex<VecDeque<Arc<Summary>>>,
    /// Whether the history holds a live summary (its newest entry then).
    live: std::sync::atomic::AtomicBool,
    alerts: Mutex<VecDeque<AlertRecord>>,
    errors: Mutex<VecDeque<ErrorLine>>,
    runtime: Mutex<Option<RuntimeHandle>>,
    webhook: Mutex<Option<Webhook>>,
    alert_rate: AtomicU64,
    firing: AtomicBool,
    /// Every alert rule's state (the alerter keeps it).
    rules: Mutex<Vec<rule_state::RuleStatus>>,
    /// Events accepted by `POST /api/events`.
    pub ingested: AtomicU64,
    /// Requests to `POST /api/events` refused.
    pub rejected: AtomicU64,
    /// What every ingest listener took in, refused and lost.
    pub ingest: Arc<ingest_status::IngestStatus>,
    /// The newest view of every series (from the `series` module).
    series: Mutex<Option<Arc<series::StoreView>>>,
    /// Events the series store missed (it subscribes lossless: stays 0).
    series_missed: AtomicU64,
    /// OTLP's cumulative series (the web route and `--otlp` share them).
    pub otlp: otlp::Receiver,
    updates: watch::Sender<u64>,
}

impl Shared {
    fn new(settings: &Settings) -> Shared {
        Shared {
            started: Instant::now(),
            threshold: settings.alert_threshold,
            settings_json: serde_json::json!({
                "interval_ms": settings.interval.as_millis() as u64,
                "error_rate": settings.error_rate,
                "alert_threshold": settings.alert_threshold,
                "simulate": settings.simulate,
                "log": settings.log_file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "stdout".into()),
                "webhook": settings.alert_webhook.is_some(),
                "data_dir": settings.data_dir.as_ref().map(|p| p.display().to_string()),
                "nats": settings.nats.is_some(),
            }),
            summaries: Mutex::new(VecDeque::with_capacity(HISTORY)),
            live: std::sync::atomic::AtomicBool::new(false),
            alerts: Mutex::new(VecDeque::new()),
            errors: Mutex::new(VecDeque::new()),
            runtime: Mutex::new(None),
            webhook: Mutex::new(None),
            alert_rate: AtomicU64::new(0),
            firing: AtomicBool::new(false),
            rules: Mutex::new(Vec::new()),
            ingested: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            ingest: Arc::default(),
            series: Mutex::new(None),
            series_missed: AtomicU64::new(0),
            otlp: otlp::Receiver::default(),
            updates: watch::channel(0).0,
        }
    }

    fn bump(&self) {
        self.updates.send_modify(|g| *g += 1);
    }

    /// Wakes on every new summary or alert.
    pub fn subscribe_updates(&self) -> watch::Receiver<u64> {
        self.updates.subscribe()
    }

    /// A new 1 s summary (from the dashboard).
    pub fn push_summary(&self, s: Summary) {
        {
            let mut q = self.summaries.lock();
            if q.len() == HISTORY {
                q.pop_front();
            }
            q.push_back(Arc::new(s));
            self.live.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.bump();
    }

    /// A summary of a past second (replayed from the event log): into the
    /// history in time order, never as the newest.
    pub fn push_past_summary(&self, s: Summary) {
        let mut q = self.summaries.lock();
        let i = q.partition_point(|x| x.at_ms <= s.at_ms);
        if i == 0 && q.len() == HISTORY {
            return; // older than everything kept
        }
        if i == q.len() && i > 0 && self.live.load(std::sync::atomic::Ordering::Relaxed) {
            // Newer than the newest live summary: keep the live one last.
            q.insert(i - 1, Arc::new(s));
        } else {
            q.insert(i, Arc::new(s));
        }
        if q.len() > HISTORY {
            q.pop_front();
        }
    }

    /// A new view of every series (from the `series` module).
    pub fn set_series(&self, view: Arc<series::StoreView>) {
        *self.series.lock() = Some(view);
    }

    /// The newest view of every series, if the `series` module runs.
    pub fn series(&self) -> Option<Arc<series::StoreView>> {
        self.series.lock().clone()
    }

    /// Events the series store missed, in all.
    pub fn series_missed_total(&self) -> u64 {
        self.series_missed.load(Ordering::Relaxed)
    }

    /// Counts `n` events the series store missed.
    pub fn series_missed(&self, n: u64) {
        self.series_missed.fetch_add(n, Ordering::Relaxed);
    }

    /// The newest summary.
    pub fn latest(&self) -> Option<Arc<Summary>> {
        self.summaries.lock().back().cloned()
    }

    /// The alert history, oldest first.
    pub fn alerts(&self) -> Vec<AlertRecord> {
        self.alerts.lock().iter().cloned().collect()
    }

    /// An error metric seen by the dashboard, that happened at `at_ms`.
    pub fn push_error(&self, at_ms: u64, source: &str, message: &str) {
        let mut q = self.errors.lock();
        if q.len() == 20 {
            q.pop_front();
        }
        q.push_back(ErrorLine {
            at_ms,
            source: source.to_owned(),
            message: message.to_owned(),
        });
    }

    /// An alert transition (from the alerter).
    pub fn push_alert(&self, a: AlertRecord) {
        {
            let mut q = self.alerts.lock();
            if q.len() == 100 {
                q.pop_front();
            }
            q.push_back(a);
        }
        self.bump();
    }

    /// The alerter's current view.
    pub fn set_alert_rate(&self, rate: u64, firing: bool) {
        self.alert_rate.store(rate, Ordering::Relaxed);
        self.firing.store(firing, Ordering::Relaxed);
    }

    /// Every alert rule's state, in the config's order (the default first).
    pub fn rules(&self) -> Vec<rule_state::RuleStatus> {
        self.rules.lock().clone()
    }

    /// Changes the rules' states (from the alerter).
    pub fn update_rules(&self, f: impl FnOnce(&mut Vec<rule_state::RuleStatus>)) {
        f(&mut self.rules.lock());
    }

    /// Hands the monitor's own counters to the `metrics` facade.
    pub fn export_metrics(&self) {
        metrics::counter!("busline_monitor_ingested_total")
            .absolute(self.ingested.load(Ordering::Relaxed));
        metrics::counter!("busline_monitor_rejected_requests_total")
            .absolute(self.rejected.load(Ordering::Relaxed));
        metrics::gauge!("busline_monitor_alert_firing").set(
            if self.firing.load(Ordering::Relaxed) {
                1.0
            } else {
                0.0
            },
        );
        metrics::gauge!("busline_monitor_alert_threshold").set(self.threshold as f64);
        for r in self.rules.lock().iter() {
            let firing = r.state == rule_state::State::Firing;
            metrics::gauge!("busline_monitor_rule_firing", "rule" => r.name.clone())
                .set(if firing { 1.0 } else { 0.0 });
        }
        metrics::gauge!("busline_monitor_uptime_seconds").set(self.started.elapsed().as_secs_f64());
        if let Some(v) = self.series() {
            metrics::gauge!("busline_monitor_series").set(v.series.len() as f64);
            metrics::counter!("busline_monitor_series_overflow_samples_total")
                .absolute(v.overflow.samples);
        }
        if let Some(w) = &*self.webhook.lock() {
            let s = w.snapshot();
            metrics::counter!("busline_monitor_webhook_delivered_total").absolute(s.delivered);
            metrics::counter!("busline_monitor_webhook_failed_total").absolute(s.failed);
            metrics::counter!("busline_monitor_webhook_dropped_total").absolute(s.dropped);
            metrics::counter!("busline_monitor_webhook_rejected_total").absolute(s.rejected);
        }
    }

    /// Every module's state, from the runtime (also exported as metrics).
    pub async fn modules(&self) -> Vec<ModuleStatus> {
        let handle = self.runtime.lock().clone();
        let modules = match handle {
            Some(h) => h
                .status(Duration::from_millis(500))
                .await
                .unwrap_or_default(),
            None => Vec::new(),
        };
        for m in &modules {
            let running = m.state == busline::ModuleState::Running;
            metrics::gauge!("busline_module_running", "module" => m.name.clone()).set(if running {
                1.0
            } else {
                0.0
            });
            metrics::counter!("busline_module_restarts_total", "module" => m.name.clone())
                .absolute(m.restarts.into());
        }
        modules
    }

    /// Everything the page shows, as JSON; `history` adds the last summaries.
    pub async fn snapshot(&self, bus: &Bus<Metric>, history: bool) -> serde_json::Value {
        let modules = self.modules().await;
        let history = if history {
            serde_json::to_value(&*self.summaries.lock()).unwrap_or_default()
        } else {
            serde_json::Value::Null
        };
        let series_json = self.series();
        let mut alerts = self.alerts();
        alerts.reverse();
        alerts.truncate(50);
        serde_json::json!({
            "now_ms": sample::unix_ms(SystemTime::now()),
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "summary": self.latest(),
            "history": history,
            "ingested": self.ingested.load(Ordering::Relaxed),
            "rejected": self.rejected.load(Ordering::Relaxed),
            "ingest": self.ingest.snapshot(),
            "series": series_json.as_ref().map(|v| &v.series),
            "series_status": series_json.as_ref().map(|v| serde_json::json!({
                "at_ms": v.at_ms,
                "count": v.series.len(),
                "overflow": v.overflow,
                "too_old": v.too_old,
                "bad_histograms": v.bad_histograms,
                "forgotten": v.forgotten,
                "missed": self.series_missed.load(Ordering::Relaxed),
            })),
            "alert": {
                "threshold": self.threshold,
                "rate": self.alert_rate.load(Ordering::Relaxed),
                "firing": self.firing.load(Ordering::Relaxed),
            },
            "alerts": alerts,
            "rules": self.rules(),
            "recent_errors": self.errors.lock().iter().rev().cloned().collect::<Vec<_>>(),
            "bus": bus.stats(),
            "modules": modules,
            "webhook": self.webhook.lock().as_ref().map(Webhook::snapshot),
            "settings": self.settings_json,
        })
    }
}

/// Prints a line to stdout; a closed stdout is ignored, never a panic.
pub(crate) fn say(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
}

fn store_len(store: &Arc<LogStore<Metric>>) -> u64 {
    let log = store.log();
    log.committed_end() - log.first_offset()
}

/// `busline monitor`.
pub fn run(args: MonitorArgs) -> Result<()> {
    let settings = Settings::resolve(&args)?;
    // Opening the log blocks on disk (recovery): before the runtime starts.
    let store = open_log(&settings)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("busline-monitor")
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(run_async(settings, store))
}

/// Opens the event log in `--data-dir`, if there is one.
fn open_log(settings: &Settings) -> Result<Option<Arc<LogStore<Metric>>>> {
    let Some(dir) = &settings.data_dir else {
        return Ok(None);
    };
    let options = busline_log::Options {
        persist: busline_log::Persist::Fsync,
        // Retention deletes whole segments: keep them small beside the limit.
        segment_bytes: (settings.log_retention_bytes / 8).clamp(1 << 20, 64 << 20),
        retention_age: Some(settings.log_retention_age),
        retention_bytes: Some(settings.log_retention_bytes),
        ..Default::default()
    };
    match LogStore::open(dir, options) {
        Ok(store) => {
            if let Some(cut) = store.log().recovery() {
                // A write torn by a crash: never acknowledged, so never delivered.
                eprintln!(
                    "[monitor] event log {}: cut a torn write of {} bytes at offset {} in {}",
                    dir.display(),
                    cut.bytes_cut,
                    cut.offset,
                    cut.segment.display()
                );
            }
            Ok(Some(Arc::new(store)))
        }
        Err(e) => {
            let hint = match &e {
                busline_log::Error::Locked { .. } => {
                    "is another monitor running on it? Stop it, or pass another --data-dir (or --no-data-dir)"
                }
                _ if dir.exists() && !dir.is_dir() => {
                    "it is a file, not a directory: pass a directory as --data-dir (or --no-data-dir)"
                }
                _ => "`busline log verify DIR` shows what is wrong; move the directory away or pass another --data-dir (or --no-data-dir)",
            };
            anyhow::bail!(
                "cannot open the monitor's event log in {}: {e}\n  {hint}",
                dir.display()
            )
        }
    }
}

async fn run_async(settings: Settings, store: Option<Arc<LogStore<Metric>>>) -> Result<()> {
    let prom = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the Prometheus recorder")?;
    let bus: Bus<Metric> = Bus::new();
    if let Some(store) = &store {
        // Before any module subscribes or publishes.
        let dyn_store: Arc<dyn EventStore<Metric>> = store.clone();
        bus.persist("metrics.>", dyn_store)?;
        if let Some(dir) = &settings.data_dir {
            println!(
                "[monitor] event log in {} ({} events kept)",
                dir.display(),
                store_len(store)
            );
        }
    }
    let warm_up = store.is_some();
    let shared = Arc::new(Shared::new(&settings));

    // Bind first: a busy port is an error before anything starts.
    let modules = settings.modules;
    let web = match settings.web.filter(|_| modules.web) {
        Some(addr) => Some(web::Web::bind(
            addr,
            web::WebConfig {
                token: settings.token.clone(),
                allow_host: settings.allow_host.clone(),
                max_body: settings.max_body,
            },
            shared.clone(),
            prom,
        )?),
        None => None,
    };
    let otlp = match settings.otlp {
        Some(addr) => Some(otlp::http::OtlpListener::bind(
            addr,
            settings.token.clone(),
            shared.clone(),
        )?),
        None => None,
    };
    let statsd = match settings.statsd {
        Some(s) => statsd::Listener::bind(s.addr, s.explicit, shared.ingest.clone())?,
        None => None,
    };
    let hook = match &settings.alert_webhook {
        Some(url) => Some(Webhook::start(url.clone())?),
        None => None,
    };
    *shared.webhook.lock() = hook.clone();

    // Consumers first: the runtime starts modules in this order (each once
    // the one before is subscribed) and stops them in reverse, so the
    // publishers stop first and the logger drains last.
    let mut rt = Runtime::new(bus.clone());
    if modules.logger {
        let sink = match &settings.log_file {
            Some(p) => {
                // A file that cannot be written is an error now, not a
                // logger failing (and restarting) once the monitor runs.
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| {
                        format!("--log-file: cannot open {} to append", p.display())
                    })?;
                logger::Sink::File(p.clone())
            }
            None => logger::Sink::Stdout,
        };
        rt.add(logger::Logger::new(sink));
    }
    if modules.dashboard {
        let mut dash = dashboard::Dashboard::new(shared.clone(), Duration::from_secs(1));
        if warm_up {
            dash = dash.warm_up();
        }
        rt.add(dash);
    }
    if modules.dashboard {
        let mut feed = series::feed::SeriesFeed::new(shared.clone(), settings.max_series);
        if warm_up {
            feed = feed.warm_up();
        }
        rt.add(feed);
    }
    if modules.alerter {
        let mut alert = alerter::Alerter::new(settings.alert_threshold, shared.clone(), hook)
            .rules(settings.alert_rules.clone());
        if warm_up {
            alert = alert.warm_up();
        }
        rt.add(alert);
    }
    if let Some(n) = &settings.nats {
        let cfg = nats::config(
            n,
            &modules,
            settings.log_retention_age,
            settings.data_dir.as_deref(),
        );
        // An exporter connects before anything publishes; an importer once
        // the consumers (added above) are subscribed.
        let link = match nats::Direction::of(&modules) {
            nats::Direction::Export => {
                let t = nats::connect(&bus, cfg, &n.url).await?;
                say(&format!("[nats] exporting metrics.> to {}", n.url));
                nats::NatsLink::connected(t, &n.url)
            }
            // The link is added after the consumers and before the
            // publishers: it connects with the consumers subscribed and
            // before anything publishes.
            d => nats::NatsLink::connect_on_start(cfg, &n.url, d),
        };
        rt.add(link).restart(busline::Restart::Never);
    }
    let web_url = web.as_ref().map(web::Web::url);
    if let Some(w) = web {
        println!("[web] dashboard on {}", w.url());
        rt.add(w);
    }
    if let Some(o) = otlp {
        println!("[otlp] OTLP/HTTP metrics on http://{}/v1/metrics", o.addr());
        rt.add(o);
    }
    if !settings.scrape.is_empty() {
        println!(
            "[scrape] scraping {} every {}s",
            settings
                .scrape
                .iter()
                .map(|t| format!("{} ({})", t.url, t.job))
                .collect::<Vec<_>>()
                .join(", "),
            settings.scrape_interval.as_secs_f64()
        );
        rt.add(scrape::Scraper::new(
            settings.scrape.clone(),
            settings.scrape_interval,
            shared.clone(),
        ));
    }
    if let Some(l) = statsd {
        println!("{}", l.describe());
        rt.add(l);
    }
    if settings.simulate {
        for (on, service) in [
            (modules.web_sim, publishers::Service::Web),
            (modules.db_sim, publishers::Service::Db),
        ] {
            if on {
                rt.add(publishers::Simulator::new(
                    service,
                    settings.interval,
                    settings.error_rate,
                ));
            }
        }
    }
    let handle = rt.handle();
    *shared.runtime.lock() = Some(handle.clone());
    println!(
        "[monitor] running: {} (stop with Ctrl-C{})",
        if settings.simulate && (modules.web_sim || modules.db_sim) {
            format!(
                "simulated {} every {}ms, error rate {}",
                match (modules.web_sim, modules.db_sim) {
                    (true, true) => "web + db",
                    (true, false) => "web",
                    _ => "db",
                },
                settings.interval.as_millis(),
                settings.error_rate
            )
        } else {
            "no simulated services".to_owned()
        },
        match settings.duration {
            Some(d) => format!(", or after {}s", d.as_secs_f64()),
            None => String::new(),
        }
    );
    let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let timer = settings.duration.map(|d| {
        let h = handle.clone();
        let fired = fired.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            fired.store(true, Ordering::SeqCst);
            // Stop first: a closed stdout (`| head`) must not keep it running.
            h.shutdown();
            say("[monitor] stopping: --duration elapsed");
        })
    });
    let view = match settings.tui {
        true if tui::possible() => Some(tui::Tui::start(
            shared.clone(),
            bus.clone(),
            handle.clone(),
            web_url,
        )?),
        true => {
            eprintln!("[monitor] --tui needs a terminal on stdout: showing plain lines instead");
            None
        }
        false => None,
    };
    let started = Instant::now();
    let result = rt.run().await;
    let by_view = match view {
        Some(v) => v.finish().await,
        None => None,
    };
    if let Some(t) = timer {
        if fired.load(Ordering::SeqCst) {
            // Its line comes before the last one (it may still be printing).
            let _ = t.await;
        } else {
            t.abort();
        }
    }
    *shared.runtime.lock() = None;
    let stats = bus.stats();
    bus.close();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            if let Some(r) = e.report() {
                for m in &r.modules {
                    eprintln!("[monitor] module {}: {}", m.name, m.state);
                }
            }
            return Err(anyhow::anyhow!("the monitor stopped: {e}"));
        }
    };
    let why = match &report.reason {
        StopReason::Requested if by_view.is_some() => by_view.unwrap_or_default().to_owned(),
        StopReason::Requested if fired.load(Ordering::SeqCst) => "--duration elapsed".to_owned(),
        other => other.to_string(),
    };
    say(&format!(
        "[monitor] stopped after {:.1}s ({why}): {} events published, {} missed by the lossy dashboard, {} via the API{}",
        started.elapsed().as_secs_f64(),
        stats.published,
        stats.dropped,
        shared.ingested.load(Ordering::Relaxed),
        if report.aborted.is_empty() {
            String::new()
        } else {
            format!("; aborted at the deadline: {}", report.aborted.join(", "))
        }
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty one-second summary stamped `ms`.
    fn at(ms: u64) -> dashboard::Summary {
        let mut s = dashboard::Aggregator::default().tick(1.0);
        s.at_ms = ms;
        s
    }

    #[test]
    fn past_summaries_go_into_the_history_in_time_order() {
        let shared = Shared::new(&Settings::resolve(&MonitorArgs::default()).unwrap());
        shared.push_summary(at(10_000));
        shared.push_past_summary(at(8_000));
        shared.push_past_summary(at(3_000));
        // A past second that ends after the first live tick stays before it.
        shared.push_past_summary(at(10_500));
        let order: Vec<u64> = shared.summaries.lock().iter().map(|s| s.at_ms).collect();
        assert_eq!(order, vec![3_000, 8_000, 10_500, 10_000]);
        assert_eq!(shared.latest().unwrap().at_ms, 10_000);
    }

    /// After a restart the replayed seconds come before any live summary:
    /// they stay in time order (each new one was put before the newest).
    #[test]
    fn past_summaries_before_any_live_one_stay_in_time_order() {
        let shared = Shared::new(&Settings::resolve(&MonitorArgs::default()).unwrap());
        for ms in [1_000, 2_000, 3_000, 4_000] {
            shared.push_past_summary(at(ms));
        }
        shared.push_summary(at(4_600));
        let order: Vec<u64> = shared.summaries.lock().iter().map(|s| s.at_ms).collect();
        assert_eq!(order, vec![1_000, 2_000, 3_000, 4_000, 4_600]);
    }
}
