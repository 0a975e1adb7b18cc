//! Publishers in one process, a subscriber in another, through the server.

mod common;

use std::collections::HashSet;

use common::*;

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
