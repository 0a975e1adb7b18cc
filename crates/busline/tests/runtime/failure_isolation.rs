//! A module fails alone: the others run on undisturbed, its restart resumes
//! after its last committed event, and the ended instance's helpers stop.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busline::{
    Backoff, BoxError, Bus, Context, Module, ModuleState, Restart, Runtime, RuntimeError,
};
use parking_lot::Mutex;

use crate::{failing, quiet_module_panics, runtime, Idle, Log};

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
