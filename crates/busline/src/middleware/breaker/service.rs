//! The breaker as tower middleware: its [`Layer`], the [`Breaker`] service,
//! and how a call's outcome (or its cancellation) is recorded.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service};

use super::state_machine::Permit;
use super::CircuitBreaker;
use crate::middleware::BoxError;

impl<S> Layer<S> for CircuitBreaker {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Breaker<S> {
        Breaker {
            inner,
            breaker: self.clone(),
        }
    }
}

/// The service made by [`CircuitBreaker`]'s layer.
#[derive(Clone, Debug)]
pub struct Breaker<S> {
    inner: S,
    breaker: CircuitBreaker,
}

/// Records a cancelled call if the future is dropped before it finished.
struct Outcome {
    breaker: CircuitBreaker,
    permit: Option<Permit>,
}

impl Outcome {
    fn finish(mut self, ok: bool) {
        if let Some(p) = self.permit.take() {
            self.breaker.record(p, Some(ok));
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            self.breaker.record(p, None);
        }
    }
}

impl<S, R> Service<R> for Breaker<S>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let permit = match self.breaker.acquire() {
            Ok(p) => p,
            Err(open) => return Box::pin(async move { Err(Box::new(open) as BoxError) }),
        };
        let outcome = Outcome {
            breaker: self.breaker.clone(),
            permit: Some(permit),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await.map_err(Into::into);
            outcome.finish(result.is_ok());
            result
        })
    }
}
