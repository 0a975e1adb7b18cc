//! The alerter: errors per minute over a threshold.
//!
//! It counts errors (`metrics.*.error`, lossless: it never misses one) in a
//! sliding one-minute window and compares the count with the threshold.
//!
//! ## Once per crossing
//!
//! An alert fires when the rate goes *above* the threshold, and not again
//! while it stays there; when the rate comes back to the threshold or below,
//! one "back to normal" line is printed. So a storm of errors gives exactly
//! two lines, however long it lasts.
//!
//! ```text
//! [ALERT] Error rate: 12/min — threshold exceeded! (threshold 10/min)
//! [ALERT] Error rate back to normal: 8/min
//! ```
//!
//! ## Event time
//!
//! An error counts at the time it happened (its envelope's `timestamp`), not
//! when the alerter got it: errors replayed from the event log after a
//! restart (see [the monitor](super)) fill the window as they were, so old
//! errors do not all count as "now" and errors older than a minute do not
//! count at all. A timestamp in the future counts as now.
//!
//! ## Webhook
//!
//! With `--alert-webhook URL` each transition is also POSTed as JSON. The
//! alerter hands it to a queue and moves on: delivery (with retry, and a
//! circuit breaker that stops trying a dead endpoint for a while) happens on
//! its own task, so a slow or dead webhook never delays an alert or the bus.
//! A full queue drops the notification and counts it.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use busline::stream::SlidingWindow;
use busline::{BoxError, Context, Module, RecvError, StartAt};
use serde::Serialize;
use tokio::time::Instant;

use super::metric::Metric;
use super::webhook::Webhook;
use super::Shared;

/// A change of alert state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Transition {
    /// The rate went above the threshold.
    Firing {
        /// Errors in the last minute.
        rate: u64,
        /// The threshold.
        threshold: u64,
    },
    /// The rate came back to the threshold or below.
    Resolved {
        /// Errors in the last minute.
        rate: u64,
        /// The threshold.
        threshold: u64,
    },
}

impl Transition {
    /// The line printed for it.
    pub fn text(&self) -> String {
        match self {
            Transition::Firing { rate, threshold } => {
                format!("[ALERT] Error rate: {rate}/min — threshold exceeded! (threshold {threshold}/min)")
            }
            Transition::Resolved { rate, .. } => {
                format!("[ALERT] Error rate back to normal: {rate}/min")
            }
        }
    }
}

/// The alert state machine: fires once per crossing.
#[derive(Debug, Clone)]
pub struct AlertRule {
    threshold: u64,
    firing: bool,
}

impl AlertRule {
    /// Alerts when the rate exceeds `threshold`.
    pub fn new(threshold: u64) -> Self {
        AlertRule {
            threshold,
            firing: false,
        }
    }

    /// Whether the alert is active.
    pub fn is_firing(&self) -> bool {
        self.firing
    }

    /// Feeds the current rate; returns the transition, if this is one.
    pub fn evaluate(&mut self, rate: u64) -> Option<Transition> {
        let threshold = self.threshold;
        match (self.firing, rate > threshold) {
            (false, true) => {
                self.firing = true;
                Some(Transition::Firing { rate, threshold })
            }
            (true, false) => {
                self.firing = false;
                Some(Transition::Resolved { rate, threshold })
            }
            _ => None,
        }
    }
}

/// One line of the alert history (the web page shows them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRecord {
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub transition: Transition,
    /// The printed line.
    pub text: String,
}

/// The span of the alerter's window: errors per minute.
pub const ALERT_WINDOW: Duration = Duration::from_secs(60);

/// Counts `at` (an event's timestamp) into `window` at the matching
/// [`Instant`]; returns false when it is already older than the window.
pub fn record_event_time(window: &mut SlidingWindow, at: SystemTime) -> bool {
    let age = SystemTime::now().duration_since(at).unwrap_or_default();
    if age >= window.span() {
        return false;
    }
    let now = Instant::now();
    window.record_at(now.checked_sub(age).unwrap_or(now), 1.0);
    true
}

/// The alerter module.
#[derive(Clone)]
pub struct Alerter {
    threshold: u64,
    shared: Arc<Shared>,
    webhook: Option<Webhook>,
    warm_up: bool,
}

impl Alerter {
    /// An alerter with the given threshold (errors per minute).
    pub fn new(threshold: u64, shared: Arc<Shared>, webhook: Option<Webhook>) -> Self {
        Alerter {
            threshold,
            shared,
            webhook,
            warm_up: false,
        }
    }

    /// Starts with the errors of the last minute in the bus's event store
    /// (the bus must persist `metrics.>`).
    pub fn warm_up(mut self) -> Self {
        self.warm_up = true;
        self
    }

    fn emit(&mut self, t: Transition) {
        let text = t.text();
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}").ok();
            out.flush().ok();
        }
        metrics::counter!("busline_monitor_alerts_total", "state" => match t {
            Transition::Firing { .. } => "firing",
            Transition::Resolved { .. } => "resolved",
        })
        .increment(1);
        let record = AlertRecord {
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            transition: t,
            text,
        };
        if let Some(w) = &self.webhook {
            w.notify(&record);
        }
        self.shared.push_alert(record);
    }
}

/// How long a stopping alerter waits for alerts still on their way to the
/// webhook (retries included), within the module's shutdown deadline.
const WEBHOOK_GRACE: Duration = Duration::from_secs(3);

impl Module<Metric> for Alerter {
    fn name(&self) -> &str {
        "alerter"
    }

    /// Watches errors until shutdown.
    async fn run(&mut self, ctx: Context<Metric>) -> Result<(), BoxError> {
        let mut builder = ctx.subscriber("metrics.*.error").lossless(1024);
        if self.warm_up {
            let since = SystemTime::now()
                .checked_sub(ALERT_WINDOW)
                .unwrap_or(UNIX_EPOCH);
            builder = builder.from(StartAt::Time(since));
        }
        let mut errors = builder.subscribe()?;
        let mut window = SlidingWindow::new(ALERT_WINDOW);
        let mut rule = AlertRule::new(self.threshold);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = ctx.shutdown_requested() => {
                    // Alerts on their way to the webhook get a moment to arrive.
                    if let Some(w) = &self.webhook {
                        w.finish(WEBHOOK_GRACE).await;
                    }
                    return Ok(());
                }
                r = errors.recv() => match r {
                    Ok(env) => {
                        record_event_time(&mut window, env.timestamp);
                        // Everything ready too (a replay after a restart comes
                        // at once): the rule sees the whole minute, not the
                        // first few of it.
                        // (At most a batch: shutdown and the rule get their turn.)
                        for _ in 0..4096 {
                            let Ok(Some(env)) = errors.try_recv() else { break };
                            record_event_time(&mut window, env.timestamp);
                        }
                    }
                    Err(RecvError::Closed) => return Ok(()),
                    Err(e) => return Err(e.into()),
                },
                _ = tick.tick() => {}
            }
            let rate = window.count();
            if let Some(t) = rule.evaluate(rate) {
                self.emit(t);
            }
            self.shared.set_alert_rate(rate, rule.is_firing());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_per_crossing() {
        let mut rule = AlertRule::new(10);
        let seq = [0, 5, 10, 11, 12, 30, 11, 10, 9, 10, 11, 11];
        let got: Vec<_> = seq.iter().filter_map(|&r| rule.evaluate(r)).collect();
        assert_eq!(
            got,
            vec![
                Transition::Firing {
                    rate: 11,
                    threshold: 10
                },
                Transition::Resolved {
                    rate: 10,
                    threshold: 10
                },
                Transition::Firing {
                    rate: 11,
                    threshold: 10
                },
            ]
        );
        assert_eq!(
            got[0].text(),
            "[ALERT] Error rate: 11/min — threshold exceeded! (threshold 10/min)"
        );
        assert_eq!(got[1].text(), "[ALERT] Error rate back to normal: 10/min");
    }

    #[tokio::test(start_paused = true)]
    async fn the_module_fires_once_then_recovers() {
        use super::super::config::{MonitorArgs, Settings};
        use busline::Bus;

        let bus = Bus::<Metric>::new();
        let settings = Settings::resolve(&MonitorArgs::default()).unwrap();
        let shared = Arc::new(Shared::new(&settings));
        let ctx = Context::detached("alerter", bus.clone());
        let stop = ctx.shutdown_token();
        let mut alerter = Alerter::new(10, shared.clone(), None);
        let task = tokio::spawn(async move { alerter.run(ctx).await });
        while bus.stats().subscriber("alerter").is_none() {
            tokio::task::yield_now().await;
        }
        let error = || Metric::Error {
            source: "db".into(),
            message: "down".into(),
        };
        for _ in 0..30 {
            bus.publish(error()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let alerts = shared.alerts();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(
            alerts[0].transition,
            Transition::Firing {
                rate: 11,
                threshold: 10
            }
        );
        // A minute later the errors have left the window: one recovery line.
        tokio::time::sleep(Duration::from_secs(61)).await;
        let alerts = shared.alerts();
        assert_eq!(alerts.len(), 2, "{alerts:?}");
        // (Checked every 250 ms while errors left every 100 ms: at or just below.)
        assert!(
            matches!(alerts[1].transition, Transition::Resolved { rate, .. } if (8..=10).contains(&rate)),
            "{alerts:?}"
        );
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn errors_count_at_their_event_time() {
        let mut w = SlidingWindow::new(ALERT_WINDOW);
        let now = SystemTime::now();
        assert!(!record_event_time(&mut w, now - Duration::from_secs(61)));
        assert!(record_event_time(&mut w, now - Duration::from_secs(50)));
        assert!(record_event_time(&mut w, now - Duration::from_secs(5)));
        assert!(record_event_time(&mut w, now + Duration::from_secs(5)));
        assert_eq!(w.count(), 3);
        // The 50 s old one leaves the window 10 s later, not a minute later.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(w.count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_replays_the_last_minute_at_event_time() {
        use super::super::config::{MonitorArgs, Settings};
        use busline::store::MemoryStore;
        use busline::Bus;

        let bus = Bus::<Metric>::new();
        bus.persist("metrics.>", Arc::new(MemoryStore::new()))
            .unwrap();
        let error = || Metric::Error {
            source: "db".into(),
            message: "down".into(),
        };
        let now = SystemTime::now();
        // 20 errors two minutes ago (too old to count), 4 ten seconds ago.
        for i in 0..24 {
            let ago = if i < 20 { 120 } else { 10 };
            bus.send(
                error()
                    .message("db-sim")
                    .timestamp(now - Duration::from_secs(ago)),
            )
            .await
            .unwrap();
        }
        let settings = Settings::resolve(&MonitorArgs::default()).unwrap();
        let shared = Arc::new(Shared::new(&settings));
        let ctx = Context::detached("alerter", bus.clone());
        let stop = ctx.shutdown_token();
        let mut alerter = Alerter::new(3, shared.clone(), None).warm_up();
        let task = tokio::spawn(async move { alerter.run(ctx).await });
        while shared.alert_rate.load(std::sync::atomic::Ordering::Relaxed) < 4 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // The 4 recent ones fire (4 > 3); the old 20 never counted.
        let alerts = shared.alerts();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            shared.alert_rate.load(std::sync::atomic::Ordering::Relaxed),
            4
        );
        // They happened 10 s before the start: gone 50 s after it.
        tokio::time::sleep(Duration::from_secs(46)).await;
        assert_eq!(
            shared.alert_rate.load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        assert_eq!(shared.alerts().len(), 2);
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn storm_then_calm() {
        // 2 errors/s for 30 s, then nothing: one alert, one recovery.
        let mut w = SlidingWindow::new(Duration::from_secs(60));
        let mut rule = AlertRule::new(10);
        let mut seen = Vec::new();
        for step in 0..(200 * 4) {
            if step < 30 * 4 && step % 2 == 0 {
                w.incr();
            }
            if let Some(t) = rule.evaluate(w.count()) {
                seen.push((step / 4, t));
            }
            tokio::time::advance(Duration::from_millis(250)).await;
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(matches!(seen[0].1, Transition::Firing { rate: 11, .. }));
        assert_eq!(seen[0].0, 5); // the 11th error, at 5 s
        assert!(matches!(seen[1].1, Transition::Resolved { rate: 10, .. }));
        // The 11th-last error (at 24.5 s) leaves the window at 84.5 s.
        assert_eq!(seen[1].0, 84);
    }
}
