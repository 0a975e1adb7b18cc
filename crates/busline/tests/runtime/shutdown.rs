//! Shutdown stops modules in reverse start order, aborts those past their
//! deadline, abandons code that never yields, and counts what was left.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busline::{BoxError, Bus, Context, Module, ModuleState, Runtime, SystemEvent};
use tokio::time::Instant;

use crate::{idle, runtime, Idle, Log};

#[tokio::test(start_paused = true)]
async fn modules_stop_in_reverse_start_order() {
    let log: Log = Arc::default();
    let mut rt = runtime(Bus::new());
    let handle = rt.handle();
    for name in ["a", "b", "c"] {
        rt.add(Idle {
            name,
            log: Some(log.clone()),
        });
    }
    let run = tokio::spawn(rt.run());
    tokio::time::sleep(Duration::from_secs(1)).await;
    handle.shutdown();
    let report = run.await.unwrap().unwrap();
    assert_eq!(*log.lock(), vec!["c", "b", "a"]);
    assert!(report.aborted.is_empty());
    assert!(report
        .modules
        .iter()
        .all(|m| m.state == ModuleState::Stopped));
}

/// Awaits, but ignores the shutdown signal.
#[derive(Clone)]
struct Stubborn;

impl Module<u32> for Stubborn {
    fn name(&self) -> &str {
        "stubborn"
    }
    async fn run(&mut self, _ctx: Context<u32>) -> Result<(), BoxError> {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_module_that_ignores_shutdown_is_aborted_at_its_deadline() {
    let log: Log = Arc::default();
    let mut rt = runtime(Bus::new());
    let handle = rt.handle();
    let mut stopped = rt
        .system_bus()
        .subscriber("$sys.module.*.stopped")
        .lossy(16)
        .subscribe()
        .unwrap();
    rt.add(Idle {
        name: "polite",
        log: Some(log.clone()),
    });
    rt.add(Stubborn).shutdown_timeout(Duration::from_secs(2));
    let run = tokio::spawn(rt.run());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = Instant::now();
    handle.shutdown();
    let report = run.await.unwrap().unwrap();
    // The stubborn one (added last) was waited for 2 s, then aborted; then
    // the polite one stopped.
    assert_eq!(Instant::now() - t0, Duration::from_secs(2));
    assert_eq!(report.aborted, vec!["stubborn".to_string()]);
    assert!(report.abandoned.is_empty());
    assert_eq!(
        report.module("stubborn").unwrap().state,
        ModuleState::Aborted
    );
    assert_eq!(report.module("polite").unwrap().state, ModuleState::Stopped);
    assert_eq!(*log.lock(), vec!["polite"]);
    let first = stopped.recv().await.unwrap();
    assert_eq!(
        first.payload,
        SystemEvent::Stopped {
            module: "stubborn".into(),
            aborted: true
        }
    );
    assert_eq!(first.topic.as_str(), "$sys.module.stubborn.stopped");
}

/// Waits on blocking work in `spawn_blocking`, ignoring shutdown.
struct WaitsOnBlocking {
    gate: Arc<std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>>,
    entered: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
}

impl Module<u32> for WaitsOnBlocking {
    fn name(&self) -> &str {
        "blocking"
    }
    async fn run(&mut self, _ctx: Context<u32>) -> Result<(), BoxError> {
        let rx = self.gate.lock().unwrap().take().unwrap();
        let (entered, finished) = (self.entered.clone(), self.finished.clone());
        tokio::task::spawn_blocking(move || {
            entered.store(true, Ordering::SeqCst);
            let _ = rx.recv();
            finished.store(true, Ordering::SeqCst);
        })
        .await?;
        Ok(())
    }
}

// Real time (a blocking task holds virtual time still), with short deadlines
// that only need to pass: nothing here asserts how long anything took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_work_outlives_the_aborted_module() {
    let (tx, rx) = std::sync::mpsc::channel();
    let finished = Arc::new(AtomicBool::new(false));
    let entered = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(std::sync::Mutex::new(Some(rx)));
    let (g, e, f) = (gate.clone(), entered.clone(), finished.clone());
    let mut rt = runtime(Bus::new()).abort_grace(Duration::from_secs(5));
    let handle = rt.handle();
    rt.add_factory(move || WaitsOnBlocking {
        gate: g.clone(),
        entered: e.clone(),
        finished: f.clone(),
    })
    .shutdown_timeout(Duration::from_millis(50));
    handle.shutdown();
    // Shutdown before run: the module is never started.
    let report = rt.run().await.unwrap();
    assert_eq!(
        report.module("blocking").unwrap().state,
        ModuleState::Stopped
    );

    let (g, e, f) = (gate.clone(), entered.clone(), finished.clone());
    let mut rt = runtime(Bus::new()).abort_grace(Duration::from_secs(5));
    let handle = rt.handle();
    rt.add_factory(move || WaitsOnBlocking {
        gate: g.clone(),
        entered: e.clone(),
        finished: f.clone(),
    })
    .shutdown_timeout(Duration::from_millis(50));
    let run = tokio::spawn(rt.run());
    while !entered.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    handle.shutdown();
    let report = run.await.unwrap().unwrap();
    // The module's await on the blocking task was cancelled...
    assert_eq!(report.aborted, vec!["blocking".to_string()]);
    assert!(report.abandoned.is_empty());
    // ... but the blocking closure itself runs on until it ends.
    assert!(!finished.load(Ordering::SeqCst));
    tx.send(()).unwrap();
    while !finished.load(Ordering::SeqCst) {
        tokio::task::yield_now().await;
    }
}

/// Never yields after its first `.await`: spins until released.
#[derive(Clone)]
struct Spinner {
    spinning: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
}

impl Module<u32> for Spinner {
    fn name(&self) -> &str {
        "spinner"
    }
    async fn run(&mut self, _ctx: Context<u32>) -> Result<(), BoxError> {
        tokio::task::yield_now().await;
        self.spinning.store(true, Ordering::SeqCst);
        while !self.release.load(Ordering::SeqCst) {
            std::hint::spin_loop();
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_that_never_yields_is_abandoned_and_reported() {
    let release = Arc::new(AtomicBool::new(false));
    let spinning = Arc::new(AtomicBool::new(false));
    let mut rt = runtime(Bus::new()).abort_grace(Duration::from_millis(50));
    let handle = rt.handle();
    rt.add(Spinner {
        spinning: spinning.clone(),
        release: release.clone(),
    })
    .shutdown_timeout(Duration::from_millis(50));
    let run = tokio::spawn(rt.run());
    while !spinning.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    handle.shutdown();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.aborted, vec!["spinner".to_string()]);
    assert_eq!(report.abandoned, vec!["spinner".to_string()]);
    release.store(true, Ordering::SeqCst); // free the worker thread
}

#[tokio::test(start_paused = true)]
async fn events_left_queued_at_shutdown_are_counted_as_discarded() {
    /// Subscribes, never reads.
    #[derive(Clone)]
    struct Deaf;
    impl Module<u32> for Deaf {
        fn name(&self) -> &str {
            "deaf"
        }
        async fn run(&mut self, ctx: Context<u32>) -> Result<(), BoxError> {
            let _sub = ctx.subscribe("noise")?;
            ctx.shutdown_requested().await;
            Ok(())
        }
    }
    let bus = Bus::new();
    let mut rt = runtime(bus.clone());
    rt.add(Deaf);
    let handle = rt.handle();
    let run = tokio::spawn(rt.run());
    tokio::task::yield_now().await;
    for i in 0..5 {
        let r = bus.publish_to("noise", i).await.unwrap();
        assert_eq!(r.subscribers, 1);
    }
    handle.shutdown();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.module("deaf").unwrap().discarded, 5);
    assert_eq!(bus.stats().discarded, 5);
}

/// A shutdown timeout too long to add to the clock (`Duration::MAX`,
/// "never abort") is waited for, not a panic of the runtime.
#[tokio::test(start_paused = true)]
async fn a_shutdown_timeout_of_duration_max_means_never_abort() {
    let mut rt = Runtime::new(Bus::<u32>::new()).handle_signals(false);
    rt.add(idle("idle")).shutdown_timeout(Duration::MAX);
    let handle = rt.handle();
    let run = tokio::spawn(rt.run());
    tokio::time::sleep(Duration::from_millis(10)).await;
    handle.shutdown();
    let report = run.await.expect("the runtime did not panic").unwrap();
    assert_eq!(report.module("idle").unwrap().state, ModuleState::Stopped);
}
