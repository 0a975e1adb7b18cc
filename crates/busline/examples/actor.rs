//! An actor: a module with private state that takes `Update` and `Process`
//! messages and answers `GetStatus` requests through request/reply.
//!
//! Nothing outside the actor can touch its state; other modules only send it
//! messages. A client module drives it, checks the answers and then shuts the
//! runtime down.
//!
//! Run with `cargo run -p busline --example actor`.

use std::collections::BTreeMap;
use std::time::Duration;

use busline::{BoxError, Bus, Context, Module, Restart, Runtime, RuntimeHandle};

#[derive(Debug, Clone, PartialEq)]
enum Msg {
    /// Set a setting of the actor.
    Update { key: String, value: i64 },
    /// Process a job: the actor adds `amount` scaled by the `factor` setting.
    Process { amount: i64 },
    /// A request: answered with `Status`.
    GetStatus,
    /// The answer to `GetStatus`.
    Status {
        settings: BTreeMap<String, i64>,
        processed: u64,
        total: i64,
    },
}

/// The actor. Its fields are its private state.
#[derive(Clone, Default)]
struct Accumulator {
    settings: BTreeMap<String, i64>,
    processed: u64,
    total: i64,
}

impl Module<Msg> for Accumulator {
    fn name(&self) -> &str {
        "accumulator"
    }

    async fn run(&mut self, ctx: Context<Msg>) -> Result<(), BoxError> {
        let mut inbox = ctx.subscribe("accumulator.>")?;
        loop {
            let env = tokio::select! {
                env = inbox.recv() => env?,
                _ = ctx.shutdown_requested() => return Ok(()),
            };
            match &env.payload {
                Msg::Update { key, value } => {
                    self.settings.insert(key.clone(), *value);
                }
                Msg::Process { amount } => {
                    let factor = self.settings.get("factor").copied().unwrap_or(1);
                    self.total += amount * factor;
                    self.processed += 1;
                }
                Msg::GetStatus => {
                    let status = Msg::Status {
                        settings: self.settings.clone(),
                        processed: self.processed,
                        total: self.total,
                    };
                    ctx.reply(&env, status).await?;
                }
                Msg::Status { .. } => {} // not for us
            }
        }
    }
}

/// Sends the actor work, asks for its status, checks it, then stops the runtime.
#[derive(Clone)]
struct Client {
    runtime: RuntimeHandle,
}

impl Module<Msg> for Client {
    fn name(&self) -> &str {
        "client"
    }

    async fn run(&mut self, ctx: Context<Msg>) -> Result<(), BoxError> {
        let update = |key: &str, value| Msg::Update {
            key: key.into(),
            value,
        };
        ctx.publish_to("accumulator.update", update("factor", 2))
            .await?;
        for amount in [1, 2, 3] {
            ctx.publish_to("accumulator.process", Msg::Process { amount })
                .await?;
        }
        ctx.publish_to("accumulator.update", update("factor", 10))
            .await?;
        ctx.publish_to("accumulator.process", Msg::Process { amount: 4 })
            .await?;

        // Same publisher, same subscriber: the request arrives after the work.
        let reply = ctx
            .request("accumulator.status", Msg::GetStatus, Duration::from_secs(1))
            .await?;
        println!(
            "client: status from {:?}: {:?}",
            reply.source, reply.payload
        );
        let expected = Msg::Status {
            settings: BTreeMap::from([("factor".to_string(), 10)]),
            processed: 4,
            total: (1 + 2 + 3) * 2 + 4 * 10,
        };
        if reply.payload != expected {
            return Err(format!("unexpected status {:?}", reply.payload).into());
        }
        println!("client: the actor's status is as expected; shutting down");
        self.runtime.shutdown();
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus: Bus<Msg> = Bus::new();
    let mut rt = Runtime::new(bus);
    let handle = rt.handle();
    rt.add(Accumulator::default());
    rt.add(Client { runtime: handle }).restart(Restart::Never);

    let report = rt.run().await?;
    println!("runtime stopped: {}", report.reason);
    for m in &report.modules {
        println!("  {}: {}", m.name, m.state);
    }
    Ok(())
}
