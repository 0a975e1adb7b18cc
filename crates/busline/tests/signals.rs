//! SIGTERM ends a run gracefully. In its own test binary: the signal is sent
//! to the whole test process.
#![cfg(unix)]

use std::time::Duration;

use busline::{BoxError, Bus, Context, Module, ModuleState, Runtime, StopReason};

#[derive(Clone)]
struct Idle;

impl Module<u32> for Idle {
    fn name(&self) -> &str {
        "idle"
    }
    async fn run(&mut self, ctx: Context<u32>) -> Result<(), BoxError> {
        ctx.shutdown_requested().await;
        Ok(())
    }
}

#[tokio::test]
async fn sigterm_starts_a_graceful_shutdown() {
    let mut rt = Runtime::new(Bus::new()); // signals are handled by default
    rt.add(Idle);
    let handle = rt.handle();
    let run = tokio::spawn(rt.run());
    // Once the runtime answers a status request, its signal handlers are
    // installed (they are polled before requests are).
    let status = handle.status(Duration::from_secs(10)).await.unwrap();
    assert_eq!(status[0].state, ModuleState::Running);
    let pid = std::process::id().to_string();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(ok.success());
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.reason, StopReason::Signal("SIGTERM"));
    assert_eq!(report.module("idle").unwrap().state, ModuleState::Stopped);
}
