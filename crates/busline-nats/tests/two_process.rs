//! Publishers in one process, a subscriber in another, through the server.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use busline::{Bus, EventId, Message};
use busline_nats::{NatsConfig, NatsTransport, IMPORTED};
use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_in_a_child_process_reach_a_subscriber_here() {
    let srv = server();
    let (_b, mut sub, tb) = importer(&srv.url(), "two.>", "here").await;
    let (publishers, per) = (3u32, 1000u64);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_busline-nats-peer"))
        .args([
            srv.url().as_str(),
            "two",
            &publishers.to_string(),
            &per.to_string(),
        ])
        .output()
        .await
        .expect("spawn the peer process");
    assert!(
        out.status.success(),
        "peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total = publishers as u64 * per;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("acked {total}")
    );

    let got = recv_n(&mut sub, total as usize).await;
    let mut next = vec![0u64; publishers as usize];
    let mut ids = HashSet::new();
    for e in &got {
        let p = e.payload.publisher as usize;
        assert_eq!(e.payload.n, next[p], "publisher {p} out of order");
        next[p] += 1;
        assert_eq!(e.topic.as_str(), format!("two.p{p}"));
        assert_eq!(e.source.as_deref(), Some(format!("peer-{p}").as_str()));
        assert!(ids.insert(e.id), "duplicate id");
    }
    eventually("all imported", || tb.stats().imported == total).await;
}

/// Requests from this process, answered by a module on the bus of a child
/// process: each reply travels back over NATS to the waiting requester.
async fn requests_answered_across_processes(jetstream: bool) {
    let srv = server();
    let bus: Bus<Ev> = Bus::new();
    let mut cfg = NatsConfig::new(srv.url()).export("rpc.>");
    if jetstream {
        cfg = cfg.jetstream(js("asker"));
    }
    let t = NatsTransport::connect(&bus, cfg)
        .await
        .expect("asker connects");
    let requests = 20u64;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_busline-nats-peer"))
        .args([
            "respond",
            srv.url().as_str(),
            "rpc.>",
            if jetstream { "js" } else { "core" },
            &requests.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the responder");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("ready"));

    for n in 0..requests {
        let id = EventId::from_u128(0xa5 << 64 | n as u128);
        let reply = bus
            .request_msg(
                Message::new(ev(7, n))
                    .topic("rpc.echo")
                    .id(id)
                    .source("asker"),
                // A guard against hanging, not a timing assertion.
                Duration::from_secs(60),
            )
            .await
            .unwrap_or_else(|e| panic!("request {n}: {e}"));
        assert_eq!(reply.payload.body, format!("re: p7-{n}"));
        assert_eq!((reply.payload.publisher, reply.payload.n), (7, n));
        assert_eq!(reply.source.as_deref(), Some("responder"));
        assert_eq!(
            reply.causation_id(),
            Some(id),
            "the reply names its request"
        );
        assert_eq!(reply.correlation_id, id, "same conversation");
        assert!(reply.header(IMPORTED).is_some());
    }
    assert_eq!(
        lines.next_line().await.unwrap(),
        Some(format!("answered {requests}"))
    );
    assert!(child.wait().await.unwrap().success());
    // Counted just after the reply reached the requester: wait for the count.
    eventually("every reply counted", || t.stats().imported >= requests).await;
    assert_eq!(t.stats().imported, requests, "every reply delivered once");
    t.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_here_are_answered_by_a_module_in_a_child_process_core() {
    requests_answered_across_processes(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_here_are_answered_by_a_module_in_a_child_process_jetstream() {
    requests_answered_across_processes(true).await;
}
