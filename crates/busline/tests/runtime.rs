//! Runtime behaviour: supervision, shutdown, lineage, system events, config.
//! Time is virtual (`start_paused`) wherever timing matters.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busline::{
    Backoff, BoxError, Bus, Config, ConfigError, Context, Message, Module, ModuleState, Restart,
    Runtime, RuntimeError, StopReason, SystemEvent,
};
use parking_lot::Mutex;
use tokio::time::Instant;

type Log = Arc<Mutex<Vec<String>>>;

/// Waits for shutdown, optionally recording when it was told to stop.
#[derive(Clone)]
struct Idle {
    name: &'static str,
    log: Option<Log>,
}

impl Module<u32> for Idle {
    fn name(&self) -> &str {
        self.name
    }
    async fn run(&mut self, ctx: Context<u32>) -> Result<(), BoxError> {
        ctx.shutdown_requested().await;
        if let Some(log) = &self.log {
            log.lock().push(self.name.to_string());
        }
        Ok(())
    }
}

fn idle(name: &'static str) -> Idle {
    Idle { name, log: None }
}

/// Fails (error or panic) after `after`, recording each start time.
#[derive(Clone)]
struct Failing {
    name: &'static str,
    after: Duration,
    panic: bool,
    starts: Arc<Mutex<Vec<Instant>>>,
}

impl Module<u32> for Failing {
    fn name(&self) -> &str {
        self.name
    }
    async fn run(&mut self, _ctx: Context<u32>) -> Result<(), BoxError> {
        self.starts.lock().push(Instant::now());
        tokio::time::sleep(self.after).await;
        if self.panic {
            panic!("boom in {}", self.name);
        }
        Err(format!("{} gave up", self.name).into())
    }
}

fn failing(name: &'static str, after: Duration, panic: bool) -> Failing {
    quiet_module_panics();
    Failing {
        name,
        after,
        panic,
        starts: Arc::default(),
    }
}

/// Keeps the expected "boom in ..." panics of modules out of the test output.
fn quiet_module_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            let msg = (p.downcast_ref::<String>().map(|s| s.as_str()))
                .or_else(|| p.downcast_ref::<&str>().copied());
            if !msg.is_some_and(|m| m.starts_with("boom in ")) {
                default(info);
            }
        }));
    });
}

fn runtime(bus: Bus<u32>) -> Runtime<u32> {
    Runtime::new(bus).handle_signals(false)
}

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

/// Publishes 0..n on `count`, one every 10 ms.
#[derive(Clone)]
struct Counter {
    n: u32,
}

impl Module<u32> for Counter {
    fn name(&self) -> &str {
        "counter"
    }
    async fn run(&mut self, ctx: Context<u32>) -> Result<(), BoxError> {
        for i in 0..self.n {
            ctx.publish_to("count", i).await?;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn panics_in_one_module_never_disturb_another_modules_stream() {
    let bus = Bus::new();
    let mut count = bus.subscriber("count").lossless(16).subscribe().unwrap();
    let mut rt = runtime(bus);
    let crasher = failing("crasher", Duration::from_millis(35), true);
    let starts = crasher.starts.clone();
    rt.add(crasher)
        .backoff(Backoff::fixed(Duration::from_millis(5)))
        .max_restarts(1000, Duration::from_secs(60));
    rt.add(Counter { n: 500 });
    let handle = rt.handle();
    let run = tokio::spawn(rt.run());
    let mut last_seq = None;
    for expected in 0..500 {
        let ev = count.recv().await.unwrap();
        assert_eq!(ev.payload, expected, "no gap, no duplicate");
        assert!(last_seq < Some(ev.seq), "bus sequence numbers only grow");
        last_seq = Some(ev.seq);
        assert_eq!(ev.source.as_deref(), Some("counter"));
    }
    handle.shutdown();
    let report = run.await.unwrap().unwrap();
    // Nothing more, and the bus closed with the runtime (it held the last handle).
    assert_eq!(count.try_recv().unwrap_err(), busline::RecvError::Closed);
    let crasher = report.module("crasher").unwrap();
    assert!(crasher.restarts >= 100, "{crasher:?}");
    assert_eq!(starts.lock().len() as u32, crasher.restarts + 1);
    assert_eq!(
        crasher.last_error.as_deref(),
        Some("panicked: boom in crasher")
    );
    assert_eq!(report.module("counter").unwrap().restarts, 0);
}

#[tokio::test(start_paused = true)]
async fn a_failure_under_restart_never_stops_the_runtime() {
    let mut rt = runtime(Bus::new());
    let log: Log = Arc::default();
    rt.add(Idle {
        name: "bystander",
        log: Some(log.clone()),
    });
    rt.add(failing("fragile", Duration::from_millis(5), true))
        .restart(Restart::Never);
    let err = rt.run().await.unwrap_err();
    match &err {
        RuntimeError::ModuleFailed {
            module,
            error,
            restarts,
            report,
        } => {
            assert_eq!(module, "fragile");
            assert_eq!(error, "panicked: boom in fragile");
            assert_eq!(*restarts, 0);
            assert_eq!(
                report.module("bystander").unwrap().state,
                ModuleState::Stopped
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "module `fragile` failed and its restart policy is `never`: panicked: boom in fragile"
    );
    assert_eq!(
        *log.lock(),
        vec!["bystander"],
        "the others were stopped gracefully"
    );
}

/// Returns Ok at once; under `Restart::Always` that is restarted too.
#[derive(Clone)]
struct Quick;

impl Module<u32> for Quick {
    fn name(&self) -> &str {
        "quick"
    }
    async fn run(&mut self, _ctx: Context<u32>) -> Result<(), BoxError> {
        Ok(())
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

/// Publishes `enriched` for each `raw` event, and `bye` at shutdown.
#[derive(Clone)]
struct Enricher;

impl Module<u32> for Enricher {
    fn name(&self) -> &str {
        "enricher"
    }
    async fn run(&mut self, ctx: Context<u32>) -> Result<(), BoxError> {
        let mut raw = ctx.subscribe("raw")?;
        loop {
            tokio::select! {
                ev = raw.recv() => {
                    let ev = ev?;
                    ctx.publish_to("enriched", ev.payload * 10).await?;
                }
                _ = ctx.shutdown_requested() => {
                    ctx.publish_to("bye", 0).await?;
                    return Ok(());
                }
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn events_published_while_handling_carry_lineage() {
    let bus = Bus::new();
    let mut enriched = bus.subscribe("enriched").unwrap();
    let mut bye = bus.subscribe("bye").unwrap();
    let mut rt = runtime(bus.clone());
    rt.add(Enricher);
    let handle = rt.handle();
    let run = tokio::spawn(rt.run());
    tokio::task::yield_now().await;

    let conversation = busline::EventId::from_u128(42);
    let first = bus
        .send(
            Message::new(1)
                .topic("raw")
                .correlation_id(conversation)
                .source("test"),
        )
        .await
        .unwrap();
    let second = bus.publish_to("raw", 2).await.unwrap();
    let e1 = enriched.recv().await.unwrap();
    assert_eq!(e1.payload, 10);
    assert_eq!(e1.causation_id(), Some(first.id));
    assert_eq!(e1.correlation_id, conversation);
    assert_eq!(e1.source.as_deref(), Some("enricher"));
    let e2 = enriched.recv().await.unwrap();
    assert_eq!(e2.causation_id(), Some(second.id));
    assert_eq!(e2.correlation_id, second.id, "a new conversation");

    handle.shutdown();
    run.await.unwrap().unwrap();
    let b = bye.recv().await.unwrap();
    assert_eq!(
        b.causation_id(),
        None,
        "not handling anything when it stopped"
    );
    assert_eq!(b.correlation_id, b.id);
}

/// Publishes `enriched` for each `raw` event through one `Publisher`,
/// made before it receives anything.
#[derive(Clone)]
struct HandleEnricher;

impl Module<u32> for HandleEnricher {
    fn name(&self) -> &str {
        "handle-enricher"
    }
    async fn run(&mut self, ctx: Context<u32>) -> Result<(), BoxError> {
        let mut raw = ctx.subscribe("raw")?;
        let mut enriched = ctx.publisher("enriched")?;
        loop {
            tokio::select! {
                ev = raw.recv() => {
                    enriched.publish(ev?.payload * 10).await?;
                }
                _ = ctx.shutdown_requested() => return Ok(()),
            }
        }
    }
}

/// A module's `Publisher` stamps what it publishes as the module's own
/// publishes are: its name, and the event it was handling as the cause.
#[tokio::test(start_paused = true)]
async fn a_module_publisher_stamps_name_and_lineage() {
    let bus = Bus::new();
    let mut enriched = bus.subscribe("enriched").unwrap();
    let mut rt = runtime(bus.clone());
    rt.add(HandleEnricher);
    let handle = rt.handle();
    let run = tokio::spawn(rt.run());
    tokio::task::yield_now().await;

    let conversation = busline::EventId::from_u128(7);
    let first = bus
        .send(Message::new(1).topic("raw").correlation_id(conversation))
        .await
        .unwrap();
    let second = bus.publish_to("raw", 2).await.unwrap();
    let e1 = enriched.recv().await.unwrap();
    assert_eq!(
        (e1.payload, e1.source.as_deref()),
        (10, Some("handle-enricher"))
    );
    assert_eq!(e1.causation_id(), Some(first.id));
    assert_eq!(e1.correlation_id, conversation);
    let e2 = enriched.recv().await.unwrap();
    assert_eq!(e2.causation_id(), Some(second.id));
    assert_eq!(e2.correlation_id, second.id);

    handle.shutdown();
    run.await.unwrap().unwrap();
}

/// Echoes every `chat` event it receives back onto `chat`.
#[derive(Clone)]
struct Echo {
    include_own: bool,
    received: Arc<AtomicU32>,
}

impl Module<u32> for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    async fn run(&mut self, ctx: Context<u32>) -> Result<(), BoxError> {
        let mut chat = ctx
            .subscriber("chat")
            .include_own(self.include_own)
            .subscribe()?;
        loop {
            let ev = tokio::select! {
                ev = chat.recv() => ev?,
                _ = ctx.shutdown_requested() => return Ok(()),
            };
            self.received.fetch_add(1, Ordering::SeqCst);
            if ev.payload < 3 {
                ctx.publish_to("chat", ev.payload + 1).await?;
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_module_does_not_receive_its_own_events_unless_it_opts_in() {
    for (include_own, expected) in [(false, 1), (true, 4)] {
        let bus = Bus::new();
        let mut chat = bus.subscribe("chat").unwrap();
        let received = Arc::new(AtomicU32::new(0));
        let mut rt = runtime(bus.clone());
        rt.add(Echo {
            include_own,
            received: received.clone(),
        });
        let handle = rt.handle();
        let run = tokio::spawn(rt.run());
        tokio::task::yield_now().await;
        bus.publish_to("chat", 0).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            received.load(Ordering::SeqCst),
            expected,
            "include_own={include_own}"
        );
        let mut seen = Vec::new();
        while let Ok(Some(ev)) = chat.try_recv() {
            seen.push(ev.payload);
        }
        let want: Vec<u32> = if include_own {
            vec![0, 1, 2, 3]
        } else {
            vec![0, 1]
        };
        assert_eq!(seen, want);
        handle.shutdown();
        let report = run.await.unwrap().unwrap();
        assert!(report.aborted.is_empty());
    }
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

#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GreeterConfig {
    greeting: String,
}

struct Greeter {
    cfg: GreeterConfig,
}

impl Module<String> for Greeter {
    fn name(&self) -> &str {
        "greeter"
    }
    async fn run(&mut self, ctx: Context<String>) -> Result<(), BoxError> {
        ctx.publish_to("greetings", self.cfg.greeting.clone())
            .await?;
        Ok(())
    }
}

fn greeter_runtime(toml: &str) -> Runtime<String> {
    let config = Config::from_toml(toml).unwrap();
    let mut rt = Runtime::new(Bus::new())
        .handle_signals(false)
        .with_config(config);
    rt.add_configured("greeter", |cfg: GreeterConfig| Greeter { cfg });
    rt
}

#[tokio::test(start_paused = true)]
async fn configured_modules_get_their_section() {
    let rt = greeter_runtime("[modules.greeter]\ngreeting = \"hi\"\n");
    let mut greetings = rt.bus().subscribe("greetings").unwrap();
    let report = rt.run().await.unwrap();
    assert_eq!(report.reason, StopReason::Finished);
    assert_eq!(greetings.recv().await.unwrap().payload, "hi");

    let rt = greeter_runtime("[modules.greeter]\nenabled = false\n");
    let report = rt.run().await.unwrap();
    assert_eq!(
        report.module("greeter").unwrap().state,
        ModuleState::Disabled
    );
}

#[tokio::test(start_paused = true)]
async fn config_errors_name_the_module_and_the_key() {
    let err = greeter_runtime("[modules.greeter]\ngreeting = \"hi\"\ngreting = \"typo\"\n")
        .run()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Config(ConfigError::UnknownKey { module, key, .. })
            if module == "greeter" && key == "greting"),
        "{err}"
    );
    assert!(err
        .to_string()
        .starts_with("unknown key `greting` in [modules.greeter]"));

    let err = greeter_runtime("[modules.greeter]\n")
        .run()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("missing field `greeting`"),
        "{err}"
    );

    let err = greeter_runtime("[modules.greeter]\ngreeting = \"hi\"\n[modules.gretter]\n")
        .run()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "[modules.gretter] configures a module that was never added to the runtime (added: greeter)"
    );

    // A module without a config type takes no keys but the runtime's.
    let config = Config::from_toml("[modules.quick]\nverbose = true\n").unwrap();
    let mut rt = runtime(Bus::new()).with_config(config);
    rt.add(Quick);
    let err = rt.run().await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Config(ConfigError::UnknownKey { module, key, .. })
            if module == "quick" && key == "verbose"),
        "{err}"
    );

    // The runtime's keys override the code's supervision.
    let config = Config::from_toml("[modules.once]\nrestart = \"never\"\n").unwrap();
    let mut rt = runtime(Bus::new()).with_config(config);
    rt.add(failing("once", Duration::ZERO, false))
        .restart(Restart::Always);
    let err = rt.run().await.unwrap_err();
    assert!(matches!(err, RuntimeError::ModuleFailed { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn bad_and_duplicate_names_are_refused_before_anything_starts() {
    let mut rt = runtime(Bus::new());
    rt.add(idle("has.dot"));
    let err = rt.run().await.unwrap_err();
    assert!(
        err.to_string().starts_with("invalid module name `has.dot`"),
        "{err}"
    );

    let m = failing("twice", Duration::ZERO, false);
    let starts = m.starts.clone();
    let mut rt = runtime(Bus::new());
    rt.add(m.clone());
    rt.add(m);
    let err = rt.run().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "two modules are named `twice`; module names must be unique"
    );
    assert!(starts.lock().is_empty(), "nothing was started");
}

#[tokio::test]
async fn queue_group_members_get_their_own_module_events() {
    let bus = Bus::new();
    let a = Context::detached("a", bus.clone());
    let b = Context::detached("b", bus.clone());
    let mut qa = a.subscriber("jobs").queue("workers").subscribe().unwrap();
    let _qb = b.subscriber("jobs").queue("workers").subscribe().unwrap();
    // Not filtered on `a`: the group's queue is shared with module `b`.
    let r = a.publish_to("jobs", 7).await.unwrap();
    assert_eq!(r.subscribers, 1);
    let got = qa.try_recv().unwrap().unwrap();
    assert_eq!((got.payload, got.source.as_deref()), (7, Some("a")));
    assert_eq!(a.handling(), Some(got.id), "try_recv marks it as handled");
    a.end_handling();
    assert_eq!(a.handling(), None);
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

#[tokio::test(start_paused = true)]
async fn a_configured_module_must_carry_its_sections_name() {
    let mut rt = Runtime::<String>::new(Bus::new()).handle_signals(false);
    rt.add_configured("welcome", |cfg: GreeterConfig| Greeter { cfg });
    let config = Config::from_toml("[modules.welcome]\ngreeting = \"hi\"\n").unwrap();
    let err = rt.with_config(config).run().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid module name `greeter`: the module added for [modules.welcome] must be named `welcome`"
    );
}

/// A named consumer of a durable topic: panics once on order 3, before committing it.
#[derive(Clone)]
struct Billing {
    handled: Arc<Mutex<Vec<u32>>>,
    panicked: Arc<AtomicBool>,
}

impl Module<u32> for Billing {
    fn name(&self) -> &str {
        "billing"
    }
    async fn run(&mut self, ctx: Context<u32>) -> Result<(), BoxError> {
        let mut orders = ctx
            .subscriber("orders.>")
            .consumer("billing")
            .from(busline::StartAt::Committed)
            .subscribe()?;
        loop {
            let order = orders.recv().await?;
            if order.payload == 3 && !self.panicked.swap(true, Ordering::SeqCst) {
                panic!("boom in billing");
            }
            self.handled.lock().push(order.payload);
            orders.commit(&order).await?;
            if order.payload == 5 {
                return Ok(());
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_restarted_module_resumes_after_its_last_committed_event() {
    quiet_module_panics();
    let bus = Bus::new();
    bus.persist("orders.>", Arc::new(busline::MemoryStore::new()))
        .unwrap();
    for i in 0..6 {
        bus.publish_to("orders.new", i).await.unwrap();
    }
    let handled: Arc<Mutex<Vec<u32>>> = Arc::default();
    let mut rt = runtime(bus);
    rt.add(Billing {
        handled: handled.clone(),
        panicked: Arc::default(),
    })
    .backoff(Backoff::fixed(Duration::from_millis(10)));
    let report = rt.run().await.unwrap();
    assert_eq!(report.module("billing").unwrap().restarts, 1);
    // Order 3 was taken but not committed when it panicked: it came again
    // after the restart; nothing before it was handled twice.
    assert_eq!(*handled.lock(), vec![0, 1, 2, 3, 4, 5]);
}

/// An actor: private count, answers `count.get` with the count.
#[derive(Clone, Default)]
struct Tally {
    n: u32,
}

impl Module<u32> for Tally {
    fn name(&self) -> &str {
        "tally"
    }
    async fn run(&mut self, ctx: Context<u32>) -> Result<(), BoxError> {
        let mut inbox = ctx.subscribe("count.>")?;
        loop {
            let ev = tokio::select! {
                ev = inbox.recv() => ev?,
                _ = ctx.shutdown_requested() => return Ok(()),
            };
            match ev.topic.as_str() {
                "count.add" => self.n += ev.payload,
                "count.get" => ctx.reply(&ev, self.n).await?,
                _ => {}
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_actor_answers_requests_with_its_private_state() {
    let bus = Bus::new();
    let mut rt = runtime(bus.clone());
    rt.add(Tally::default());
    let handle = rt.handle();
    let run = tokio::spawn(rt.run());
    tokio::time::sleep(Duration::from_millis(1)).await;
    for n in [1, 2, 3] {
        bus.publish_to("count.add", n).await.unwrap();
    }
    let req = Message::new(0)
        .topic("count.get")
        .correlation_id(busline::EventId::from_u128(7));
    let reply = bus.request_msg(req, Duration::from_secs(1)).await.unwrap();
    assert_eq!(reply.payload, 6);
    assert_eq!(reply.source.as_deref(), Some("tally"));
    assert_eq!(reply.correlation_id, busline::EventId::from_u128(7));
    assert!(reply.causation_id().is_some());
    handle.shutdown();
    run.await.unwrap().unwrap();
}

// ----- found by review: each test fails without its fix ----------------------

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

/// Durations in the config that are negative, not finite or too large are a
/// config error naming the module and the key, not a panic in `run`.
#[tokio::test(start_paused = true)]
async fn a_bad_duration_in_the_config_is_a_config_error() {
    for (key, value) in [
        ("restart_window_secs", "-1.0"),
        ("shutdown_timeout_secs", "nan"),
        ("shutdown_timeout_secs", "inf"),
        ("restart_window_secs", "1e300"),
    ] {
        let config = Config::from_toml(&format!("[modules.quick]\n{key} = {value}\n")).unwrap();
        let mut rt = Runtime::new(Bus::<u32>::new())
            .handle_signals(false)
            .with_config(config);
        rt.add(Quick);
        let res = tokio::spawn(rt.run()).await.expect("run did not panic");
        match res {
            Err(RuntimeError::Config(ConfigError::Invalid { module, message })) => {
                assert_eq!(module, "quick");
                assert!(message.contains(key), "{message}");
            }
            other => panic!("{key} = {value}: {other:?}"),
        }
    }
}

/// Helper tasks an instance spawned with its shutdown token are told to stop
/// when that instance ends, not only at the runtime's shutdown.
#[derive(Clone)]
struct WithHelper {
    runs: Arc<AtomicU32>,
    helpers_stopped: Arc<AtomicU32>,
}

impl Module<u32> for WithHelper {
    fn name(&self) -> &str {
        "with-helper"
    }
    async fn run(&mut self, ctx: Context<u32>) -> Result<(), BoxError> {
        let token = ctx.shutdown_token();
        let stopped = self.helpers_stopped.clone();
        tokio::spawn(async move {
            token.cancelled().await;
            stopped.fetch_add(1, Ordering::SeqCst);
        });
        if self.runs.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err("the first instance fails".into());
        }
        ctx.shutdown_requested().await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn helpers_of_an_instance_that_ended_are_told_to_stop() {
    let m = WithHelper {
        runs: Arc::default(),
        helpers_stopped: Arc::default(),
    };
    let (runs, stopped) = (m.runs.clone(), m.helpers_stopped.clone());
    let mut rt = Runtime::new(Bus::<u32>::new()).handle_signals(false);
    rt.add(m).backoff(Backoff::fixed(Duration::from_millis(5)));
    let handle = rt.handle();
    let run = tokio::spawn(rt.run());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(
        stopped.load(Ordering::SeqCst),
        1,
        "the failed instance's helper"
    );
    handle.shutdown();
    run.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stopped.load(Ordering::SeqCst), 2);
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
