//! With durable inputs, a saga manager misses nothing published while it
//! was not running, and handles nothing twice across restarts.

mod saga_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use busline::Bus;
use busline::EventStore;
use busline_es::saga::SagaManager;
use busline_log::{Log, LogStore};
use saga_support::{send, spawn_manager, Job, Msg};

/// The application's bus, persisting the saga's input topics to a log of
/// its own (the sagas keep theirs apart).
fn bus(dir: &Path) -> (Bus<Msg>, Arc<LogStore<Msg>>) {
    let store = Arc::new(LogStore::<Msg>::open(dir.join("bus"), Default::default()).unwrap());
    let bus = Bus::new();
    bus.persist("job.in.>", store.clone()).unwrap();
    (bus, store)
}

/// Where the manager's input consumer goes on from.
fn committed(store: &LogStore<Msg>) -> Option<u64> {
    EventStore::committed_offset(store, "job.inputs.0").unwrap()
}

fn manager(dir: &Path) -> SagaManager<Job> {
    let log = Log::open(dir.join("sagas"), Default::default()).unwrap();
    SagaManager::<Job>::open(log).unwrap().durable_inputs()
}

/// Waits (bounded) until `f` holds.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..2_000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("gave up waiting: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_published_while_no_manager_runs_are_handled_once_it_does() {
    let tmp = tempfile::tempdir().unwrap();
    {
        // Published before any manager exists.
        let (bus, store) = bus(tmp.path());
        for job in ["a", "b", "c"] {
            send(&bus, Msg::start(job, 3_600_000)).await;
        }
        let m = manager(tmp.path());
        let (stop, task) = spawn_manager(&m, &bus).await;
        eventually("the three starts are handled", || {
            ["a", "b", "c"]
                .iter()
                .all(|j| m.inspect(j).unwrap().is_some_and(|s| s.state.started == 1))
        })
        .await;
        stop();
        task.await.unwrap().unwrap();
        assert_eq!(committed(&store), Some(3));
        bus.close();
    }
    // A new process: `a` is done and `b` aborted while no manager runs.
    let (bus, store) = bus(tmp.path());
    send(&bus, Msg::Done { job: "a".into() }).await;
    send(&bus, Msg::Abort { job: "b".into() }).await;
    let m = manager(tmp.path());
    let (stop, task) = spawn_manager(&m, &bus).await;
    eventually("done and abort are handled", || {
        let a = m.inspect("a").unwrap().unwrap();
        let b = m.inspect("b").unwrap().unwrap();
        a.state.done && b.finished
    })
    .await;
    stop();
    task.await.unwrap().unwrap();
    assert_eq!(committed(&store), Some(5));
    for job in ["a", "b", "c"] {
        let s = m.inspect(job).unwrap().unwrap();
        assert_eq!((s.state.started, s.state.work_emitted), (1, 1), "{job}");
    }
    assert_eq!(m.inspect("a").unwrap().unwrap().handled, 2);
    assert_eq!(m.inspect("c").unwrap().unwrap().handled, 1);
}

#[tokio::test]
async fn durable_inputs_on_topics_no_store_keeps_fail_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let bus: Bus<Msg> = Bus::new();
    let ctx = busline::Context::detached("job", bus.clone());
    let mut m = manager(tmp.path());
    let err = busline::Module::run(&mut m, ctx).await.unwrap_err();
    assert!(err.to_string().contains("job.in.>"), "{err}");
}
