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
use busline::{Bus, ModuleStatus, Runtime, RuntimeHandle, StopReason};
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
    /// When the dashboard saw it, Unix milliseconds.
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
    alerts: Mutex<VecDeque<AlertRecord>>,
    errors: Mutex<VecDeque<ErrorLine>>,
    runtime: Mutex<Option<RuntimeHandle>>,
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
            runtime: Mutex::new(None),
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

    /// The newest summary.
    pub fn latest(&self) -> Option<Arc<Summary>> {
        self.summaries.lock().back().cloned()
    }

    /// The alert history, oldest first.
    pub fn alerts(&self) -> Vec<AlertRecord> {
        self.alerts.lock().iter().cloned().collect()
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
        let mut alerts = self.alerts();
        alerts.reverse();
        alerts.truncate(50);
        serde_json::json!({
            "now_ms": unix_ms(),
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "summary": self.latest(),
            "history": history,
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
            "modules": modules,
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

async fn run_async(settings: Settings) -> Result<()> {
    let prom = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the Prometheus recorder")?;
    let bus: Bus<Metric> = Bus::new();
    let shared = Arc::new(Shared::new(&settings));

    // Bind first: a busy port is an error before anything starts.
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
    let hook = match &settings.alert_webhook {
        Some(url) => Some(Webhook::start(url.clone())?),
        None => None,
    };
    *shared.webhook.lock() = hook.clone();

    // Consumers first: the runtime starts modules in this order (each once
    // the one before is subscribed) and stops them in reverse, so the
    // publishers stop first and the logger drains last.
    let mut rt = Runtime::new(bus.clone());
    let sink = match &settings.log_file {
        Some(p) => logger::Sink::File(p.clone()),
        None => logger::Sink::Stdout,
    };
    rt.add(logger::Logger::new(sink));
    rt.add(dashboard::Dashboard::new(
        shared.clone(),
        Duration::from_secs(1),
    ));
    rt.add(alerter::Alerter::new(
        settings.alert_threshold,
        shared.clone(),
        hook,
    ));
    if let Some(w) = web {
        println!("[web] dashboard on {}", w.url());
        rt.add(w);
    }
    if settings.simulate {
        for service in [publishers::Service::Web, publishers::Service::Db] {
            rt.add(publishers::Simulator::new(
                service,
                settings.interval,
                settings.error_rate,
            ));
        }
    }
    let handle = rt.handle();
    *shared.runtime.lock() = Some(handle.clone());
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
    if let Some(d) = settings.duration {
        let h = handle.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            println!("[monitor] stopping: --duration elapsed");
            h.shutdown();
        });
    }
    let started = Instant::now();
    let result = rt.run().await;
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
        StopReason::Requested => "--duration elapsed".to_owned(),
        other => other.to_string(),
    };
    println!(
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
    );
    Ok(())
}
