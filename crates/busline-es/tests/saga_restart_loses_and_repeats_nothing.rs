//! A restart (everything dropped, the log reopened) neither loses nor
//! repeats a pending timeout or an emit that was stored but not published.

mod saga_support;

use std::time::Duration;

use busline::Bus;
use busline_es::saga::{emit_id, SagaManager, EMIT_HEADER};
use busline_log::Log;
use saga_support::{send, spawn_manager, Job, Msg};

#[tokio::test(start_paused = true)]
async fn a_pending_timeout_fires_once_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let log = Log::open(tmp.path(), Default::default()).unwrap();
        let bus: Bus<Msg> = Bus::new();
        let mut work = bus.subscribe("job.work").unwrap();
        let manager = SagaManager::<Job>::open(log).unwrap();
        let (stop, task) = spawn_manager(&manager, &bus).await;
        send(&bus, Msg::start("a", 30_000)).await;
        work.recv().await.unwrap();
        stop();
        task.await.unwrap().unwrap();
        let s = manager.inspect("a").unwrap().unwrap();
        assert_eq!(
            (s.pending_timeouts, s.timeouts_fired, s.unpublished),
            (1, 0, 0)
        );
    }
    // Everything dropped; a new process would start here.
    let log = Log::open(tmp.path(), Default::default()).unwrap();
    let bus: Bus<Msg> = Bus::new();
    let mut all = bus.subscribe("job.>").unwrap();
    let manager = SagaManager::<Job>::open(log).unwrap();
    let (stop, task) = spawn_manager(&manager, &bus).await;
    let fin = all.recv().await.unwrap();
    assert!(matches!(fin.payload, Msg::Finalize { .. }), "{fin:?}");
    assert_eq!(fin.id, emit_id("job", "a", 1));
    tokio::time::sleep(Duration::from_secs(86_400)).await;
    assert!(
        all.try_recv().unwrap().is_none(),
        "something was sent again"
    );
    stop();
    task.await.unwrap().unwrap();
    let s = manager.inspect("a").unwrap().unwrap();
    assert!(s.finished);
    assert_eq!(
        (s.timeouts_fired, s.state.fired, s.state.work_emitted),
        (1, 1, 1)
    );
}

/// Waits (real time, bounded) until `f` holds.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..2_000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("gave up waiting: {what}");
}

#[tokio::test]
async fn an_emit_stored_but_not_published_is_published_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let log = Log::open(tmp.path(), Default::default()).unwrap();
        let bus: Bus<Msg> = Bus::new();
        // A full lossless subscriber holds the manager's publish: the step
        // is stored, its emit is not published, and the manager dies there.
        let _full = bus.subscriber("job.work").lossless(1).subscribe().unwrap();
        bus.publish_to("job.work", Msg::Other).await.unwrap();
        let manager = SagaManager::<Job>::open(log).unwrap();
        let (_stop, task) = spawn_manager(&manager, &bus).await;
        send(&bus, Msg::start("a", 200)).await;
        eventually("the step is stored", || {
            manager
                .inspect("a")
                .unwrap()
                .is_some_and(|s| s.unpublished == 1)
        })
        .await;
        task.abort();
        let _ = task.await;
        let s = manager.inspect("a").unwrap().unwrap();
        assert_eq!((s.emitted, s.unpublished), (1, 1));
    }
    let log = Log::open(tmp.path(), Default::default()).unwrap();
    let bus: Bus<Msg> = Bus::new();
    let mut all = bus.subscribe("job.>").unwrap();
    let manager = SagaManager::<Job>::open(log).unwrap();
    let (stop, task) = spawn_manager(&manager, &bus).await;
    let work = all.recv().await.unwrap();
    assert_eq!(work.payload, Msg::Work { job: "a".into() });
    assert_eq!(work.id, emit_id("job", "a", 0));
    assert_eq!(work.header(EMIT_HEADER), Some("job/a/0"));
    let fin = all.recv().await.unwrap();
    assert!(matches!(fin.payload, Msg::Finalize { .. }), "{fin:?}");
    stop();
    task.await.unwrap().unwrap();
    assert!(
        all.try_recv().unwrap().is_none(),
        "something was sent twice"
    );
    let s = manager.inspect("a").unwrap().unwrap();
    assert_eq!((s.emitted, s.unpublished, s.timeouts_fired), (2, 0, 1));
    assert_eq!((s.state.work_emitted, s.state.finalize_emitted), (1, 1));
}
