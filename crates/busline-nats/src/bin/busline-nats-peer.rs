//! A small peer process for the two-process test: publishes events through
//! the NATS transport and exits once the server has acknowledged all of them.
//!
//! `busline-nats-peer <url> <topic-prefix> <publishers> <events-per-publisher>`
//! prints `acked <n>` on success.

use busline::{Bus, Message};
use busline_nats::{JetStreamConfig, NatsConfig, NatsTransport};
use serde::{Deserialize, Serialize};

/// The event, shaped like the tests' `Ev`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ev {
    publisher: u32,
    n: u64,
    body: String,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!(
            "usage: busline-nats-peer <url> <topic-prefix> <publishers> <events-per-publisher>"
        );
        std::process::exit(2);
    }
    let (url, prefix) = (&args[1], &args[2]);
    let publishers: u32 = args[3].parse().expect("publishers: a number");
    let per: u64 = args[4].parse().expect("events per publisher: a number");
    let bus: Bus<Ev> = Bus::new();
    let cfg = NatsConfig::new(url.as_str())
        .name("busline-nats-peer")
        .export(format!("{prefix}.>"))
        .jetstream(JetStreamConfig {
            durable: "peer".into(),
            ..JetStreamConfig::default()
        });
    let nats = match NatsTransport::connect(&bus, cfg).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let bus = bus.clone();
        let topic = format!("{prefix}.p{p}");
        tasks.push(tokio::spawn(async move {
            for n in 0..per {
                let ev = Ev {
                    publisher: p,
                    n,
                    body: format!("p{p}-{n}"),
                };
                bus.send(
                    Message::new(ev)
                        .topic(topic.as_str())
                        .source(format!("peer-{p}")),
                )
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    nats.flush().await.expect("flush");
    println!("acked {}", nats.stats().acked);
    nats.shutdown().await.expect("shutdown");
}
