//! Request timeouts: each request times out at its own deadline, never
//! before it, whatever other requests wait beside it; a request that ends
//! (answered, timed out, dropped, or the bus closed) leaves nothing behind
//! that a late reply could reach.

use std::time::Duration;

use busline::{Bus, ReplyError, RequestError};
use tokio::time::Instant;

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// Each request times out exactly at its own deadline (virtual time), in
/// whatever order the requests were made; a reply afterwards is refused.
#[tokio::test(start_paused = true)]
async fn each_request_times_out_at_its_own_deadline() {
    let bus = Bus::<u32>::new();
    let mut silent = bus.subscribe("svc.slow").unwrap();
    let start = Instant::now();
    // Deadlines out of order: long ones first, then shorter and equal ones.
    let timeouts: Vec<u64> = (0..300u64).map(|i| 1 + (i * 7919) % 97).collect();
    let mut tasks = Vec::new();
    for &secs in &timeouts {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            let err = bus
                .request("svc.slow", secs as u32, Duration::from_secs(secs))
                .await
                .unwrap_err();
            (secs, err, start.elapsed())
        }));
        tokio::task::yield_now().await;
    }
    let mut requests = Vec::new();
    for _ in &timeouts {
        requests.push(silent.recv().await.unwrap());
    }
    for t in tasks {
        let (secs, err, elapsed) = t.await.unwrap();
        assert!(
            matches!(err, RequestError::Timeout { timeout, .. } if timeout == Duration::from_secs(secs)),
            "{err}"
        );
        assert_eq!(
            elapsed,
            Duration::from_secs(secs),
            "timed out early or late"
        );
    }
    for r in &requests {
        let late = bus.reply(r, 0).await.unwrap_err();
        assert!(matches!(late, ReplyError::RequesterGone { .. }), "{late}");
    }
}

/// A short request made while a long one waits times out on time: the
/// sweeper moves its wake-up earlier.
#[tokio::test(start_paused = true)]
async fn a_shorter_deadline_is_not_held_up_by_a_longer_one() {
    let bus = Bus::<u32>::new();
    let _silent = bus.subscribe("svc.slow").unwrap();
    let start = Instant::now();
    let long = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.request("svc.slow", 1, Duration::from_secs(3600)).await })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let err = bus
        .request("svc.slow", 2, Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::Timeout { .. }), "{err}");
    assert_eq!(start.elapsed(), Duration::from_millis(6500));
    assert!(!long.is_finished());
    let err = long.await.unwrap().unwrap_err();
    assert!(matches!(err, RequestError::Timeout { .. }), "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(3600));
}

/// Answered, dropped and closed requests leave no registration: a late
/// reply to any of them is refused, and the timeout of a dropped request
/// does not reach anyone.
#[tokio::test(start_paused = true)]
async fn a_request_given_up_leaves_nothing_for_a_late_reply() {
    let bus = Bus::<u32>::new();
    let mut svc = bus.subscribe("svc.echo").unwrap();
    // Dropped by its caller before any reply.
    let dropped = tokio::time::timeout(
        Duration::from_secs(1),
        bus.request("svc.echo", 1, Duration::from_secs(60)),
    )
    .await;
    assert!(dropped.is_err(), "the request had no reply to return");
    let first = svc.recv().await.unwrap();
    let late = bus.reply(&first, 0).await.unwrap_err();
    assert!(matches!(late, ReplyError::RequesterGone { .. }), "{late}");
    // Its deadline passes with nothing to time out; later requests work.
    tokio::time::sleep(Duration::from_secs(120)).await;
    let b = bus.clone();
    let answering = tokio::spawn(async move {
        let r = svc.recv().await.unwrap();
        b.reply(&r, r.payload + 1).await.unwrap();
        (svc, r)
    });
    let answer = bus
        .request("svc.echo", 41, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(answer.payload, 42);
    let (mut svc, answered) = answering.await.unwrap();
    let again = bus.reply(&answered, 0).await.unwrap_err();
    assert!(matches!(again, ReplyError::RequesterGone { .. }), "{again}");
    // Closing the bus answers a waiting request at once, as closed.
    let b = bus.clone();
    let waiting =
        tokio::spawn(async move { b.request("svc.echo", 7, Duration::from_secs(60)).await });
    let pending = svc.recv().await.unwrap();
    let before = Instant::now();
    bus.close();
    let err = waiting.await.unwrap().unwrap_err();
    assert!(matches!(err, RequestError::Closed { .. }), "{err}");
    assert_eq!(before.elapsed(), Duration::ZERO);
    let late = bus.reply(&pending, 0).await.unwrap_err();
    assert!(matches!(late, ReplyError::RequesterGone { .. }), "{late}");
}

/// The bus times requests out from a task of the runtime that made the
/// first request; when that runtime is gone, a request made in another
/// still times out (and is answered) there.
#[test]
fn timeouts_outlive_the_runtime_that_started_them() {
    let bus = Bus::<u32>::new();
    for round in 0..3u32 {
        let rt = paused_runtime();
        rt.block_on(async {
            let mut svc = bus.subscribe("svc.echo").unwrap();
            let start = Instant::now();
            // Bounded by a timer of this runtime, so a request that never
            // times out fails the test instead of hanging it.
            let err = tokio::time::timeout(
                Duration::from_secs(3600),
                bus.request("svc.echo", round, Duration::from_secs(10)),
            )
            .await
            .expect("the request never timed out")
            .unwrap_err();
            assert!(matches!(err, RequestError::Timeout { .. }), "{err}");
            assert_eq!(start.elapsed(), Duration::from_secs(10));
            let b = bus.clone();
            let answering = tokio::spawn(async move {
                let _unanswered = svc.recv().await.unwrap();
                let r = svc.recv().await.unwrap();
                b.reply(&r, r.payload * 2).await.unwrap();
            });
            let r = bus
                .request("svc.echo", 21, Duration::from_secs(10))
                .await
                .unwrap();
            assert_eq!(r.payload, 42);
            answering.await.unwrap();
        });
        drop(rt);
    }
}

/// In a runtime without timers a request fails loudly, as a tokio timer
/// would, instead of waiting without a deadline.
#[test]
fn a_runtime_without_timers_refuses_a_request_loudly() {
    let (tx, rx) = std::sync::mpsc::channel();
    // On a thread of its own: a request that waited forever fails the
    // test below instead of hanging it.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bus = Bus::<u32>::new();
        let _silent = bus.subscribe("svc.slow").unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(bus.request("svc.slow", 1, Duration::from_secs(1)))
        }));
        let message = match outcome {
            Ok(r) => format!("no panic: {r:?}"),
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default(),
        };
        let _ = tx.send(message);
    });
    let message = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the request neither failed nor returned");
    assert!(message.contains("timers are disabled"), "{message}");
}
