//! A saga handler that panics fails the manager module; the runtime
//! restarts it like any module, and the new instance rebuilds every saga
//! from the log and goes on.

mod saga_support;

use std::time::Duration;

use busline::{Backoff, Bus, Runtime, SystemEvent};
use busline_es::saga::SagaManager;
use saga_support::{send, Job, Msg};

#[tokio::test]
async fn a_panicking_handler_is_restarted_by_the_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let log = busline_log::Log::open(tmp.path(), Default::default()).unwrap();
    let bus: Bus<Msg> = Bus::new();
    let mut work = bus.subscribe("job.work").unwrap();
    let manager = SagaManager::<Job>::open(log).unwrap();
    let mut rt = Runtime::new(bus.clone()).handle_signals(false);
    rt.add(manager.clone())
        .backoff(Backoff::fixed(Duration::from_millis(10)));
    let mut sys = rt.system_bus().subscribe("$sys.module.job.>").unwrap();
    let handle = rt.handle();
    let run = tokio::spawn(rt.run());

    manager.ready().await;
    send(&bus, Msg::start("a", 3_600_000)).await;
    assert_eq!(work.recv().await.unwrap().payload.job(), "a");
    send(&bus, Msg::Boom { job: "a".into() }).await;

    // Failed (panicked, will restart), then started again.
    let mut failed = false;
    loop {
        let ev = sys.recv().await.unwrap();
        match &ev.payload {
            SystemEvent::Failed {
                panicked,
                will_restart,
                error,
                ..
            } => {
                assert!(*panicked && *will_restart, "{:?}", ev.payload);
                assert!(error.contains("boom requested for job a"), "{error}");
                failed = true;
            }
            SystemEvent::Started { restarts: 1, .. } => break,
            _ => {}
        }
    }
    assert!(failed);
    manager.ready().await;
    send(&bus, Msg::start("b", 3_600_000)).await;
    assert_eq!(work.recv().await.unwrap().payload.job(), "b");

    handle.shutdown();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.module("job").unwrap().restarts, 1);
    // Saga a is as it was before the panic: the failed step stored nothing.
    let a = manager.inspect("a").unwrap().unwrap();
    assert_eq!((a.handled, a.emitted, a.pending_timeouts), (1, 1, 1));
    assert!(!a.finished);
    assert_eq!(manager.inspect("b").unwrap().unwrap().state.started, 1);
}
