//! The README's example: two modules on one bus, run by the runtime.
//! Run with `cargo run -p busline --example quickstart`.

use busline::{BoxError, Bus, Context, Module, Runtime};
use std::time::Duration;

#[derive(Debug, Clone)]
struct Tick(u32);

#[derive(Clone)]
struct Clock;
impl Module<Tick> for Clock {
    fn name(&self) -> &str {
        "clock"
    }
    async fn run(&mut self, ctx: Context<Tick>) -> Result<(), BoxError> {
        for n in 1..=3 {
            ctx.publish_to("time.tick", Tick(n)).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

#[derive(Clone)]
struct Logger;
impl Module<Tick> for Logger {
    fn name(&self) -> &str {
        "logger"
    }
    async fn run(&mut self, ctx: Context<Tick>) -> Result<(), BoxError> {
        let mut ticks = ctx.subscribe("time.>")?; // lossless by default
        for _ in 0..3 {
            let e = ticks.recv().await?;
            println!(
                "logger: received {:?} from {:?} on {}",
                e.payload, e.source, e.topic
            );
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rt = Runtime::new(Bus::new());
    rt.add(Logger);
    rt.add(Clock);
    let report = rt.run().await?; // until both finish, Ctrl-C, or a module fails for good
    println!("{report:?}");
    Ok(())
}
