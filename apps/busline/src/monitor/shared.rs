//! The state the dashboard, the series store, the alerter, the web page and
//! the terminal view share: summaries, series, alerts, ingest counters.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use busline::{Bus, ModuleStatus, RuntimeHandle};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

use super::alert::AlertRecord;
use super::config::Settings;
use super::metric::Metric;
use super::summary::Summary;
use super::webhook::Webhook;
use super::{ingest_status, otlp, rule_state, sample, series};

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
    pub series_view: Arc<series::Published>,
    /// OTLP's cumulative series (the web route and `--otlp` share them).
    pub otlp: Arc<otlp::Receiver>,
    updates: watch::Sender<u64>,
}

impl Shared {
    pub(super) fn new(settings: &Settings) -> Shared {
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
            series_view: Arc::default(),
            otlp: Arc::default(),
            updates: watch::channel(0).0,
        }
    }

    /// The webhook alerts go to, once started.
    pub(super) fn set_webhook(&self, hook: Option<Webhook>) {
        *self.webhook.lock() = hook;
    }

    /// The running runtime's handle (for module states), or none once it
    /// stopped.
    pub(super) fn set_runtime(&self, handle: Option<RuntimeHandle>) {
        *self.runtime.lock() = handle;
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

    /// The newest view of every series, if the `series` module runs.
    pub fn series(&self) -> Option<Arc<series::StoreView>> {
        self.series_view.get()
    }

    /// Events the series store missed, in all.
    pub fn series_missed_total(&self) -> u64 {
        self.series_view.missed_total()
    }

    /// What the OTLP routes need: the cumulative series and the counters.
    pub fn otlp_intake(&self) -> otlp::http::Intake {
        otlp::http::Intake {
            receiver: self.otlp.clone(),
            ingest: self.ingest.clone(),
        }
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

    /// The default rule's current errors per minute (as the alerter last
    /// computed it).
    #[cfg(test)]
    pub fn alert_rate(&self) -> u64 {
        self.alert_rate.load(Ordering::Relaxed)
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
                "missed": self.series_view.missed_total(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::MonitorArgs;

    /// An empty one-second summary stamped `ms`.
    fn at(ms: u64) -> Summary {
        let mut s = super::super::summary::Aggregator::default().tick(1.0);
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
