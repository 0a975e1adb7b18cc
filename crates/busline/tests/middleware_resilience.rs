//! The resilience middleware and the supervisor's backoff: nothing is lost
//! silently, the order of breaker transitions holds, delays keep growing to
//! their cap and never panic.

mod helpers;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use busline::middleware::{
    serve, BoxError, BreakerConfig, BreakerState, CircuitBreaker, DeadLetter, DeadLetterError,
    DeadLetterLayer, RetryLayer,
};
use busline::MemoryStore;
use busline::{Backoff, Bus, Envelope, EventId, RecvError, StartAt, StoreError, Topic};
use futures::StreamExt;
use helpers::FlakyReplay;
use tower::{Layer, Service, ServiceExt};

fn env(n: u32) -> Arc<Envelope<u32>> {
    Arc::new(Envelope::from_parts(
        n as u64,
        EventId::from_u128(n as u128 + 1),
        Topic::new("n").unwrap(),
        SystemTime::UNIX_EPOCH,
        None,
        EventId::from_u128(n as u128 + 1),
        None,
        None,
        Vec::new(),
        n,
    ))
}

fn ok_handler() -> impl Service<Arc<Envelope<u32>>, Response = (), Error = BoxError> {
    tower::service_fn(|_e: Arc<Envelope<u32>>| async { Ok::<(), BoxError>(()) })
}

// ----- serve ------------------------------------------------------------------

/// `RecvError::Store` means "the replay failed; the subscription goes on
/// live": serve went on reading, it did not stop there.
#[tokio::test(start_paused = true)]
async fn serve_goes_on_after_a_store_error() {
    let items: Vec<Result<Arc<Envelope<u32>>, RecvError>> = vec![
        Ok(env(1)),
        Err(RecvError::Store(StoreError::new(
            "read offset 0",
            "disk error",
        ))),
        Ok(env(2)),
        Ok(env(3)),
    ];
    let report = serve(futures::stream::iter(items), ok_handler()).await;
    assert_eq!(report.handled, 3, "{report:?}");
    assert_eq!(report.input_errors, 1, "{report:?}");
    assert!(
        report
            .last_input_error
            .as_deref()
            .is_some_and(|e| e.contains("disk error")),
        "{report:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn serve_goes_on_live_after_a_failed_replay() {
    let bus = Bus::<u32>::new();
    bus.persist("n", Arc::new(FlakyReplay::new(0))).unwrap();
    bus.publish_to("n", 0).await.unwrap(); // stored: its replay fails
    let sub = bus
        .subscriber("n")
        .from(StartAt::Beginning)
        .subscribe()
        .unwrap();
    for i in 1..=3 {
        bus.publish_to("n", i).await.unwrap(); // live
    }
    bus.close();
    let report = serve(sub, ok_handler()).await;
    assert_eq!((report.handled, report.input_errors), (3, 1), "{report:?}");
}

/// A service whose `poll_ready` fails once it has taken one call.
struct BreaksAfterOne(bool);

impl Service<Arc<Envelope<u32>>> for BreaksAfterOne {
    type Response = ();
    type Error = BoxError;
    type Future = futures::future::Ready<Result<(), BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.0 {
            Poll::Ready(Err("broken".into()))
        } else {
            Poll::Ready(Ok(()))
        }
    }
    fn call(&mut self, _: Arc<Envelope<u32>>) -> Self::Future {
        self.0 = true;
        futures::future::ready(Ok(()))
    }
}

/// When the service stops being ready, the input is left unread from the
/// first event not handled: serve took the next event only after readiness,
/// so it did not swallow one.
#[tokio::test(start_paused = true)]
async fn a_service_that_stops_being_ready_leaves_every_other_event_unread() {
    let mut input = futures::stream::iter((1..=3).map(|n| Ok::<_, RecvError>(env(n))));
    let report = serve(&mut input, BreaksAfterOne(false)).await;
    assert!(report.stopped.is_some(), "{report:?}");
    let rest: Vec<u32> = input.map(|r| r.unwrap().payload).collect().await;
    assert_eq!((report.handled, rest), (1, vec![2, 3]));
}

// ----- dead letters -----------------------------------------------------------

/// A dead-letter bus with nothing subscribed: the letter is handed back as an
/// error, not reported as dead-lettered and counted.
#[tokio::test(start_paused = true)]
async fn a_dead_letter_nobody_receives_is_handed_back() {
    let dead = Bus::<DeadLetter<u32>>::new();
    let layer = DeadLetterLayer::new(dead.clone());
    let count = layer.counter();
    let failing = |_e: Arc<Envelope<u32>>| async { Err::<(), BoxError>("unlucky".into()) };
    let svc = layer.layer(tower::service_fn(failing));
    let err = svc.oneshot(env(13)).await.unwrap_err();
    let err = err.downcast::<DeadLetterError<u32>>().unwrap();
    assert_eq!(err.letter.envelope.payload, 13);
    assert!(err.to_string().contains("nothing subscribed"), "{err}");
    assert_eq!(count.get(), 0);

    // Persisted, the letter is kept even with nobody listening.
    dead.persist("dead_letter.>", Arc::new(MemoryStore::new()))
        .unwrap();
    let svc = DeadLetterLayer::new(dead.clone()).layer(tower::service_fn(failing));
    assert_eq!(svc.oneshot(env(14)).await.unwrap(), None);
    let stored = dead.store_for("dead_letter.n").unwrap();
    assert_eq!(stored.end(), 1);
}

// ----- breaker ----------------------------------------------------------------

fn one_failure_opens(cool_down: Duration) -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 1,
        failure_rate: None,
        cool_down,
        half_open_trials: 1,
        ..BreakerConfig::default()
    }
}

/// On a persisted topic the bus cannot take an event without waiting for the
/// store: the transition is published from a task, not dropped.
#[tokio::test(start_paused = true)]
async fn breaker_transitions_are_published_on_a_persisted_topic() {
    let bus = Bus::<String>::new();
    bus.persist(">", Arc::new(MemoryStore::new())).unwrap();
    let mut changes = bus.subscribe("$sys.breaker.db.>").unwrap();
    let b = CircuitBreaker::new("db", one_failure_opens(Duration::from_secs(30)));
    b.publish_to(&bus, |t| format!("{} -> {}", t.from, t.to))
        .unwrap();
    let mut svc = b.layer_service(tower::service_fn(|_: ()| async {
        Err::<(), BoxError>("boom".into())
    }));
    svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert_eq!(b.state(), BreakerState::Open);
    let got = tokio::time::timeout(Duration::from_secs(5), changes.recv()).await;
    assert_eq!(got.expect("published").unwrap().payload, "closed -> open");
}

/// A transition that has to wait (a full lossless subscriber) is not
/// overtaken by a later one that would find room.
#[tokio::test(start_paused = true)]
async fn breaker_transitions_are_published_in_order() {
    let bus = Bus::<String>::new();
    let mut changes = bus
        .subscriber("$sys.breaker.db.>")
        .lossless(1)
        .subscribe()
        .unwrap();
    bus.publish_to("$sys.breaker.db.filler", "filler".into())
        .await
        .unwrap(); // the subscriber is full
    let b = CircuitBreaker::new("db", one_failure_opens(Duration::ZERO));
    b.publish_to(&bus, |t| format!("{} -> {}", t.from, t.to))
        .unwrap();
    let mut svc = b.layer_service(tower::service_fn(|ok: bool| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if ok {
            Ok(())
        } else {
            Err::<(), BoxError>("boom".into())
        }
    }));
    svc.ready().await.unwrap().call(false).await.unwrap_err(); // closed -> open: waits
    assert_eq!(changes.recv().await.unwrap().payload, "filler");
    let trial = svc.call(true); // open -> half_open
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(changes.recv().await.unwrap().payload.clone());
    }
    trial.await.unwrap();
    seen.push(changes.recv().await.unwrap().payload.clone());
    assert_eq!(
        seen,
        ["closed -> open", "open -> half_open", "half_open -> closed"]
    );
}

// ----- backoff ----------------------------------------------------------------

/// `min(initial × multiplier^(n-1), max)`: a small multiplier still reaches
/// the cap (the exponent was clamped at 64).
#[test]
fn supervisor_backoff_keeps_growing_until_max() {
    let b = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(3600),
        multiplier: 1.1,
        jitter: 0.0,
    };
    assert_eq!(b.delay(100), Duration::from_secs(3600)); // 1.1^99 s ≈ 12,527 s
    assert_eq!(b.delay(1), Duration::from_secs(1));
    assert_eq!(b.delay(u32::MAX), Duration::from_secs(3600));
}

/// A delay past u64::MAX nanoseconds (584 years) is what was configured, not
/// a saturated cast.
#[test]
fn supervisor_backoff_keeps_a_huge_fixed_delay() {
    let d = Duration::from_secs(1_000 * 365 * 86_400);
    assert_eq!(Backoff::fixed(d).delay(1), d);
    assert_eq!(Backoff::fixed(d).delay(7), d);
}

/// The retry's exponent was clamped at 1000 attempts.
#[test]
fn retry_delay_keeps_growing_until_max() {
    let l = RetryLayer::new(u32::MAX).backoff(
        Duration::from_millis(1),
        1.01,
        Duration::from_secs(86_400),
    );
    assert_eq!(l.base_delay(2000), Duration::from_secs(86_400)); // 1.01^1999 ms ≈ 4.3e5 s
}

/// An uncapped backoff with jitter: `1 − jitter × r` rounding to 1.0 made
/// `Duration::MAX.mul_f64(1.0)` panic.
#[tokio::test(start_paused = true)]
async fn retry_with_uncapped_backoff_and_jitter_does_not_panic() {
    let svc = RetryLayer::new(2)
        .backoff(Duration::MAX, 2.0, Duration::MAX)
        .jitter(1e-20)
        .layer(tower::service_fn(boom));
    let h = tokio::spawn(async move {
        // The retry would wait for ever: only computing its delay matters.
        let _ = tokio::time::timeout(Duration::from_secs(1), svc.oneshot(())).await;
    });
    assert!(h.await.is_ok(), "the retry panicked");
}

async fn boom(_: ()) -> Result<(), BoxError> {
    Err(BoxError::from("boom"))
}
