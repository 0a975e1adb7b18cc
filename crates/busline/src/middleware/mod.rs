//! Resilience middleware around event handlers, as [`tower`] layers.
//!
//! A handler is a [`tower::Service`] taking `Arc<Envelope<T>>` (write one
//! with [`tower::service_fn`]); the layers here stack with
//! [`tower::ServiceBuilder`] like any tower middleware, and [`serve`] drives a
//! subscription through the stack so you don't write that loop.
//!
//! | layer | module | what it does |
//! | --- | --- | --- |
//! | [`DeadLetterLayer`] | [`dead_letter`] | a failed event goes to a dead-letter sink (envelope intact); the stream goes on |
//! | [`RetryLayer`] | [`retry`] | exponential backoff with jitter, capped attempts |
//! | [`CircuitBreaker`] | [`breaker`] | closed → open → half-open, fail fast while open, every change published |
//! | [`TimeoutLayer`] | [`timeout`] | tower's per-call timeout |
//! | [`ConcurrencyLimitLayer`], [`RateLimitLayer`] | tower's | at most N calls at once / N calls per period |
//!
//! Retry, breaker, timeout and the limits work on any request type, not only
//! envelopes: wrap a webhook call (`Service<Alert>`) the same way. Only the
//! dead-letter layer needs `Arc<Envelope<T>>`, since it keeps the envelope.
//!
//! Every layer's error type is [`BoxError`] (tower's convention), so they
//! stack in any order; find out what happened with `err.is::<BreakerOpen>()`,
//! `err.downcast_ref::<RetryError>()`, `err.is::<Elapsed>()`.
//!
//! ## Order
//!
//! Outermost first: **dead letters ▸ retry ▸ breaker ▸ timeout ▸ handler**.
//! Each retry attempt then gets its own timeout, timeouts count as breaker
//! failures, calls rejected by an open breaker are retried after a backoff
//! (give the breaker's cool-down time with [`RetryLayer::retry_if`] or a
//! longer backoff), and only what fails after all that is dead-lettered.
//! The retry layer needs a `Clone` inner service: tower's `RateLimit` is not,
//! so put a rate limit outside the retry layer.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use busline::{Bus, Envelope};
//! use busline::middleware::*;
//!
//! let bus = Bus::<u32>::new();
//! let dead = Bus::<DeadLetter<u32>>::new();
//! let mut dead_letters = dead.subscribe("dead_letter.>").unwrap();
//! let breaker = CircuitBreaker::new("orders", BreakerConfig::default());
//! let handler = ServiceBuilder::new()
//!     .layer(DeadLetterLayer::new(dead.clone()))
//!     .layer(RetryLayer::new(3))
//!     .layer(breaker.clone())
//!     .layer(TimeoutLayer::new(Duration::from_secs(2)))
//!     .service(tower::service_fn(|env: Arc<Envelope<u32>>| async move {
//!         if env.payload == 13 { Err::<(), BoxError>("unlucky".into()) } else { Ok(()) }
//!     }));
//!
//! let sub = bus.subscribe("orders").unwrap();
//! for n in [1, 13, 2] { bus.publish_to("orders", n).await.unwrap(); }
//! bus.close();
//! let report = serve(sub, handler).await;
//! assert_eq!((report.handled, report.failed, report.lagged), (3, 0, 0)); // 13 was dead-lettered, not failed
//! assert_eq!(dead_letters.recv().await.unwrap().payload.envelope.payload, 13);
//! # }
//! ```

pub mod breaker;
pub mod dead_letter;
pub mod retry;
pub mod timeout;

use std::future::poll_fn;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use tower::Service;

use crate::{Envelope, RecvError};

pub use breaker::{Breaker, BreakerConfig, BreakerOpen, BreakerState, CircuitBreaker, Transition};
pub use dead_letter::{
    sink_fn, DeadLetter, DeadLetterError, DeadLetterLayer, DeadLetterService, DeadLetterSink,
};
pub use retry::{Retry, RetryError, RetryLayer};
pub use timeout::{Elapsed, Timeout, TimeoutLayer};
pub use tower::limit::{ConcurrencyLimit, ConcurrencyLimitLayer, RateLimit, RateLimitLayer};
pub use tower::BoxError;

/// What [`serve`] did, returned when its input ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeReport {
    /// Events the service returned `Ok` for (including dead-lettered ones,
    /// when a [`DeadLetterLayer`] is in the stack).
    pub handled: u64,
    /// Events the service returned `Err` for.
    pub failed: u64,
    /// Events lost before they reached the service (summed `Lagged(n)`).
    pub lagged: u64,
    /// The last call error, as text.
    pub last_error: Option<String>,
    /// Set if the service stopped being able to take calls (`poll_ready`
    /// failed): the loop stopped there, leaving the rest of the input unread
    /// (it takes an event from the input only once the service is ready).
    pub stopped: Option<String>,
    /// Errors the input reported that it goes on after (a subscription's
    /// failed replay, [`RecvError::Store`]).
    pub input_errors: u64,
    /// The last of those, as text.
    pub last_input_error: Option<String>,
}

/// Drives `events` (a [`Subscription`](crate::Subscription), or any stream of
/// `Result<Arc<Envelope<T>>, RecvError>`) through `service`, one call at a
/// time in order, until the input ends ([`RecvError::Closed`] or the end of
/// the stream). A failed call is counted and the loop goes on; lag is
/// counted, and so is a failed replay, after which the subscription goes on
/// live; see [`ServeReport`].
pub async fn serve<St, S, T>(events: St, service: S) -> ServeReport
where
    St: Stream<Item = Result<Arc<Envelope<T>>, RecvError>>,
    S: Service<Arc<Envelope<T>>>,
    S::Error: Into<BoxError>,
{
    serve_concurrent(events, service, 1).await
}

/// Like [`serve`], with up to `limit` calls in flight at once (results may
/// then finish out of order). `limit` 0 is taken as 1.
pub async fn serve_concurrent<St, S, T>(events: St, mut service: S, limit: usize) -> ServeReport
where
    St: Stream<Item = Result<Arc<Envelope<T>>, RecvError>>,
    S: Service<Arc<Envelope<T>>>,
    S::Error: Into<BoxError>,
{
    let limit = limit.max(1);
    let mut report = ServeReport::default();
    let mut in_flight = FuturesUnordered::new();
    let mut events = std::pin::pin!(events);
    let mut input_done = false;
    let mut ready = false;
    let record = |report: &mut ServeReport, r: Result<S::Response, S::Error>| match r {
        Ok(_) => report.handled += 1,
        Err(e) => {
            report.failed += 1;
            report.last_error = Some(e.into().to_string());
        }
    };
    loop {
        if input_done && in_flight.is_empty() {
            return report;
        }
        if !input_done && !ready && in_flight.len() < limit {
            // The service is ready before an event is taken from the input:
            // if it never becomes ready, no event is taken and lost. Calls in
            // flight are driven meanwhile (a concurrency limit frees up as
            // they finish).
            let r = loop {
                tokio::select! {
                    biased;
                    Some(r) = in_flight.next(), if !in_flight.is_empty() => record(&mut report, r),
                    r = poll_fn(|cx| service.poll_ready(cx)) => break r,
                }
            };
            if let Err(e) = r {
                report.stopped = Some(e.into().to_string());
                while let Some(r) = in_flight.next().await {
                    record(&mut report, r);
                }
                return report;
            }
            ready = true;
        }
        tokio::select! {
            biased;
            Some(r) = in_flight.next(), if !in_flight.is_empty() => record(&mut report, r),
            item = events.next(), if !input_done && ready && in_flight.len() < limit => match item {
                None | Some(Err(RecvError::Closed)) => input_done = true,
                Some(Err(RecvError::Lagged(n))) => report.lagged += n,
                // A failed replay: the subscription goes on live.
                Some(Err(RecvError::Store(e))) => {
                    report.input_errors += 1;
                    report.last_input_error = Some(e.to_string());
                }
                Some(Ok(env)) => {
                    in_flight.push(service.call(env));
                    ready = false;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests;
