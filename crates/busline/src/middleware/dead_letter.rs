//! Dead letters: an event the handler still cannot take after its retries
//! goes to a dead-letter sink with the error, the attempt count and the
//! original envelope — intact, the same `Arc` (same id, topic, timestamp,
//! headers, correlation) — and the stream goes on.
//!
//! [`DeadLetterLayer`] wraps a handler service taking `Arc<Envelope<T>>`. Its
//! response is `Option<R>`: `Some(r)` when the handler succeeded, `None` when
//! the event was dead-lettered. It fails only when the sink itself refuses the
//! letter (closed), and then the error hands the letter back
//! ([`DeadLetterError`]), so nothing is lost silently.
//!
//! The attempt count is read from a [`RetryError`] when
//! the retry layer sits inside this one (the usual order:
//! dead letters ▸ retry ▸ breaker ▸ timeout ▸ handler); otherwise it is 1.
//!
//! ## Sinks
//!
//! | sink | where a letter goes |
//! | --- | --- |
//! | a [`Bus<DeadLetter<T>>`](crate::Bus) | topic `dead_letter.<original topic>` on that bus (refused when nothing subscribes to it and it is not persisted) |
//! | a `tokio::sync::mpsc::Sender<DeadLetter<T>>` | the channel |
//! | [`sink_fn(f)`](sink_fn) | your async function (e.g. republish on the same bus as a `T`) |
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use busline::{Bus, Envelope, Message};
//! use busline::middleware::{BoxError, DeadLetter, DeadLetterLayer, RetryLayer};
//!
//! let bus = Bus::<String>::new();
//! let dead = Bus::<DeadLetter<String>>::new();
//! let mut dead_sub = dead.subscribe("dead_letter.>").unwrap();
//! let mut orders = bus.subscribe("orders.>").unwrap();
//! bus.send(Message::new("bad order".to_string()).topic("orders.eu").header("tenant", "acme")).await.unwrap();
//! let env = orders.recv().await.unwrap();
//!
//! let svc = ServiceBuilder::new()
//!     .layer(DeadLetterLayer::new(dead.clone()))
//!     .layer(RetryLayer::new(3).jitter(0.0))
//!     .service(tower::service_fn(|env: Arc<Envelope<String>>| async move {
//!         Err::<(), BoxError>(format!("cannot parse `{}`", env.payload).into())
//!     }));
//! assert_eq!(svc.oneshot(env.clone()).await.unwrap(), None); // dead-lettered, not an error
//!
//! let letter = dead_sub.recv().await.unwrap();
//! assert_eq!(letter.topic.as_str(), "dead_letter.orders.eu");
//! let letter = &letter.payload;
//! assert!(Arc::ptr_eq(&letter.envelope, &env)); // the very same envelope
//! assert_eq!(letter.envelope.header("tenant"), Some("acme"));
//! assert_eq!(letter.attempts, 3);
//! assert_eq!(letter.error, "gave up after 3 attempts: cannot parse `bad order`");
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use futures::future::BoxFuture;
use tower::{Layer, Service};

use super::{BoxError, RetryError};
use crate::stream::Counter;
use crate::{Bus, Envelope};

/// An event a handler could not take, with why.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DeadLetter<T> {
    /// The original envelope, unchanged (the same `Arc`).
    pub envelope: Arc<Envelope<T>>,
    /// The last error, with its sources, as text (`outer: inner: ...`).
    pub error: String,
    /// Handler attempts made.
    pub attempts: u32,
    /// When it was given up on.
    pub failed_at: SystemTime,
}

impl<T> DeadLetter<T> {
    /// A letter for `envelope` that failed with `error` after `attempts` attempts.
    pub fn new(
        envelope: Arc<Envelope<T>>,
        error: &(dyn std::error::Error + 'static),
        attempts: u32,
    ) -> Self {
        DeadLetter {
            envelope,
            error: chain(error),
            attempts,
            failed_at: SystemTime::now(),
        }
    }
}

/// `error: source: source ...`, skipping a source whose text the outer error
/// already includes.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut s = error.to_string();
    let mut cur = error.source();
    while let Some(e) = cur {
        let t = e.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = e.source();
    }
    s
}

/// Where dead letters go. Implemented for a `Bus<DeadLetter<T>>`, a
/// `tokio::sync::mpsc::Sender<DeadLetter<T>>` and [`sink_fn`].
pub trait DeadLetterSink<T>: Send + Sync + 'static {
    /// Delivers `letter`, or hands it back if it cannot.
    fn send(&self, letter: DeadLetter<T>) -> BoxFuture<'static, Result<(), DeadLetter<T>>>;
}

impl<T: Send + Sync + 'static> DeadLetterSink<T> for Bus<DeadLetter<T>> {
    /// Publishes on `dead_letter.<original topic>`; waits if a lossless
    /// subscriber is full; hands the letter back if the bus is closed, or if
    /// nothing took it (no subscriber on that topic, and the topic is not
    /// [persisted](crate::Bus::persist)).
    fn send(&self, letter: DeadLetter<T>) -> BoxFuture<'static, Result<(), DeadLetter<T>>> {
        let bus = self.clone();
        Box::pin(async move {
            let topic = format!("dead_letter.{}", letter.envelope.topic);
            // Kept to hand back if nothing takes the letter (cheap: the
            // envelope is shared, not copied).
            let copy = DeadLetter {
                envelope: letter.envelope.clone(),
                error: letter.error.clone(),
                attempts: letter.attempts,
                failed_at: letter.failed_at,
            };
            match bus.publish_to(&topic, letter).await {
                Ok(r) if r.subscribers == 0 && bus.store_for(&topic).is_none() => Err(copy),
                Ok(_) => Ok(()),
                Err(e) => Err(e.into_event()),
            }
        })
    }
}

impl<T: Send + Sync + 'static> DeadLetterSink<T> for tokio::sync::mpsc::Sender<DeadLetter<T>> {
    fn send(&self, letter: DeadLetter<T>) -> BoxFuture<'static, Result<(), DeadLetter<T>>> {
        let tx = self.clone();
        Box::pin(async move { tx.send(letter).await.map_err(|e| e.0) })
    }
}

/// A sink made from an async function; see [`sink_fn`].
#[derive(Clone)]
pub struct SinkFn<F>(F);

impl<F> fmt::Debug for SinkFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SinkFn")
    }
}

/// A sink that calls `f(letter)`; `Err(letter)` means it could not take it.
pub fn sink_fn<T, F, Fut>(f: F) -> SinkFn<F>
where
    F: Fn(DeadLetter<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), DeadLetter<T>>> + Send + 'static,
{
    SinkFn(f)
}

impl<T, F, Fut> DeadLetterSink<T> for SinkFn<F>
where
    T: 'static,
    F: Fn(DeadLetter<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), DeadLetter<T>>> + Send + 'static,
{
    fn send(&self, letter: DeadLetter<T>) -> BoxFuture<'static, Result<(), DeadLetter<T>>> {
        Box::pin((self.0)(letter))
    }
}

/// The dead-letter sink refused a letter; it is handed back here.
#[non_exhaustive]
pub struct DeadLetterError<T> {
    /// The letter that could not be delivered.
    pub letter: DeadLetter<T>,
}

impl<T> fmt::Display for DeadLetterError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event {} on `{}` failed ({}) and the dead-letter sink refused it (closed, nothing subscribed to the dead-letter topic, or no valid dead-letter topic)",
            self.letter.envelope.id, self.letter.envelope.topic, self.letter.error
        )
    }
}

impl<T> fmt::Debug for DeadLetterError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeadLetterError({self})")
    }
}

impl<T> std::error::Error for DeadLetterError<T> {}

/// Sends events whose handling failed to a [`DeadLetterSink`]; see the [module docs](self).
pub struct DeadLetterLayer<T> {
    sink: Arc<dyn DeadLetterSink<T>>,
    count: Counter,
}

impl<T> Clone for DeadLetterLayer<T> {
    fn clone(&self) -> Self {
        DeadLetterLayer {
            sink: self.sink.clone(),
            count: self.count.clone(),
        }
    }
}

impl<T> fmt::Debug for DeadLetterLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterLayer")
            .field("dead_lettered", &self.count.get())
            .finish_non_exhaustive()
    }
}

impl<T: 'static> DeadLetterLayer<T> {
    /// Dead letters go to `sink`.
    pub fn new(sink: impl DeadLetterSink<T>) -> Self {
        DeadLetterLayer {
            sink: Arc::new(sink),
            count: Counter::default(),
        }
    }

    /// Counts the letters delivered to the sink (shared by every service this layer made).
    pub fn counter(&self) -> Counter {
        self.count.clone()
    }
}

impl<S, T> Layer<S> for DeadLetterLayer<T> {
    type Service = DeadLetterService<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadLetterService {
            inner,
            layer: DeadLetterLayer {
                sink: self.sink.clone(),
                count: self.count.clone(),
            },
        }
    }
}

/// The service made by [`DeadLetterLayer`].
pub struct DeadLetterService<S, T> {
    inner: S,
    layer: DeadLetterLayer<T>,
}

impl<S: Clone, T> Clone for DeadLetterService<S, T> {
    fn clone(&self) -> Self {
        DeadLetterService {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, T> fmt::Debug for DeadLetterService<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, T> Service<Arc<Envelope<T>>> for DeadLetterService<S, T>
where
    S: Service<Arc<Envelope<T>>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    T: Send + Sync + 'static,
{
    type Response = Option<S::Response>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Option<S::Response>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, env: Arc<Envelope<T>>) -> Self::Future {
        let fut = self.inner.call(env.clone());
        let layer = self.layer.clone();
        Box::pin(async move {
            let err: BoxError = match fut.await {
                Ok(r) => return Ok(Some(r)),
                Err(e) => e.into(),
            };
            let attempts = err.downcast_ref::<RetryError>().map_or(1, |r| r.attempts);
            let letter = DeadLetter::new(env, &*err, attempts);
            match layer.sink.send(letter).await {
                Ok(()) => {
                    layer.count.add(1);
                    Ok(None)
                }
                Err(letter) => Err(Box::new(DeadLetterError { letter }) as BoxError),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;
    use tower::ServiceExt;

    fn failing() -> impl Service<
        Arc<Envelope<u32>>,
        Response = u32,
        Error = BoxError,
        Future = impl Send + 'static,
    > + Clone {
        tower::service_fn(|env: Arc<Envelope<u32>>| async move {
            if env.payload % 2 == 0 {
                Ok(env.payload)
            } else {
                Err::<u32, BoxError>(format!("odd {}", env.payload).into())
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn dead_lettered_envelope_is_intact_and_the_next_event_goes_on() {
        let bus = Bus::<u32>::new();
        let mut sub = bus.subscribe("n.>").unwrap();
        let cause = Message::new(0).topic("n.cause");
        bus.send(cause).await.unwrap();
        let cause = sub.recv().await.unwrap();
        bus.send(
            Message::new(1)
                .topic("n.x")
                .source("src")
                .caused_by(&cause)
                .header("h", "v"),
        )
        .await
        .unwrap();
        bus.publish_to("n.y", 2).await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let layer = DeadLetterLayer::new(tx);
        let count = layer.counter();
        let mut svc = layer.layer(failing());
        let bad = sub.recv().await.unwrap();
        let (id, seq, ts) = (bad.id, bad.seq, bad.timestamp());
        assert_eq!(svc.ready().await.unwrap().call(bad).await.unwrap(), None);
        let good = sub.recv().await.unwrap();
        assert_eq!(
            svc.ready().await.unwrap().call(good).await.unwrap(),
            Some(2)
        );

        let letter = rx.recv().await.unwrap();
        let e = &letter.envelope;
        assert_eq!((e.id, e.seq, e.timestamp(), e.payload), (id, seq, ts, 1));
        assert_eq!(e.topic.as_str(), "n.x");
        assert_eq!(e.source.as_deref(), Some("src"));
        assert_eq!(e.causation_id(), Some(cause.id));
        assert_eq!(e.correlation_id, cause.correlation_id);
        assert_eq!(e.header("h"), Some("v"));
        assert_eq!(letter.attempts, 1);
        assert_eq!(letter.error, "odd 1");
        assert_eq!(count.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_sink_hands_the_letter_back() {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(rx);
        let svc = DeadLetterLayer::new(tx).layer(failing());
        let env = Arc::new(Envelope::from_parts(
            7,
            crate::EventId::from_u128(42),
            crate::Topic::new("a.b").unwrap(),
            SystemTime::UNIX_EPOCH,
            None,
            crate::EventId::from_u128(42),
            None,
            None,
            Vec::new(),
            3u32,
        ));
        let err = svc.oneshot(env.clone()).await.unwrap_err();
        let err = err.downcast::<DeadLetterError<u32>>().unwrap();
        assert!(Arc::ptr_eq(&err.letter.envelope, &env));
        assert_eq!(
            err.to_string(),
            "event 0000000000000000000000000000002a on `a.b` failed (odd 3) and the dead-letter sink refused it (closed, nothing subscribed to the dead-letter topic, or no valid dead-letter topic)"
        );
    }

    #[tokio::test]
    async fn sink_fn_can_republish_on_the_same_bus() {
        let bus = Bus::<String>::new();
        let mut dl = bus.subscribe("dlq").unwrap();
        let b = bus.clone();
        let sink = sink_fn(move |l: DeadLetter<String>| {
            let b = b.clone();
            async move {
                let text = format!("{}: {}", l.envelope.payload, l.error);
                b.send(Message::new(text).topic("dlq").caused_by(&l.envelope))
                    .await
                    .map(drop)
                    .map_err(|_| l)
            }
        });
        let svc = DeadLetterLayer::new(sink).layer(tower::service_fn(
            |_e: Arc<Envelope<String>>| async { Err::<(), BoxError>("nope".into()) },
        ));
        let mut src = bus.subscribe("in").unwrap();
        bus.publish_to("in", "x".to_string()).await.unwrap();
        let env = src.recv().await.unwrap();
        svc.oneshot(env.clone()).await.unwrap();
        let got = dl.recv().await.unwrap();
        assert_eq!(got.payload, "x: nope");
        assert_eq!(got.causation_id(), Some(env.id));
    }
}
