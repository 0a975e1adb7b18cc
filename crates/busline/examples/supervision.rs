//! Supervision: a module that panics twice and is restarted with backoff,
//! then a module that fails more often than its restart limit allows and
//! stops the runtime with a clear error.
//!
//! Lifecycle events are printed from the runtime's system bus (`$sys.module.>`).
//! The example exits 0 after checking that the run ended with the expected error.
//!
//! Run with `cargo run -p busline --example supervision`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busline::{
    Backoff, BoxError, Bus, Context, Module, Runtime, RuntimeError, StopReason, SystemEvent,
};

/// Panics on its first `panics` starts, then works: publishes three readings.
struct Flaky {
    starts: Arc<AtomicU32>,
    panics: u32,
}

impl Module<u32> for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }

    async fn run(&mut self, ctx: Context<u32>) -> Result<(), BoxError> {
        let start = self.starts.fetch_add(1, Ordering::SeqCst) + 1;
        if start <= self.panics {
            panic!("sensor not ready (start {start})");
        }
        for reading in 0..3 {
            ctx.publish_to("sensor.reading", reading).await?;
        }
        Ok(())
    }
}

/// Always fails.
#[derive(Clone)]
struct Doomed;

impl Module<u32> for Doomed {
    fn name(&self) -> &str {
        "doomed"
    }

    async fn run(&mut self, _ctx: Context<u32>) -> Result<(), BoxError> {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Err("database unreachable".into())
    }
}

/// Prints the runtime's lifecycle events.
fn print_lifecycle(rt: &Runtime<u32>) {
    let mut sys = rt
        .system_bus()
        .subscriber("$sys.module.>")
        .lossy(256)
        .subscribe()
        .expect("valid pattern");
    tokio::spawn(async move {
        while let Ok(ev) = sys.recv().await {
            match &ev.payload {
                SystemEvent::Restarting { delay, restart, .. } => {
                    println!("  [{}] restart #{restart} in {delay:?}", ev.topic)
                }
                SystemEvent::Failed { error, .. } => println!("  [{}] {error}", ev.topic),
                _ => println!("  [{}]", ev.topic),
            }
        }
    });
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the panic output to one line per panic.
    std::panic::set_hook(Box::new(|info| {
        let p = info.payload();
        let msg = (p.downcast_ref::<String>().map(|s| s.as_str()))
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("?");
        println!("  (a module panicked: {msg})")
    }));

    println!("1. a module that panics twice, restarted with backoff");
    let bus: Bus<u32> = Bus::new();
    let mut readings = bus.subscribe("sensor.reading")?;
    let mut rt = Runtime::new(bus).handle_signals(false);
    print_lifecycle(&rt);
    let starts = Arc::new(AtomicU32::new(0));
    rt.add_factory(move || Flaky {
        starts: starts.clone(),
        panics: 2,
    })
    .backoff(Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_secs(1),
        multiplier: 2.0,
        jitter: 0.1,
    })
    .max_restarts(5, Duration::from_secs(10));
    let report = rt.run().await?;
    let flaky = report.module("flaky").expect("flaky is in the report");
    println!(
        "runtime finished: {}; flaky restarted {} times, last error: {:?}",
        report.reason, flaky.restarts, flaky.last_error
    );
    assert_eq!(report.reason, StopReason::Finished);
    assert_eq!(flaky.restarts, 2);
    let mut got = Vec::new();
    // The runtime owned the bus's other handle: the subscription is closed
    // now, after handing out what was queued.
    while let Ok(Some(ev)) = readings.try_recv() {
        got.push(ev.payload);
    }
    assert_eq!(
        got,
        vec![0, 1, 2],
        "the third instance published its readings"
    );

    println!("\n2. a module that exceeds its restart limit");
    let mut rt = Runtime::new(Bus::<u32>::new()).handle_signals(false);
    print_lifecycle(&rt);
    rt.add(Doomed)
        .backoff(Backoff::fixed(Duration::from_millis(20)))
        .max_restarts(2, Duration::from_secs(10));
    match rt.run().await {
        Err(err @ RuntimeError::RestartLimit { .. }) => {
            println!("runtime stopped with the expected error:\n  {err}");
            let RuntimeError::RestartLimit {
                module,
                restarts,
                last_error,
                ..
            } = &err
            else {
                unreachable!()
            };
            assert_eq!(module, "doomed");
            assert_eq!(*restarts, 2);
            assert_eq!(last_error, "database unreachable");
            Ok(())
        }
        other => Err(format!("expected a restart-limit error, got {other:?}").into()),
    }
}
