//! Retry with exponential backoff and jitter, and a cap on attempts.
//!
//! [`RetryLayer::new(max_attempts)`](RetryLayer::new) calls the handler up to
//! `max_attempts` times in all. Between attempts it sleeps (tokio time, so
//! tests run it in paused time):
//!
//! ```text
//!  delay after attempt n = min(initial × multiplier^(n-1), max) × (1 − jitter × r),  r uniform in [0, 1)
//!
//!  initial = 100ms, multiplier = 2, jitter = 0, max_attempts = 4
//!  attempt 1 ✗ --100ms-- attempt 2 ✗ --200ms-- attempt 3 ✗ --400ms-- attempt 4 ✓ → Ok
//!                                                                   attempt 4 ✗ → Err(RetryError { attempts: 4 })
//! ```
//!
//! Jitter spreads retries of many failing handlers apart (no thundering
//! herd); `jitter = 0.5` means each delay is between half and all of the
//! exponential value.
//!
//! ## Giving up
//!
//! After the last attempt (or at once, for an error [`retry_if`](RetryLayer::retry_if)
//! rejects) the call fails with [`RetryError`], which carries the number of
//! attempts made and the last error as its `source`. The
//! [dead-letter layer](super::dead_letter) reads the attempt count from it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::sync::{Arc, atomic::{AtomicU32, Ordering}};
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use busline::middleware::{BoxError, RetryLayer, RetryError};
//!
//! let calls = Arc::new(AtomicU32::new(0));
//! let c = calls.clone();
//! let flaky = tower::service_fn(move |n: u32| {
//!     let c = c.clone();
//!     async move {
//!         // fails twice, then works
//!         if c.fetch_add(1, Ordering::SeqCst) < 2 { Err::<u32, BoxError>("busy".into()) } else { Ok(n * 2) }
//!     }
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(RetryLayer::new(3).backoff(Duration::from_millis(100), 2.0, Duration::from_secs(1)).jitter(0.0))
//!     .service(flaky);
//! let start = tokio::time::Instant::now();
//! assert_eq!(svc.clone().oneshot(21).await.unwrap(), 42); // the last attempt succeeds
//! assert_eq!(start.elapsed(), Duration::from_millis(300)); // 100ms + 200ms
//!
//! calls.store(0, Ordering::SeqCst);
//! let svc = ServiceBuilder::new().layer(RetryLayer::new(2).jitter(0.0)).service(svc.into_inner());
//! let err = svc.oneshot(1).await.unwrap_err();
//! let err = err.downcast_ref::<RetryError>().unwrap();
//! assert_eq!(err.attempts, 2);
//! assert_eq!(err.to_string(), "gave up after 2 attempts: busy");
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tower::{Layer, Service, ServiceExt};

use super::BoxError;

/// The handler still failed after `attempts` attempts; `source` is its last error.
#[derive(Debug, thiserror::Error)]
#[error("gave up after {attempts} attempt{}: {source}", if *.attempts == 1 { "" } else { "s" })]
#[non_exhaustive]
pub struct RetryError {
    /// Attempts made (1 = no retry happened).
    pub attempts: u32,
    /// The last attempt's error.
    #[source]
    pub source: BoxError,
}

type RetryIf = Arc<dyn Fn(&BoxError) -> bool + Send + Sync>;
type OnRetry = Arc<dyn Fn(u32, &BoxError, Duration) + Send + Sync>;

/// Retries a failed call with exponential backoff and jitter; see the [module docs](self).
#[derive(Clone)]
pub struct RetryLayer {
    max_attempts: u32,
    initial: Duration,
    multiplier: f64,
    max_delay: Duration,
    jitter: f64,
    retry_if: Option<RetryIf>,
    on_retry: Option<OnRetry>,
}

impl fmt::Debug for RetryLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("max_attempts", &self.max_attempts)
            .field("initial", &self.initial)
            .field("multiplier", &self.multiplier)
            .field("max_delay", &self.max_delay)
            .field("jitter", &self.jitter)
            .finish_non_exhaustive()
    }
}

impl RetryLayer {
    /// At most `max_attempts` calls in all (at least 1); backoff 100 ms × 2
    /// per attempt up to 10 s, jitter 0.5.
    pub fn new(max_attempts: u32) -> Self {
        RetryLayer {
            max_attempts: max_attempts.max(1),
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max_delay: Duration::from_secs(10),
            jitter: 0.5,
            retry_if: None,
            on_retry: None,
        }
    }

    /// Sets the first delay, the factor applied per attempt (≥ 1) and the largest delay.
    pub fn backoff(mut self, initial: Duration, multiplier: f64, max: Duration) -> Self {
        self.initial = initial;
        self.multiplier = if multiplier.is_finite() {
            multiplier.max(1.0)
        } else {
            1.0
        };
        self.max_delay = max;
        self
    }

    /// Fraction of each delay taken off at random, 0.0 (none) to 1.0.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// Retries only errors for which `f` is true (default: every error).
    pub fn retry_if(mut self, f: impl Fn(&BoxError) -> bool + Send + Sync + 'static) -> Self {
        self.retry_if = Some(Arc::new(f));
        self
    }

    /// Calls `f(attempt, &error, delay)` before each retry: attempt `attempt`
    /// failed with `error`, and the next one starts after `delay` (for logs
    /// and metrics).
    pub fn on_retry(
        mut self,
        f: impl Fn(u32, &BoxError, Duration) + Send + Sync + 'static,
    ) -> Self {
        self.on_retry = Some(Arc::new(f));
        self
    }

    /// The delay before attempt `attempt + 1`, before jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        crate::delay::grown(
            self.initial,
            self.multiplier,
            attempt.saturating_sub(1),
            self.max_delay,
        )
    }

    fn delay(&self, attempt: u32) -> Duration {
        crate::delay::jittered(self.base_delay(attempt), self.jitter)
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            policy: Arc::new(self.clone()),
        }
    }
}

/// The service made by [`RetryLayer`].
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    policy: Arc<RetryLayer>,
}

impl<S> Retry<S> {
    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R> Service<R> for Retry<S>
where
    S: Service<R> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    S::Response: Send,
    R: Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        // The ready service takes the first call; a clone (made ready again)
        // takes the retries.
        let clone = self.inner.clone();
        let mut svc = std::mem::replace(&mut self.inner, clone);
        let policy = self.policy.clone();
        Box::pin(async move {
            let mut attempt = 1;
            let mut result = svc.call(req.clone()).await.map_err(Into::into);
            loop {
                let err = match result {
                    Ok(r) => return Ok(r),
                    Err(e) => e,
                };
                let retryable = policy.retry_if.as_ref().is_none_or(|f| f(&err));
                if attempt >= policy.max_attempts || !retryable {
                    return Err(Box::new(RetryError {
                        attempts: attempt,
                        source: err,
                    }) as BoxError);
                }
                let delay = policy.delay(attempt);
                if let Some(f) = &policy.on_retry {
                    f(attempt, &err, delay);
                }
                tokio::time::sleep(delay).await;
                attempt += 1;
                let ready: Result<(), BoxError> = svc.ready().await.map(drop).map_err(Into::into);
                result = match ready {
                    Ok(()) => svc.call(req.clone()).await.map_err(Into::into),
                    Err(e) => Err(e),
                };
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::time::Instant;
    use tower::ServiceBuilder;

    fn failing_until(
        ok_at: u32,
        calls: Arc<AtomicU32>,
    ) -> impl Service<u32, Response = u32, Error = BoxError, Future = impl Send> + Clone + Send + 'static
    {
        tower::service_fn(move |n: u32| {
            let calls = calls.clone();
            async move {
                let k = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if k >= ok_at {
                    Ok(n)
                } else {
                    Err::<u32, BoxError>(format!("attempt {k} failed").into())
                }
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn succeeds_on_the_last_attempt_after_exponential_delays() {
        let calls = Arc::new(AtomicU32::new(0));
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let s = seen.clone();
        let svc = ServiceBuilder::new()
            .layer(
                RetryLayer::new(4)
                    .backoff(Duration::from_millis(100), 2.0, Duration::from_secs(10))
                    .jitter(0.0)
                    .on_retry(move |n, e, d| s.lock().push((n, e.to_string(), d.as_millis()))),
            )
            .service(failing_until(4, calls.clone()));
        let t0 = Instant::now();
        assert_eq!(svc.oneshot(7).await.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(t0.elapsed(), Duration::from_millis(100 + 200 + 400));
        assert_eq!(
            *seen.lock(),
            vec![
                (1, "attempt 1 failed".to_string(), 100),
                (2, "attempt 2 failed".to_string(), 200),
                (3, "attempt 3 failed".to_string(), 400),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_cap_with_the_last_error() {
        let calls = Arc::new(AtomicU32::new(0));
        let svc = RetryLayer::new(3)
            .jitter(0.0)
            .layer(failing_until(100, calls.clone()));
        let err = svc.oneshot(1).await.unwrap_err();
        let err = err.downcast::<RetryError>().unwrap();
        assert_eq!(err.attempts, 3);
        assert_eq!(err.source.to_string(), "attempt 3 failed");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn delays_are_capped_and_jitter_stays_in_range() {
        let layer =
            RetryLayer::new(10).backoff(Duration::from_millis(100), 10.0, Duration::from_secs(2));
        assert_eq!(layer.base_delay(1), Duration::from_millis(100));
        assert_eq!(layer.base_delay(2), Duration::from_secs(1));
        assert_eq!(layer.base_delay(3), Duration::from_secs(2));
        assert_eq!(layer.base_delay(60), Duration::from_secs(2));
        let jittered = layer.clone().jitter(0.5);
        for _ in 0..200 {
            let d = jittered.delay(2);
            assert!(
                d > Duration::from_millis(500) && d <= Duration::from_secs(1),
                "{d:?}"
            );
        }
        // And a real retry waits within the jittered range.
        let calls = Arc::new(AtomicU32::new(0));
        let svc = jittered.layer(failing_until(2, calls));
        let t0 = Instant::now();
        svc.oneshot(1).await.unwrap();
        let waited = t0.elapsed();
        assert!(
            waited > Duration::from_millis(50) && waited <= Duration::from_millis(100),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn errors_retry_if_rejects_are_not_retried() {
        let calls = Arc::new(AtomicU32::new(0));
        let svc = RetryLayer::new(5)
            .retry_if(|e| !e.to_string().contains("attempt 1"))
            .layer(failing_until(100, calls.clone()));
        let err = svc.oneshot(1).await.unwrap_err();
        assert_eq!(err.downcast_ref::<RetryError>().unwrap().attempts, 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
