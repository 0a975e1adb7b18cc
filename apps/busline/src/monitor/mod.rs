//! `busline monitor`: the live metrics monitor.
//!
//! Modules on one bus of [`Metric`]s:
//!
//! | module | subscribes | policy | does |
//! | --- | --- | --- | --- |
//! | `web-sim`, `db-sim` | — | — | publish simulated requests, queries and errors |
//! | `logger` | `metrics.>` | lossless | writes every metric (stdout or JSON Lines) |
//! | `dashboard` | `metrics.>` | lossy | prints a 1 s summary; feeds the web page |
//! | `alerter` | `metrics.*.error` | lossless | errors/min over a threshold → `[ALERT]`, webhook |
//! | `web` | — | — | the page, SSE, `/api/events` (publishes as `api`), `/metrics` |
//!
//! ## Start and stop
//!
//! Subscribers start first, and the publishers only once the logger is
//! subscribed, so the log holds every metric from the first. On stop
//! (`--duration`, Ctrl-C) the publishers stop first, then the others; the
//! logger writes everything queued for it before it exits.

pub mod alerter;
pub mod config;
pub mod dashboard;
pub mod ingest;
pub mod logger;
pub mod metric;
pub mod publishers;
pub mod web;
pub mod webhook;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use busline::Bus;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

use alerter::AlertRecord;
pub use config::MonitorArgs;
use config::Settings;
use dashboard::Summary;
use metric::Metric;
use webhook::Webhook;

/// What a module's `run` returns.
pub type ModuleResult = Result<(), Box<dyn std::error::Error + Send + Sync + 'static>>;

/// What a module runs with: the bus and the stop signal.
#[derive(Clone)]
pub struct Ctx {
    bus: Bus<Metric>,
    stop: watch::Receiver<bool>,
}

impl Ctx {
    /// The bus.
    pub fn bus(&self) -> &Bus<Metric> {
        &self.bus
    }

    /// Completes when the module is asked to stop.
    pub async fn shutdown_requested(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// How many seconds of summaries the page gets when it connects.
pub const HISTORY: usize = 300;

/// An error metric, for the page's "recent errors" list.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorLine {
    /// When the dashboard saw it, Unix milliseconds.
    pub at_ms: u64,
    /// The failing service.
    pub source: String,
    /// Its message.
    pub message: String,
}

/// A module's state, for the page.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleInfo {
    /// Its name.
    pub name: String,
    /// `running`, `stopped`, `failed`, ….
    pub state: String,
    /// Restarts so far.
    pub restarts: u32,
    /// The last error.
    pub last_error: Option<String>,
}

/// State shared by the dashboard, alerter and web modules.
pub struct Shared {
    started: Instant,
    threshold: u64,
    settings_json: serde_json::Value,
    summaries: Mutex<VecDeque<Arc<Summary>>>,
    alerts: Mutex<VecDeque<AlertRecord>>,
    errors: Mutex<VecDeque<ErrorLine>>,
    modules: Mutex<Vec<ModuleInfo>>,
    webhook: Mutex<Option<Webhook>>,
    alert_rate: AtomicU64,
    firing: AtomicBool,
    /// Events accepted by `POST /api/events`.
    pub ingested: AtomicU64,
    /// Requests to `POST /api/events` refused.
    pub rejected: AtomicU64,
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
            }),
            summaries: Mutex::new(VecDeque::with_capacity(HISTORY)),
            alerts: Mutex::new(VecDeque::new()),
            errors: Mutex::new(VecDeque::new()),
            modules: Mutex::new(Vec::new()),
            webhook: Mutex::new(None),
            alert_rate: AtomicU64::new(0),
            firing: AtomicBool::new(false),
            ingested: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
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
        }
        self.bump();
    }

    /// An error metric seen by the dashboard.
    pub fn push_error(&self, source: &str, message: &str) {
        let mut q = self.errors.lock();
        if q.len() == 20 {
            q.pop_front();
        }
        q.push_back(ErrorLine {
            at_ms: unix_ms(),
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

    fn set_module(&self, name: &str, state: &str, error: Option<String>) {
        let mut m = self.modules.lock();
        match m.iter_mut().find(|m| m.name == name) {
            Some(info) => {
                info.state = state.to_owned();
                if error.is_some() {
                    info.last_error = error;
                }
            }
            None => m.push(ModuleInfo {
                name: name.to_owned(),
                state: state.to_owned(),
                restarts: 0,
                last_error: error,
            }),
        }
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
        metrics::gauge!("busline_monitor_uptime_seconds").set(self.started.elapsed().as_secs_f64());
        for m in self.modules.lock().iter() {
            metrics::gauge!("busline_module_running", "module" => m.name.clone())
                .set(if m.state == "running" { 1.0 } else { 0.0 });
        }
        if let Some(w) = &*self.webhook.lock() {
            let s = w.snapshot();
            metrics::counter!("busline_monitor_webhook_delivered_total").absolute(s.delivered);
            metrics::counter!("busline_monitor_webhook_failed_total").absolute(s.failed);
            metrics::counter!("busline_monitor_webhook_dropped_total").absolute(s.dropped);
            metrics::counter!("busline_monitor_webhook_rejected_total").absolute(s.rejected);
        }
    }

    /// Everything the page shows, as JSON; `history` adds the last summaries.
    pub fn snapshot(&self, bus: &Bus<Metric>, history: bool) -> serde_json::Value {
        let summaries = self.summaries.lock();
        let alerts: Vec<AlertRecord> = self.alerts.lock().iter().rev().take(50).cloned().collect();
        serde_json::json!({
            "now_ms": unix_ms(),
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "summary": summaries.back(),
            "history": if history { serde_json::to_value(&*summaries).unwrap_or_default() } else { serde_json::Value::Null },
            "ingested": self.ingested.load(Ordering::Relaxed),
            "rejected": self.rejected.load(Ordering::Relaxed),
            "alert": {
                "threshold": self.threshold,
                "rate": self.alert_rate.load(Ordering::Relaxed),
                "firing": self.firing.load(Ordering::Relaxed),
            },
            "alerts": alerts,
            "recent_errors": self.errors.lock().iter().rev().cloned().collect::<Vec<_>>(),
            "bus": bus.stats(),
            "modules": &*self.modules.lock(),
            "webhook": self.webhook.lock().as_ref().map(Webhook::snapshot),
            "settings": self.settings_json,
        })
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `busline monitor`.
pub fn run(args: MonitorArgs) -> Result<()> {
    let settings = Settings::resolve(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("busline-monitor")
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(run_async(settings))
}

/// A running module: its stop signal and task.
struct Running {
    name: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn spawn<F, Fut>(bus: &Bus<Metric>, shared: &Arc<Shared>, name: &str, f: F) -> Running
where
    F: FnOnce(Ctx) -> Fut,
    Fut: std::future::Future<Output = ModuleResult> + Send + 'static,
{
    let (stop, rx) = watch::channel(false);
    let ctx = Ctx {
        bus: bus.clone(),
        stop: rx,
    };
    shared.set_module(name, "running", None);
    let fut = f(ctx);
    let shared2 = shared.clone();
    let name2 = name.to_owned();
    let task = tokio::spawn(async move {
        match fut.await {
            Ok(()) => shared2.set_module(&name2, "stopped", None),
            Err(e) => {
                eprintln!("[monitor] module {name2} failed: {e}");
                shared2.set_module(&name2, "failed", Some(e.to_string()));
            }
        }
    });
    Running {
        name: name.to_owned(),
        stop,
        task,
    }
}

async fn stop_all(group: Vec<Running>) {
    for m in &group {
        m.stop.send(true).ok();
    }
    for m in group {
        if tokio::time::timeout(Duration::from_secs(5), m.task)
            .await
            .is_err()
        {
            eprintln!("[monitor] module {} did not stop within 5s", m.name);
        }
    }
}

async fn run_async(settings: Settings) -> Result<()> {
    let prom = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the Prometheus recorder")?;
    let bus: Bus<Metric> = Bus::new();
    let shared = Arc::new(Shared::new(&settings));

    let web = match settings.web {
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

    let mut consumers = Vec::new();
    let sink = match &settings.log_file {
        Some(p) => logger::Sink::File(p.clone()),
        None => logger::Sink::Stdout,
    };
    let mut logger = logger::Logger::new(sink);
    consumers.push(spawn(&bus, &shared, "logger", |ctx| async move {
        logger.run(ctx).await
    }));
    let mut dashboard = dashboard::Dashboard::new(shared.clone(), Duration::from_secs(1));
    consumers.push(spawn(&bus, &shared, "dashboard", |ctx| async move {
        dashboard.run(ctx).await
    }));
    let hook = settings.alert_webhook.clone().map(Webhook::start);
    *shared.webhook.lock() = hook.clone();
    let mut alerter = alerter::Alerter::new(settings.alert_threshold, shared.clone(), hook);
    consumers.push(spawn(&bus, &shared, "alerter", |ctx| async move {
        alerter.run(ctx).await
    }));
    // Publishers start once the subscribers are in place.
    wait_subscribed(&bus, &["logger", "dashboard", "alerter"]).await;

    if let Some(mut w) = web {
        println!("[web] dashboard on {}", w.url());
        consumers.push(spawn(&bus, &shared, "web", |ctx| async move {
            w.run(ctx).await
        }));
    }
    let mut publishers = Vec::new();
    if settings.simulate {
        for service in [publishers::Service::Web, publishers::Service::Db] {
            let mut sim =
                publishers::Simulator::new(service, settings.interval, settings.error_rate);
            publishers.push(spawn(&bus, &shared, service.name(), |ctx| async move {
                sim.run(ctx).await
            }));
        }
    }
    println!(
        "[monitor] running: {} (stop with Ctrl-C{})",
        if settings.simulate {
            format!(
                "simulated web + db every {}ms, error rate {}",
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

    let reason = tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = async {
            match settings.duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        } => "--duration elapsed",
    };
    println!("[monitor] stopping ({reason})");
    stop_all(publishers).await;
    stop_all(consumers).await;
    let stats = bus.stats();
    bus.close();
    println!(
        "[monitor] stopped: {} events published, {} dropped by lossy subscribers, {} via the API",
        stats.published,
        stats.dropped,
        shared.ingested.load(Ordering::Relaxed)
    );
    Ok(())
}

async fn wait_subscribed(bus: &Bus<Metric>, names: &[&str]) {
    for _ in 0..500 {
        let stats = bus.stats();
        if names.iter().all(|n| stats.subscriber(n).is_some()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
