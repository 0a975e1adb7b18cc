//! Fault tests: the server SIGKILLed and restarted mid-stream, long runs with
//! repeated restarts, slow consumers, an outage under load. Every event the
//! publisher saw acknowledged must arrive; duplicates are suppressed or counted.
//!
//! `BUSLINE_NATS_RESTART_EVENTS` sets the size of the repeated-restart run
//! (default 6000; the full run is 30000).

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use busline::{Bus, PublishError};
use busline_nats::server::NatsServer;
use busline_nats::{ConnState, NatsConfig, NatsTransport};
use common::*;
use parking_lot::Mutex;
use tokio::sync::watch;

fn env_events(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Publishes `per` events from each of `publishers` tasks while the server is
/// killed (SIGKILL) and restarted `restarts` times, spaced by publish progress;
/// then checks that everything arrived.
async fn run_with_restarts(srv: &mut NatsServer, publishers: u32, per: u64, restarts: u32) {
    let url = srv.url();
    let (a, ta) = exporter(&url, "k.>").await;
    let (_b, mut sub, tb) = importer(&url, "k.>", "imp").await;
    let total = publishers as u64 * per;
    let (prog_tx, mut prog_rx) = watch::channel(0u64);
    let prog_tx = Arc::new(prog_tx);
    let mut pubs = Vec::new();
    for p in 0..publishers {
        let a = a.clone();
        let prog = prog_tx.clone();
        pubs.push(tokio::spawn(async move {
            for n in 0..per {
                a.publish_to(&format!("k.p{p}"), ev(p, n)).await.unwrap();
                prog.send_modify(|c| *c += 1);
            }
        }));
    }
    let want: HashSet<(u32, u64)> = (0..publishers)
        .flat_map(|p| (0..per).map(move |n| (p, n)))
        .collect();
    let consumer = tokio::spawn(async move {
        let dups = recv_all(&mut sub, &want).await;
        (dups, sub)
    });
    for r in 1..=restarts {
        let mark = total * r as u64 / (restarts as u64 + 1);
        prog_rx.wait_for(|c| *c >= mark).await.unwrap();
        srv.kill();
        tokio::time::sleep(Duration::from_millis(300)).await; // the server stays down for a moment
        srv.restart().unwrap();
    }
    for p in pubs {
        p.await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(120), ta.flush())
        .await
        .expect("all acked in time")
        .unwrap();
    let sa = ta.stats();
    assert_eq!(sa.acked, total, "{sa:?}");
    let (dups, _sub) = consumer.await.unwrap();
    let sb = tb.stats();
    eprintln!(
        "{total} events, {restarts} restarts: publish retries {}, server-side duplicates {}, import duplicates dropped {}, duplicates seen by the subscriber {dups}",
        sa.retried, sa.publish_duplicates, sb.import_duplicates
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_while_publishing_and_consuming_loses_nothing_acknowledged() {
    let mut srv = server();
    run_with_restarts(&mut srv, 2, 2000, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_restarts_during_a_long_run() {
    let mut srv = server();
    let total = env_events("BUSLINE_NATS_RESTART_EVENTS", 6000);
    run_with_restarts(&mut srv, 3, total / 3, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_gets_everything_in_order() {
    let srv = server();
    let (a, ta) = exporter(&srv.url(), "s.>").await;
    let b: Bus<Ev> = Bus::new();
    let mut slow = b
        .subscriber("s.>")
        .lossless(8)
        .name("slow")
        .subscribe()
        .unwrap();
    let tb = import_into(&b, &srv.url(), "s.>", "imp").await;
    let n = 600u64;
    for i in 0..n {
        a.publish_to("s.x", ev(0, i)).await.unwrap();
    }
    ta.flush().await.unwrap();
    for i in 0..n {
        let e = tokio::time::timeout(Duration::from_secs(60), slow.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.payload.n, i);
        tokio::time::sleep(Duration::from_millis(2)).await; // a slow consumer
    }
    assert_eq!(slow.stats().dropped, 0);
    eventually("all imported", || tb.stats().imported == n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_wait_while_the_server_is_down_and_nothing_is_dropped() {
    let mut srv = server();
    let url = srv.url();
    let a: Bus<Ev> = Bus::new();
    let ta = NatsTransport::connect(
        &a,
        NatsConfig::new(&url)
            .export("w.>")
            .buffer(16)
            .jetstream(js("x")),
    )
    .await
    .unwrap();
    let (_b, mut sub, _tb) = importer(&url, "w.>", "imp").await;
    let mut status = ta.status();
    srv.kill();
    status
        .wait_for(|s| s.state == ConnState::Disconnected)
        .await
        .unwrap();

    // The outgoing buffers are bounded: publishing soon meets `Full`, naming the exporter.
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let mut n = 0u64;
    let full = loop {
        assert!(
            n < 100_000,
            "the outgoing buffer never filled: it is not bounded"
        );
        match a.try_publish_to("w.x", ev(0, n)) {
            Ok(_) => accepted.lock().push(n),
            Err(PublishError::Full {
                subscriber, event, ..
            }) => {
                assert_eq!(event, ev(0, n)); // handed back, not lost
                break subscriber;
            }
            Err(e) => panic!("{e}"),
        }
        n += 1;
        if n % 16 == 0 {
            tokio::task::yield_now().await; // let the exporter move what it can
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    assert_eq!(&*full, "nats-export");
    // A waiting publisher is released once the server is back.
    let a2 = a.clone();
    let waiting = tokio::spawn(async move { a2.publish_to("w.x", ev(0, n)).await.unwrap() });
    srv.restart().unwrap();
    waiting.await.unwrap();
    ta.flush().await.unwrap();
    let want: HashSet<(u32, u64)> = (0..=n).map(|i| (0, i)).collect();
    recv_all(&mut sub, &want).await;
}
