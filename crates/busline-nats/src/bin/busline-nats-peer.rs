//! A small peer process for the two-process tests.
//!
//! `busline-nats-peer <url> <topic-prefix> <publishers> <events-per-publisher>`
//! publishes events through the NATS transport and prints `acked <n>` once
//! the server has acknowledged all of them.
//!
//! `busline-nats-peer respond <url> <pattern> <core|js> <requests>` imports
//! `pattern`, prints `ready` once subscribed, answers that many requests
//! from a module on its bus (body `re: <body>`, source `responder`), and
//! prints `answered <n>` once the replies have left.

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

async fn respond(url: &str, pattern: &str, mode: &str, requests: u64) {
    use std::io::Write as _;
    let bus: Bus<Ev> = Bus::new();
    let mut requests_in = bus.subscribe(pattern).expect("subscribe");
    let mut cfg = NatsConfig::new(url)
        .name("busline-nats-responder")
        .import(pattern);
    if mode == "js" {
        cfg = cfg.jetstream(JetStreamConfig {
            durable: "responder".into(),
            ..JetStreamConfig::default()
        });
    }
    let nats = connect_or_exit(&bus, cfg).await;
    println!("ready");
    let _ = std::io::stdout().flush();
    // The module: answers each request on the bus, knowing nothing of NATS.
    for _ in 0..requests {
        let req = requests_in.recv().await.expect("a request");
        let answer = Ev {
            publisher: req.payload.publisher,
            n: req.payload.n,
            body: format!("re: {}", req.payload.body),
        };
        bus.reply_msg(&req, Message::new(answer).source("responder"))
            .await
            .expect("reply");
    }
    nats.flush().await.expect("flush");
    println!("answered {requests}");
    nats.shutdown().await.expect("shutdown");
}

/// Connects, or prints why not and exits with status 1.
async fn connect_or_exit(bus: &Bus<Ev>, cfg: NatsConfig<Ev>) -> NatsTransport<Ev> {
    match NatsTransport::connect(bus, cfg).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 6 && args[1] == "respond" {
        let requests = args[5].parse().expect("requests: a number");
        return respond(&args[2], &args[3], &args[4], requests).await;
    }
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
    let nats = connect_or_exit(&bus, cfg).await;
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
