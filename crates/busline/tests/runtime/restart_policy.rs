//! Restart policies, backoff and restart limits: which ends are restarted,
//! after how long, and when the runtime gives up.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busline::{Backoff, Bus, ModuleState, Restart, Runtime, RuntimeError, StopReason, SystemEvent};

use crate::{failing, quiet_module_panics, runtime, Quick};

#[tokio::test(start_paused = true)]
async fn backoff_grows_exponentially_until_the_restart_limit() {
    let m = failing("flaky", Duration::ZERO, false);
    let starts = m.starts.clone();
    let mut rt = runtime(Bus::new());
    rt.add(m)
        .backoff(Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
            multiplier: 2.0,
            jitter: 0.0,
        })
        .max_restarts(4, Duration::from_secs(3600));
    let err = rt.run().await.unwrap_err();
    let RuntimeError::RestartLimit {
        module,
        restarts,
        max_restarts,
        last_error,
        report,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(module, "flaky");
    assert_eq!((*restarts, *max_restarts), (4, 4));
    assert_eq!(last_error, "flaky gave up");
    assert_eq!(report.module("flaky").unwrap().state, ModuleState::Failed);
    assert_eq!(report.reason, StopReason::ModuleFailed("flaky".into()));
    let s = starts.lock();
    let gaps: Vec<_> = s.windows(2).map(|w| w[1] - w[0]).collect();
    let ms = Duration::from_millis;
    assert_eq!(gaps, vec![ms(100), ms(200), ms(350), ms(350)]); // capped at max
    assert!(err
        .to_string()
        .starts_with("module `flaky` exceeded its restart limit (4 restarts within 3600s) after 4 restarts; last error: flaky gave up"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn restarts_outside_the_window_no_longer_count() {
    // Fails every 15 s; at most 1 restart per 10 s: never over the limit.
    let m = failing("slow", Duration::from_secs(15), false);
    let starts = m.starts.clone();
    let mut rt = runtime(Bus::new());
    let handle = rt.handle();
    let mut sys = rt
        .system_bus()
        .subscriber("$sys.module.slow.restarting")
        .lossy(64)
        .subscribe()
        .unwrap();
    rt.add(m)
        .backoff(Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.0,
        })
        .max_restarts(1, Duration::from_secs(10));
    let run = tokio::spawn(rt.run());
    while starts.lock().len() < 5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    handle.shutdown();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.reason, StopReason::Requested);
    assert_eq!(report.module("slow").unwrap().restarts, 4);
    // The backoff starts over each time: every delay is the initial one.
    for _ in 0..4 {
        match sys.recv().await.unwrap().payload.clone() {
            SystemEvent::Restarting { delay, .. } => assert_eq!(delay, Duration::from_millis(10)),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn restart_always_restarts_clean_exits_and_on_failure_does_not() {
    let mut rt = runtime(Bus::new());
    rt.add(Quick)
        .restart(Restart::Always)
        .backoff(Backoff::NONE)
        .max_restarts(3, Duration::from_secs(1));
    let err = rt.run().await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::RestartLimit { restarts: 3, .. }),
        "{err}"
    );

    let mut rt = runtime(Bus::new());
    rt.add(Quick); // on-failure (default): a clean exit is a stop
    let report = rt.run().await.unwrap();
    assert_eq!(report.reason, StopReason::Finished);
    assert_eq!(report.module("quick").unwrap().state, ModuleState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_factory_that_panics_on_restart_counts_as_a_failed_start() {
    quiet_module_panics();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let mut rt = runtime(Bus::new());
    rt.add_factory(move || {
        if c.fetch_add(1, Ordering::SeqCst) > 0 {
            panic!("boom in the factory");
        }
        failing("made", Duration::ZERO, false)
    })
    .backoff(Backoff::fixed(Duration::from_millis(1)))
    .max_restarts(2, Duration::from_secs(60));
    let err = rt.run().await.unwrap_err();
    match err {
        RuntimeError::RestartLimit {
            module,
            restarts,
            last_error,
            ..
        } => {
            assert_eq!(module, "made");
            assert_eq!(restarts, 2);
            assert_eq!(last_error, "panicked: boom in the factory");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// `Restart::Always` and a module that returns Ok past its restart limit:
/// its end is published as `failed` and recorded as its last error.
#[tokio::test(start_paused = true)]
async fn an_always_module_past_its_limit_publishes_its_end() {
    let mut rt = Runtime::new(Bus::<u32>::new()).handle_signals(false);
    let mut sys = rt
        .system_bus()
        .subscriber("$sys.module.>")
        .lossy(64)
        .subscribe()
        .unwrap();
    rt.add(Quick)
        .restart(Restart::Always)
        .backoff(Backoff::NONE)
        .max_restarts(1, Duration::from_secs(60));
    let err = rt.run().await.unwrap_err();
    let status = err.report().unwrap().module("quick").unwrap().clone();
    assert_eq!(status.state, ModuleState::Failed);
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("always")),
        "{status:?}"
    );
    let mut last = None;
    while let Ok(Some(ev)) = sys.try_recv() {
        last = Some(ev.payload.clone());
    }
    assert!(
        matches!(
            &last,
            Some(SystemEvent::Failed {
                will_restart: false,
                ..
            })
        ),
        "{last:?}"
    );
}
