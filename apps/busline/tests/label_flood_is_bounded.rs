//! A label-cardinality flood over StatsD past `--max-series`: every line is
//! accounted for (kept in a series, counted as overflow, or reported
//! dropped by the kernel), the monitor keeps running and answering, and its
//! memory stays bounded however many new series keep arriving.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;

const CAP: usize = 100;
const LINES_PER_DATAGRAM: usize = 20;

/// Sends `series` lines of `flood.hits`, each with a label value of its own
/// starting at `first`; returns the lines sent.
fn flood(addr: &str, first: usize, series: usize) -> u64 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent = 0u64;
    for start in (first..first + series).step_by(LINES_PER_DATAGRAM) {
        let end = (start + LINES_PER_DATAGRAM).min(first + series);
        let datagram: String = (start..end)
            .map(|i| format!("flood.hits:1|c|#user:u{i}\n"))
            .collect();
        s.send_to(datagram.as_bytes(), addr).unwrap();
        sent += (end - start) as u64;
        if (start / LINES_PER_DATAGRAM) % 50 == 0 {
            // Room for the listener: the kernel's drops are counted either
            // way, but a test that keeps most lines checks more.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    sent
}

/// The resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Waits until every line sent is accepted or dropped by the kernel, and
/// returns the summary then.
fn settled(m: &Monitor, sent: u64) -> serde_json::Value {
    eventually("every line accepted or dropped by the kernel", || {
        let s = get(m, "/api/summary").json();
        let st = &s["ingest"]["statsd"];
        let accepted = st["accepted"].as_u64()?;
        let dropped_lines = st["kernel_dropped"].as_u64()? * LINES_PER_DATAGRAM as u64;
        let seen = s["series"]
            .as_array()?
            .iter()
            .filter(|x| x["name"] == "flood.hits")
            .count() as u64;
        let overflow = s["series_status"]["overflow"]["samples"].as_u64()?;
        // The store has taken every accepted line: in a series or as overflow.
        (accepted + dropped_lines >= sent && seen + overflow >= accepted).then_some(s)
    })
}

#[test]
fn a_label_flood_past_max_series_is_counted_and_memory_stays_bounded() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let m = Monitor::start(&[
        "--no-sim",
        "--web",
        "127.0.0.1:0",
        "--statsd",
        "127.0.0.1:0",
        "--max-series",
        &CAP.to_string(),
        "--log-file",
        log.path().to_str().unwrap(),
    ]);
    let addr = statsd_addr(&m);

    let sent = flood(&addr, 0, 20_000);
    let s = settled(&m, sent);
    let st = &s["ingest"]["statsd"];
    let accepted = st["accepted"].as_u64().unwrap();
    let dropped = st["kernel_dropped"].as_u64().unwrap() * LINES_PER_DATAGRAM as u64;
    assert_eq!(st["malformed"], 0, "{st}");
    assert_eq!(
        accepted + dropped,
        sent,
        "every line accepted or dropped: {st}"
    );
    let kept: Vec<_> = s["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["name"] == "flood.hits")
        .collect();
    assert_eq!(kept.len(), CAP, "the cap holds");
    let overflow = &s["series_status"]["overflow"];
    assert_eq!(overflow["max_series"], CAP);
    assert_eq!(
        overflow["samples"].as_u64().unwrap(),
        accepted - CAP as u64,
        "every sample past the cap is counted: {overflow}"
    );
    assert_eq!(overflow["by_name"]["flood.hits"], accepted - CAP as u64);
    let after_first = rss_kib(m.child.id());

    // Four more floods of new series: the cap still holds and memory stays
    // where it was (allocator noise aside), whatever arrives.
    let mut total = sent;
    for round in 1..=4 {
        total += flood(&addr, round * 20_000, 20_000);
    }
    let s = settled(&m, total);
    let kept = s["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["name"] == "flood.hits")
        .count();
    assert_eq!(kept, CAP);
    let after_all = rss_kib(m.child.id());
    assert!(
        after_all < after_first + 64 * 1024,
        "memory grew from {after_first} KiB to {after_all} KiB with the series capped at {CAP}"
    );
    // Still answering, still counting.
    assert_eq!(get(&m, "/api/summary").status, 200);
}
