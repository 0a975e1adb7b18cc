//! Alert delivery to a webhook: a queue, then busline's retry, circuit breaker
//! and timeout layers (tower) around an HTTP POST.
//!
//! [`Webhook::notify`] never waits: it puts the alert on a small queue (a full
//! queue drops it and counts it as `dropped`). A worker task sends each alert
//! through the stack, outermost first:
//!
//! **retry** ([`ATTEMPTS`], exponential backoff with jitter) ▸ **circuit
//! breaker** (opens after [`BREAKER_FAILURES`] failed attempts in a row, for
//! [`BREAKER_COOL_DOWN`]; then one trial) ▸ **timeout** ([`ATTEMPT_TIMEOUT`]
//! per attempt) ▸ **POST** (JSON, any 2xx is success).
//!
//! While the breaker is open alerts fail fast without touching the network
//! (counted as `rejected`), so a dead webhook costs nothing and never delays
//! the alerter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busline::middleware::{
    BoxError, BreakerConfig, BreakerOpen, CircuitBreaker, RetryLayer, TimeoutLayer,
};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc;
use tower::{Service, ServiceBuilder, ServiceExt};

use super::alert::AlertRecord;

/// Alerts waiting for delivery before new ones are dropped.
pub const QUEUE: usize = 64;
/// Attempts per alert (the first and the retries).
pub const ATTEMPTS: u32 = 3;
/// Time allowed for one attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Failed attempts in a row that open the breaker (two alerts' worth).
pub const BREAKER_FAILURES: u32 = 2 * ATTEMPTS;
/// How long an open breaker refuses deliveries.
pub const BREAKER_COOL_DOWN: Duration = Duration::from_secs(30);

/// Delivery counters and the breaker's state, for the page and `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Alerts delivered.
    pub delivered: AtomicU64,
    /// Alerts that failed every attempt.
    pub failed: AtomicU64,
    /// Alerts dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Alerts not sent because the breaker was open.
    pub rejected: AtomicU64,
    /// Alerts queued or being sent (retries included).
    pub pending: AtomicU64,
    /// The last failure, if any.
    pub last_error: Mutex<Option<String>>,
}

/// A snapshot of [`WebhookStats`].
#[derive(Debug, Clone, Serialize)]
pub struct WebhookSnapshot {
    /// The URL.
    pub url: String,
    /// Alerts delivered.
    pub delivered: u64,
    /// Alerts that failed every attempt.
    pub failed: u64,
    /// Alerts dropped because the queue was full.
    pub dropped: u64,
    /// Alerts not sent because the breaker was open.
    pub rejected: u64,
    /// The breaker's state.
    pub breaker: &'static str,
    /// The last failure.
    pub last_error: Option<String>,
}

/// The alerter's handle on the webhook worker.
#[derive(Debug, Clone)]
pub struct Webhook {
    url: String,
    tx: mpsc::Sender<AlertRecord>,
    stats: Arc<WebhookStats>,
    breaker: CircuitBreaker,
}

impl Webhook {
    /// Starts the delivery worker POSTing to `url`, on the current runtime.
    pub fn start(url: String) -> anyhow::Result<Webhook> {
        let client = reqwest::Client::builder().build()?;
        let target = url.clone();
        let post = tower::service_fn(move |alert: AlertRecord| {
            let req = client.post(&target).json(&alert);
            async move {
                let resp = req.send().await?;
                let status = resp.status();
                if status.is_success() {
                    Ok(())
                } else {
                    Err::<(), BoxError>(format!("the webhook answered {status}").into())
                }
            }
        });
        Ok(Webhook::with_service(url, post))
    }

    /// Starts the worker with any sender in place of the HTTP POST (for tests).
    pub fn with_service<S>(url: String, send: S) -> Webhook
    where
        S: Service<AlertRecord, Response = (), Error = BoxError> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        let breaker = CircuitBreaker::new(
            "webhook",
            BreakerConfig {
                consecutive_failures: BREAKER_FAILURES,
                failure_rate: None,
                cool_down: BREAKER_COOL_DOWN,
                ..BreakerConfig::default()
            },
        );
        let stack = ServiceBuilder::new()
            .layer(
                RetryLayer::new(ATTEMPTS)
                    .backoff(Duration::from_millis(200), 2.0, Duration::from_secs(2))
                    .jitter(0.5)
                    .retry_if(|e| !is_breaker_open(e)),
            )
            .layer(breaker.clone())
            .layer(TimeoutLayer::new(ATTEMPT_TIMEOUT))
            .service(send);
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(WebhookStats::default());
        tokio::spawn(worker(url.clone(), rx, stats.clone(), stack));
        Webhook {
            url,
            tx,
            stats,
            breaker,
        }
    }

    /// Queues an alert for delivery; never waits.
    pub fn notify(&self, alert: &AlertRecord) {
        self.stats.pending.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(alert.clone()).is_err() {
            self.stats.pending.fetch_sub(1, Ordering::Relaxed);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "[alerter] webhook queue full: alert not sent to {}",
                self.url
            );
        }
    }

    /// At shutdown: waits up to `grace` for alerts still being sent or
    /// retried, then reports (and counts as dropped) any that are not done.
    pub async fn finish(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        while self.stats.pending.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.stats.pending.swap(0, Ordering::Relaxed);
        if left > 0 {
            self.stats.dropped.fetch_add(left, Ordering::Relaxed);
            eprintln!(
                "[alerter] webhook {}: {left} alert(s) not delivered: the monitor stopped while sending them",
                self.url
            );
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> WebhookSnapshot {
        let s = &self.stats;
        WebhookSnapshot {
            url: self.url.clone(),
            delivered: s.delivered.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
            breaker: self.breaker.state().as_str(),
            last_error: s.last_error.lock().clone(),
        }
    }
}

/// Whether `e` (or what it wraps) is a call refused by an open breaker.
fn is_breaker_open(e: &BoxError) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
    while let Some(err) = cur {
        if err.is::<BreakerOpen>() {
            return true;
        }
        cur = err.source();
    }
    false
}

async fn worker<S>(
    url: String,
    mut rx: mpsc::Receiver<AlertRecord>,
    stats: Arc<WebhookStats>,
    mut stack: S,
) where
    S: Service<AlertRecord, Response = (), Error = BoxError>,
{
    while let Some(alert) = rx.recv().await {
        let result = match stack.ready().await {
            Ok(svc) => svc.call(alert).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if is_breaker_open(&e) => {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("[alerter] webhook {url}: {e}");
                *stats.last_error.lock() = Some(e.to_string());
            }
        }
        // Never below zero: `finish` may have given up on it already.
        let _ = stats
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    use super::super::alert::Transition;

    fn alert() -> AlertRecord {
        AlertRecord {
            at_ms: 0,
            rule: "error-rate".into(),
            expr: "count(error [1m]) > 10".into(),
            transition: Transition::Firing {
                rate: 11,
                threshold: 10,
            },
            text: "x".into(),
        }
    }

    async fn settle(w: &Webhook, n: u64) -> WebhookSnapshot {
        loop {
            let s = w.snapshot();
            if s.delivered + s.failed + s.rejected + s.dropped >= n {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_webhook_opens_the_breaker() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let dead = tower::service_fn(move |_: AlertRecord| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), BoxError>("connection refused".into()) }
        });
        let w = Webhook::with_service("http://dead.invalid/".into(), dead);
        // Two alerts fail every attempt; that opens the breaker.
        w.notify(&alert());
        w.notify(&alert());
        let s = settle(&w, 2).await;
        assert_eq!((s.failed, s.breaker), (2, "open"), "{s:?}");
        assert_eq!(calls.load(Ordering::SeqCst), BREAKER_FAILURES);
        // While open, alerts fail fast: the webhook is not called.
        w.notify(&alert());
        let s = settle(&w, 3).await;
        assert_eq!(s.rejected, 1, "{s:?}");
        assert_eq!(calls.load(Ordering::SeqCst), BREAKER_FAILURES);
    }

    #[tokio::test(start_paused = true)]
    async fn a_flaky_webhook_is_retried() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let flaky = tower::service_fn(move |_: AlertRecord| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err::<(), BoxError>("503".into())
                } else {
                    Ok(())
                }
            }
        });
        let w = Webhook::with_service("http://flaky.invalid/".into(), flaky);
        w.notify(&alert());
        let s = settle(&w, 1).await;
        assert_eq!(
            (s.delivered, s.failed, s.breaker),
            (1, 0, "closed"),
            "{s:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn notify_never_waits() {
        // A webhook that never answers: the queue fills, then alerts are dropped and counted.
        let hang = tower::service_fn(|_: AlertRecord| async {
            std::future::pending::<()>().await;
            Ok::<(), BoxError>(())
        });
        let w = Webhook::with_service("http://hang.invalid/".into(), hang);
        for _ in 0..QUEUE + 10 {
            w.notify(&alert()); // returns at once
        }
        assert!(w.snapshot().dropped >= 9, "{:?}", w.snapshot());
    }
}
