//! Timeout per handler call: tower's own [`TimeoutLayer`], re-exported.
//!
//! A call that takes longer than the limit is dropped (cancelled at its next
//! `.await`) and fails with [`Elapsed`]. It uses tokio's clock, so tests run
//! it in paused time. Put it *inside* the retry layer so each attempt gets its
//! own limit, and inside the breaker so timeouts count as failures:
//!
//! ```text
//!  ServiceBuilder: dead letters ▸ retry ▸ breaker ▸ timeout ▸ handler
//!  attempt 1  |--------- 1s ---------X Elapsed   (counted by the breaker)
//!  attempt 2                            |---- ok ----|
//! ```
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use busline::middleware::{BoxError, Elapsed, TimeoutLayer};
//!
//! let slow = tower::service_fn(|secs: u64| async move {
//!     tokio::time::sleep(Duration::from_secs(secs)).await;
//!     Ok::<_, BoxError>(secs)
//! });
//! let svc = ServiceBuilder::new().layer(TimeoutLayer::new(Duration::from_secs(1))).service(slow);
//! assert_eq!(svc.clone().oneshot(0).await.unwrap(), 0);
//! let err = svc.oneshot(5).await.unwrap_err();
//! assert!(err.is::<Elapsed>());
//! assert_eq!(err.to_string(), "request timed out");
//! # }
//! ```

pub use tower::timeout::error::Elapsed;
pub use tower::timeout::{Timeout, TimeoutLayer};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::{BoxError, RetryError, RetryLayer};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::time::Instant;
    use tower::{ServiceBuilder, ServiceExt};

    #[tokio::test(start_paused = true)]
    async fn each_retry_attempt_gets_its_own_timeout() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        // The first attempt hangs; the second answers at once.
        let handler = tower::service_fn(move |()| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    futures::future::pending::<()>().await;
                }
                Ok::<_, BoxError>(n)
            }
        });
        let svc = ServiceBuilder::new()
            .layer(
                RetryLayer::new(2)
                    .backoff(Duration::from_millis(10), 1.0, Duration::from_millis(10))
                    .jitter(0.0),
            )
            .layer(TimeoutLayer::new(Duration::from_secs(1)))
            .service(handler);
        let t0 = Instant::now();
        assert_eq!(svc.clone().oneshot(()).await.unwrap(), 1);
        assert_eq!(t0.elapsed(), Duration::from_millis(1010));

        // Both attempts hang: the retry error wraps the timeout.
        let svc = ServiceBuilder::new()
            .layer(RetryLayer::new(2).jitter(0.0))
            .layer(TimeoutLayer::new(Duration::from_secs(1)))
            .service(tower::service_fn(|()| async {
                futures::future::pending::<()>().await;
                Ok::<(), BoxError>(())
            }));
        let err = svc.oneshot(()).await.unwrap_err();
        let err = err.downcast::<RetryError>().unwrap();
        assert_eq!(err.attempts, 2);
        assert!(err.source.is::<Elapsed>());
    }
}
