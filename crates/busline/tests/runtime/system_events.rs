//! Lifecycle events and status answers on the system bus, which no full
//! system subscriber holds back from the others.

use std::time::Duration;

use busline::{Backoff, Bus, Config, ModuleState, Runtime, SystemEvent};

use crate::{failing, idle, runtime, Quick};

#[tokio::test(start_paused = true)]
async fn lifecycle_events_on_sys_topics() {
    let mut rt = runtime(Bus::new());
    let mut all = rt
        .system_bus()
        .subscriber("$sys.module.>")
        .lossy(64)
        .subscribe()
        .unwrap();
    let mut failed = rt
        .system_bus()
        .subscriber("$sys.module.*.failed")
        .lossy(64)
        .subscribe()
        .unwrap();
    let mut shutting = rt.system_bus().subscribe("$sys.runtime.shutdown").unwrap();
    let m = failing("once", Duration::from_millis(1), false);
    rt.add(m)
        .backoff(Backoff::fixed(Duration::from_millis(7)))
        .max_restarts(1, Duration::from_secs(60));
    rt.run().await.unwrap_err();
    let mut topics = Vec::new();
    while let Ok(Some(ev)) = all.try_recv() {
        topics.push(ev.topic.to_string());
    }
    assert_eq!(
        topics,
        [
            "$sys.module.once.started",
            "$sys.module.once.failed",
            "$sys.module.once.restarting",
            "$sys.module.once.started",
            "$sys.module.once.failed",
        ]
    );
    let f = failed.recv().await.unwrap();
    assert_eq!(
        f.payload,
        SystemEvent::Failed {
            module: "once".into(),
            error: "once gave up".into(),
            panicked: false,
            will_restart: true
        }
    );
    let f = failed.recv().await.unwrap();
    assert!(matches!(
        f.payload,
        SystemEvent::Failed {
            will_restart: false,
            ..
        }
    ));
    assert!(matches!(
        shutting.recv().await.unwrap().payload,
        SystemEvent::ShuttingDown { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn status_request_lists_every_module() {
    let config = Config::from_toml("[modules.off]\nenabled = false\n").unwrap();
    let mut rt = runtime(Bus::new()).with_config(config);
    rt.add(idle("steady"));
    rt.add(idle("off"));
    rt.add(Quick);
    rt.add(failing("wobbly", Duration::from_millis(1), false))
        .backoff(Backoff::fixed(Duration::from_secs(3600)));
    let handle = rt.handle();
    let system = rt.system_bus().clone();
    let run = tokio::spawn(rt.run());
    tokio::time::sleep(Duration::from_secs(5)).await;

    let status = handle.status(Duration::from_secs(1)).await.unwrap();
    let line = |n: &str| status.iter().find(|m| m.name == n).unwrap().clone();
    let names: Vec<_> = status.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["steady", "off", "quick", "wobbly"]);
    assert_eq!(line("steady").state, ModuleState::Running);
    assert_eq!(line("steady").uptime, Some(Duration::from_secs(5)));
    assert_eq!(line("off").state, ModuleState::Disabled);
    assert_eq!(line("quick").state, ModuleState::Stopped);
    assert_eq!(line("quick").uptime, None);
    let wobbly = line("wobbly");
    assert_eq!(wobbly.state, ModuleState::Restarting);
    assert_eq!(wobbly.restarts, 1);
    assert_eq!(wobbly.last_error.as_deref(), Some("wobbly gave up"));

    // The same through a plain request on the system bus.
    let reply = system
        .request(
            busline::STATUS_TOPIC,
            SystemEvent::StatusRequest,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert!(matches!(&reply.payload, SystemEvent::Status { modules } if modules.len() == 4));

    handle.shutdown();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.module("wobbly").unwrap().state, ModuleState::Stopped);
    assert_eq!(report.module("off").unwrap().state, ModuleState::Disabled);
}

/// A full lossless system subscriber misses events; a lossy one beside it
/// gets every one (before, the full one made the runtime skip all of them).
#[tokio::test(start_paused = true)]
async fn a_full_system_subscriber_does_not_keep_events_from_the_others() {
    let mut rt = Runtime::new(Bus::<u32>::new()).handle_signals(false);
    let _stuck = rt
        .system_bus()
        .subscriber("$sys.>")
        .lossless(1)
        .subscribe()
        .unwrap();
    let mut monitor = rt
        .system_bus()
        .subscriber("$sys.>")
        .lossy(64)
        .subscribe()
        .unwrap();
    rt.add(Quick);
    let report = rt.run().await.unwrap();
    let mut topics = Vec::new();
    while let Ok(Some(ev)) = monitor.try_recv() {
        topics.push(ev.topic.to_string());
    }
    assert_eq!(
        topics,
        [
            "$sys.module.quick.started",
            "$sys.module.quick.stopped",
            "$sys.runtime.shutdown"
        ]
    );
    assert_eq!(report.system_events_refused, 2, "the full one missed two");
}
