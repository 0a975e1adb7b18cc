use super::*;
use crate::middleware::BoxError;
use crate::Bus;
use tokio::time::advance;
use tower::Service;
use tower::ServiceExt;

fn handler(
) -> impl Service<bool, Response = (), Error = BoxError, Future = impl Send + 'static> + Clone {
    tower::service_fn(|ok: bool| async move {
        if ok {
            Ok(())
        } else {
            Err::<(), BoxError>("boom".into())
        }
    })
}

async fn call<S: Service<bool, Error = BoxError>>(
    svc: &mut S,
    ok: bool,
) -> Result<S::Response, BoxError> {
    svc.ready().await?.call(ok).await
}

fn config() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 3,
        failure_rate: None,
        cool_down: Duration::from_secs(10),
        half_open_trials: 1,
        ..BreakerConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures_and_fails_fast() {
    let b = CircuitBreaker::new("db", config());
    let mut svc = b.layer(handler());
    call(&mut svc, false).await.unwrap_err();
    call(&mut svc, false).await.unwrap_err();
    call(&mut svc, true).await.unwrap(); // resets the run
    for _ in 0..2 {
        call(&mut svc, false).await.unwrap_err();
    }
    assert_eq!(b.state(), BreakerState::Closed);
    call(&mut svc, false).await.unwrap_err();
    assert_eq!(b.state(), BreakerState::Open);
    advance(Duration::from_secs(4)).await;
    let err = call(&mut svc, true).await.unwrap_err();
    let open = err
        .downcast_ref::<BreakerOpen>()
        .expect("fails fast with BreakerOpen");
    assert_eq!(open.state, BreakerState::Open);
    assert_eq!(open.retry_in, Some(Duration::from_secs(6)));
    assert_eq!(
        err.to_string(),
        "circuit breaker `db` is open: call rejected without running the handler (trials resume in 6s)"
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_trial_fails_and_reopens_then_recovers() {
    let b = CircuitBreaker::new("api", config());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    b.on_transition(move |t| s.lock().push((t.from, t.to)));
    let mut w = b.watch();
    let mut svc = b.layer(handler());
    for _ in 0..3 {
        call(&mut svc, false).await.unwrap_err();
    }
    assert!(w.has_changed().unwrap());
    assert_eq!(*w.borrow_and_update(), BreakerState::Open);

    advance(Duration::from_secs(10)).await; // exactly the cool-down
    call(&mut svc, false).await.unwrap_err(); // trial fails
    assert_eq!(b.state(), BreakerState::Open);
    // A fresh cool-down starts from the failed trial.
    advance(Duration::from_secs(9)).await;
    assert!(call(&mut svc, true).await.unwrap_err().is::<BreakerOpen>());
    advance(Duration::from_secs(1)).await;
    call(&mut svc, true).await.unwrap();
    assert_eq!(b.state(), BreakerState::Closed);
    use BreakerState::*;
    assert_eq!(
        *seen.lock(),
        vec![
            (Closed, Open),
            (Open, HalfOpen),
            (HalfOpen, Open),
            (Open, HalfOpen),
            (HalfOpen, Closed)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_limits_concurrent_trials() {
    let b = CircuitBreaker::new(
        "slow",
        BreakerConfig {
            half_open_trials: 2,
            ..config()
        },
    );
    let slow = tower::service_fn(|ok: bool| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if ok {
            Ok(())
        } else {
            Err::<(), BoxError>("boom".into())
        }
    });
    let mut svc = b.layer(slow);
    for _ in 0..3 {
        call(&mut svc, false).await.unwrap_err();
    }
    advance(Duration::from_secs(10)).await;
    let t1 = svc.call(true);
    let t2 = svc.call(true);
    let err = svc.call(true).await.unwrap_err(); // a third trial is refused
    assert_eq!(
        err.downcast_ref::<BreakerOpen>().unwrap().state,
        BreakerState::HalfOpen
    );
    t1.await.unwrap();
    assert_eq!(b.state(), BreakerState::HalfOpen); // needs 2 successes
    t2.await.unwrap();
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn opens_on_failure_rate_over_the_window() {
    let b = CircuitBreaker::new(
        "rate",
        BreakerConfig {
            consecutive_failures: 0,
            failure_rate: Some(0.5),
            rate_window: Duration::from_secs(10),
            min_calls: 4,
            ..config()
        },
    );
    let mut svc = b.layer(handler());
    // ✓ ✗ ✓ ✗ : 50% of 4 calls -> opens on the 4th.
    call(&mut svc, true).await.unwrap();
    call(&mut svc, false).await.unwrap_err();
    call(&mut svc, true).await.unwrap();
    assert_eq!(b.state(), BreakerState::Closed);
    call(&mut svc, false).await.unwrap_err();
    assert_eq!(b.state(), BreakerState::Open);

    // Old outcomes leave the window: failures spread out never trip it.
    let b = CircuitBreaker::new(
        "rate2",
        BreakerConfig {
            min_calls: 2,
            ..b.shared.config
        },
    );
    let mut svc = b.layer(handler());
    for _ in 0..5 {
        call(&mut svc, false).await.unwrap_err(); // 1 of 1 calls in the window: below min_calls
        advance(Duration::from_secs(10)).await;
    }
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn cancelled_trial_frees_its_slot() {
    let b = CircuitBreaker::new("c", config());
    let pending = tower::service_fn(|fail: bool| async move {
        if fail {
            return Err::<(), BoxError>("boom".into());
        }
        futures::future::pending::<()>().await;
        Ok(())
    });
    let mut svc = b.layer(pending);
    for _ in 0..3 {
        call(&mut svc, true).await.unwrap_err();
    }
    advance(Duration::from_secs(10)).await;
    drop(svc.call(false)); // a trial, cancelled
    let err = call(&mut svc, true).await.unwrap_err(); // the slot is free: the trial runs and fails
    assert!(!err.is::<BreakerOpen>());
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn publish_to_rejects_names_that_are_not_one_token() {
    let bus = Bus::<u8>::new();
    let b = CircuitBreaker::new("a.b", BreakerConfig::default());
    assert!(b
        .publish_to(&bus, |_| 0)
        .unwrap_err()
        .to_string()
        .contains("cannot contain `.`"));
    let b = CircuitBreaker::new("a b", BreakerConfig::default());
    assert!(b.publish_to(&bus, |_| 0).is_err());
}
