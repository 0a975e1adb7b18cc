//! Alert delivery to a webhook: a queue, retry with backoff, a circuit breaker.
//!
//! [`Webhook::notify`] never waits: it puts the alert on a small queue (a full
//! queue drops it and counts it as `dropped`). A worker task POSTs each alert
//! as JSON, retrying failed attempts with exponential backoff and jitter.
//! After [`BREAKER_FAILURES`] deliveries in a row fail, the breaker opens:
//! alerts are not sent (counted as `rejected`) until [`BREAKER_COOL_DOWN`]
//! has passed, then one trial delivery decides whether it closes again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::alerter::AlertRecord;

/// Alerts waiting for delivery before new ones are dropped.
pub const QUEUE: usize = 64;
/// Attempts per alert (the first and the retries).
pub const ATTEMPTS: u32 = 3;
/// Time allowed for one attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Failed deliveries in a row that open the breaker.
pub const BREAKER_FAILURES: u32 = 3;
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
    /// The breaker: `closed`, `open` or `half_open`.
    pub breaker: Mutex<&'static str>,
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
}

impl Webhook {
    /// Starts the delivery worker for `url` on the current runtime.
    pub fn start(url: String) -> Webhook {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(WebhookStats::default());
        *stats.breaker.lock() = "closed";
        tokio::spawn(worker(url.clone(), rx, stats.clone()));
        Webhook { url, tx, stats }
    }

    /// Queues an alert for delivery; never waits.
    pub fn notify(&self, alert: &AlertRecord) {
        if self.tx.try_send(alert.clone()).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            eprintln!(
                "[alerter] webhook queue full: alert not sent to {}",
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
            breaker: *s.breaker.lock(),
            last_error: s.last_error.lock().clone(),
        }
    }
}

/// The circuit breaker's state machine (time is passed in, for tests).
#[derive(Debug, Clone)]
pub struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            failures: 0,
            open_until: None,
        }
    }
}

impl Breaker {
    /// Whether a delivery may be tried at `now`.
    pub fn allow(&self, now: Instant) -> bool {
        self.open_until.is_none_or(|t| now >= t)
    }

    /// `closed`, `open` or `half_open` at `now`.
    pub fn state(&self, now: Instant) -> &'static str {
        match self.open_until {
            None => "closed",
            Some(t) if now < t => "open",
            Some(_) => "half_open",
        }
    }

    /// Records the outcome of a delivery.
    pub fn record(&mut self, ok: bool, now: Instant) {
        if ok {
            self.failures = 0;
            self.open_until = None;
        } else {
            self.failures += 1;
            // A failed trial (half-open) or too many failures: open (again).
            if self.open_until.is_some() || self.failures >= BREAKER_FAILURES {
                self.open_until = Some(now + BREAKER_COOL_DOWN);
            }
        }
    }
}

async fn worker(url: String, mut rx: mpsc::Receiver<AlertRecord>, stats: Arc<WebhookStats>) {
    let client = match reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            *stats.last_error.lock() = Some(format!("cannot build an HTTP client: {e}"));
            return;
        }
    };
    let mut breaker = Breaker::default();
    while let Some(alert) = rx.recv().await {
        let now = Instant::now();
        if !breaker.allow(now) {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let result = deliver(&client, &url, &alert).await;
        breaker.record(result.is_ok(), Instant::now());
        *stats.breaker.lock() = breaker.state(Instant::now());
        match result {
            Ok(()) => {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("[alerter] webhook {url}: {e}");
                *stats.last_error.lock() = Some(e);
            }
        }
    }
}

/// One alert, with retries.
async fn deliver(client: &reqwest::Client, url: &str, alert: &AlertRecord) -> Result<(), String> {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            let base = 200u64 << (attempt - 1);
            let jitter = rand::random_range(0..=base / 2);
            tokio::time::sleep(Duration::from_millis(base + jitter)).await;
        }
        match client.post(url).json(alert).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("answered {}", r.status()),
            Err(e) => last = format!("request failed: {e}"),
        }
    }
    Err(format!("{last} (after {ATTEMPTS} attempts)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_and_recovers() {
        let mut b = Breaker::default();
        let now = Instant::now();
        for _ in 0..BREAKER_FAILURES - 1 {
            b.record(false, now);
            assert!(b.allow(now));
        }
        b.record(false, now);
        assert!(!b.allow(now));
        assert_eq!(b.state(now), "open");
        let later = now + BREAKER_COOL_DOWN;
        assert_eq!(b.state(later), "half_open");
        assert!(b.allow(later));
        b.record(false, later); // the trial fails: open again
        assert!(!b.allow(later));
        let later = later + BREAKER_COOL_DOWN;
        b.record(true, later);
        assert_eq!(b.state(later), "closed");
    }
}
