//! Runtime behaviour: supervision, shutdown, lineage, system events, config.
//! Time is virtual (`start_paused`) wherever timing matters.

use std::sync::Arc;
use std::time::Duration;

use busline::{BoxError, Bus, Context, Module, Runtime};
use parking_lot::Mutex;
use tokio::time::Instant;

mod configuration;
mod failure_isolation;
mod module_messaging;
mod restart_policy;
mod shutdown;
mod system_events;

// ----- helpers -------------------------------------------------------------

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
