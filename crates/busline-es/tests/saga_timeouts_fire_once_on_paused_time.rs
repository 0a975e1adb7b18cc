//! Timeouts follow tokio's clock: on paused time each fires once, not
//! before it is due, and a saga that finishes first cancels its own.

mod saga_support;

use std::time::Duration;

use busline::Bus;
use busline_es::saga::SagaManager;
use saga_support::{send, spawn_manager, Job, Msg};

#[tokio::test(start_paused = true)]
async fn each_timeout_fires_once_when_due_and_finishing_cancels_it() {
    let tmp = tempfile::tempdir().unwrap();
    let log = busline_log::Log::open(tmp.path(), Default::default()).unwrap();
    let bus: Bus<Msg> = Bus::new();
    let mut finals = bus.subscribe("job.finalize").unwrap();
    let manager = SagaManager::<Job>::open(log).unwrap();
    let (stop, task) = spawn_manager(&manager, &bus).await;

    let t0 = tokio::time::Instant::now();
    send(&bus, Msg::start("a", 5_000)).await;
    send(&bus, Msg::start("b", 60_000)).await;
    send(&bus, Msg::start("c", 10_000)).await;
    send(&bus, Msg::Abort { job: "c".into() }).await;

    let first = finals.recv().await.unwrap();
    assert_eq!(first.payload.job(), "a");
    assert!(
        t0.elapsed() >= Duration::from_secs(5),
        "fired early: {:?}",
        t0.elapsed()
    );
    let second = finals.recv().await.unwrap();
    assert_eq!(second.payload.job(), "b");
    assert!(
        t0.elapsed() >= Duration::from_secs(60),
        "fired early: {:?}",
        t0.elapsed()
    );

    // A day later: nothing fires again, and the aborted saga's timeout never did.
    tokio::time::sleep(Duration::from_secs(86_400)).await;
    assert!(finals.try_recv().unwrap().is_none());
    stop();
    task.await.unwrap().unwrap();

    for (job, fired) in [("a", 1), ("b", 1), ("c", 0)] {
        let s = manager.inspect(job).unwrap().unwrap();
        assert!(s.finished, "{job} not finished");
        assert_eq!(
            (s.timeouts_fired, s.state.fired),
            (fired, fired as u32),
            "{job}"
        );
        assert_eq!(s.pending_timeouts, 0, "{job}");
        assert_eq!(s.unpublished, 0, "{job}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_redelivered_message_is_not_handled_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let log = busline_log::Log::open(tmp.path(), Default::default()).unwrap();
    let bus: Bus<Msg> = Bus::new();
    let mut out = bus.subscribe("job.*").unwrap();
    let manager = SagaManager::<Job>::open(log).unwrap();
    let (stop, task) = spawn_manager(&manager, &bus).await;

    let id = busline::EventId::from_u128(42);
    for _ in 0..3 {
        let msg = busline::Message::new(Msg::start("a", 1_000))
            .topic("job.in.start")
            .id(id);
        bus.send(msg).await.unwrap();
    }
    let w = out.recv().await.unwrap();
    assert_eq!(w.payload, Msg::Work { job: "a".into() });
    assert_eq!(w.id, busline_es::saga::emit_id("job", "a", 0));
    // The next thing out is the timeout's, not a second `Work`.
    let f = out.recv().await.unwrap();
    assert!(matches!(f.payload, Msg::Finalize { .. }), "{f:?}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(out.try_recv().unwrap().is_none(), "something emitted twice");
    stop();
    task.await.unwrap().unwrap();
    let s = manager.inspect("a").unwrap().unwrap();
    assert_eq!((s.state.started, s.handled, s.emitted), (1, 1, 2));
}
