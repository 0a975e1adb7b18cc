use super::*;
use crate::Bus;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tower::ServiceBuilder;

#[tokio::test(start_paused = true)]
async fn serve_counts_ok_failed_and_lag_and_ends_with_the_input() {
    let bus = Bus::<u32>::new();
    let sub = bus.subscriber("n").lossy(2).subscribe().unwrap();
    for i in 0..5 {
        bus.publish_to("n", i).await.unwrap(); // 0,1,2 are dropped: Lagged(3)
    }
    bus.close();
    let handler = tower::service_fn(|env: Arc<Envelope<u32>>| async move {
        if env.payload == 4 {
            Err::<(), BoxError>("four".into())
        } else {
            Ok(())
        }
    });
    let report = serve(sub, handler).await;
    assert_eq!((report.handled, report.failed, report.lagged), (1, 1, 3));
    assert_eq!(report.last_error.as_deref(), Some("four"));
    assert_eq!(report.stopped, None);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_spaces_calls_in_virtual_time() {
    let bus = Bus::<u32>::new();
    let sub = bus.subscribe("n").unwrap();
    for i in 0..5 {
        bus.publish_to("n", i).await.unwrap();
    }
    bus.close();
    let times = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let t = times.clone();
    let t0 = Instant::now();
    let svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(2, Duration::from_secs(1)))
        .service(tower::service_fn(move |_env: Arc<Envelope<u32>>| {
            t.lock().push(t0.elapsed().as_secs());
            async { Ok::<(), BoxError>(()) }
        }));
    let report = serve(sub, svc).await;
    assert_eq!(report.handled, 5);
    assert_eq!(*times.lock(), vec![0, 0, 1, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn serve_concurrent_respects_a_concurrency_limit_without_deadlock() {
    let bus = Bus::<u32>::new();
    let sub = bus.subscribe("n").unwrap();
    for i in 0..6 {
        bus.publish_to("n", i).await.unwrap();
    }
    bus.close();
    let running = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let svc = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::new(2))
        .service(tower::service_fn(move |_env: Arc<Envelope<u32>>| {
            let (r, p) = (r.clone(), p.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                Ok::<(), BoxError>(())
            }
        }));
    let t0 = Instant::now();
    let report = serve_concurrent(sub, svc, 4).await;
    assert_eq!(report.handled, 6);
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    assert_eq!(t0.elapsed(), Duration::from_secs(3)); // 6 calls, 2 at a time, 1 s each
}

#[tokio::test(start_paused = true)]
async fn full_stack_retries_breaks_and_dead_letters() {
    let bus = Bus::<u32>::new();
    let dead = Bus::<DeadLetter<u32>>::new();
    let mut letters = dead.subscribe("dead_letter.>").unwrap();
    let breaker = CircuitBreaker::new(
        "stack",
        BreakerConfig {
            consecutive_failures: 2,
            failure_rate: None,
            cool_down: Duration::from_secs(60),
            ..BreakerConfig::default()
        },
    );
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let svc = ServiceBuilder::new()
        .layer(DeadLetterLayer::new(dead.clone()))
        .layer(RetryLayer::new(3).jitter(0.0))
        .layer(breaker.clone())
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(tower::service_fn(move |env: Arc<Envelope<u32>>| {
            c.fetch_add(1, Ordering::SeqCst);
            async move {
                if env.payload == 0 {
                    Ok(())
                } else {
                    Err::<(), BoxError>("down".into())
                }
            }
        }));
    let sub = bus.subscribe("n").unwrap();
    for i in [0, 1, 2, 0] {
        bus.publish_to("n", i).await.unwrap();
    }
    bus.close();
    let report = serve(sub, svc).await;
    assert_eq!(report.handled, 4);
    // Event 0: one call. Event 1: two real calls open the breaker, the third
    // attempt fails fast. Event 2 and the last 0: the breaker is open, nothing
    // reaches the handler.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(breaker.state(), BreakerState::Open);
    let first = letters.recv().await.unwrap();
    assert_eq!(first.payload.envelope.payload, 1);
    assert_eq!(first.payload.attempts, 3);
    assert!(
        first
            .payload
            .error
            .contains("circuit breaker `stack` is open"),
        "{}",
        first.payload.error
    );
    assert_eq!(letters.recv().await.unwrap().payload.envelope.payload, 2);
    assert_eq!(letters.recv().await.unwrap().payload.envelope.payload, 0);
}
