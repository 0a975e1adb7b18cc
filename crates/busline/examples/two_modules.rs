//! Two independent modules joined by the runtime: a network module that emits
//! an event on an interval, and a logger that prints every event it receives.
//!
//! The network module stops after a few events; the example then asks the
//! runtime to shut down, and the logger (added first, so stopped last) drains
//! what is still queued for it before it returns.
//!
//! Run with `cargo run -p busline --example two_modules`.

use std::borrow::Cow;
use std::time::Duration;

use busline::{BoxError, Bus, Context, Event, Module, Runtime};

#[derive(Debug, Clone)]
enum NetEvent {
    PacketReceived {
        seq: u32,
        bytes: usize,
        peer: String,
    },
}

impl std::fmt::Display for NetEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetEvent::PacketReceived { seq, bytes, peer } => {
                write!(f, "packet #{seq}: {bytes} bytes from {peer}")
            }
        }
    }
}

impl Event for NetEvent {
    fn topic(&self) -> Cow<'_, str> {
        match self {
            NetEvent::PacketReceived { .. } => "net.packet".into(),
        }
    }
}

/// Pretends to listen on the network: one packet per tick, `count` in all.
#[derive(Clone)]
struct Network {
    every: Duration,
    count: u32,
}

impl Module<NetEvent> for Network {
    fn name(&self) -> &str {
        "network"
    }

    async fn run(&mut self, ctx: Context<NetEvent>) -> Result<(), BoxError> {
        let mut tick = tokio::time::interval(self.every);
        for seq in 1..=self.count {
            tokio::select! {
                _ = ctx.shutdown_requested() => return Ok(()),
                _ = tick.tick() => {}
            }
            let peer = format!("10.0.0.{}", seq % 4 + 1);
            ctx.publish(NetEvent::PacketReceived {
                seq,
                bytes: 64 * seq as usize,
                peer,
            })
            .await?;
        }
        Ok(())
    }
}

/// Prints every event it receives.
#[derive(Clone)]
struct Logger;

impl Module<NetEvent> for Logger {
    fn name(&self) -> &str {
        "logger"
    }

    async fn run(&mut self, ctx: Context<NetEvent>) -> Result<(), BoxError> {
        let mut events = ctx.subscribe("net.>")?;
        loop {
            tokio::select! {
                ev = events.recv() => {
                    let ev = ev?;
                    println!("logger: received event: {} (from {})",
                             ev.payload, ev.source.as_deref().unwrap_or("?"));
                }
                _ = ctx.shutdown_requested() => {
                    // Finish what is already queued before stopping.
                    for ev in events.drain() {
                        println!("logger: received event: {} (drained at shutdown)", ev.payload);
                    }
                    return Ok(());
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus: Bus<NetEvent> = Bus::new();
    let mut rt = Runtime::new(bus);
    rt.add(Logger); // consumers first: subscribed before the network starts
    rt.add(Network {
        every: Duration::from_millis(100),
        count: 5,
    });

    // Stop everything once the network module is done.
    let handle = rt.handle();
    let mut lifecycle = rt
        .system_bus()
        .subscriber("$sys.module.network.stopped")
        .lossy(16)
        .subscribe()?;
    tokio::spawn(async move {
        if lifecycle.recv().await.is_ok() {
            handle.shutdown();
        }
    });

    let report = rt.run().await?;
    println!("runtime stopped: {}", report.reason);
    for m in &report.modules {
        println!(
            "  {}: {} (restarts {}, discarded {})",
            m.name, m.state, m.restarts, m.discarded
        );
    }
    Ok(())
}
