//! `busline monitor` takes StatsD over UDP: from Python's `statsd` client,
//! malformed lines counted by reason beside the good ones, the default port
//! taken (a warning) and an asked-for address taken (an error), and an edge
//! process that ingests and exports over NATS to a watching one.

mod common;

use std::net::UdpSocket;
use std::process::Command;

use busline_nats::server::NatsServer;
use common::*;

fn send(addr: &str, datagram: &[u8]) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(datagram, addr).unwrap();
}

fn statsd_status(m: &Monitor) -> serde_json::Value {
    get(m, "/api/summary").json()["ingest"]["statsd"].clone()
}

/// The samples the logger printed, one line each: the listener publishes
/// the datagrams it finds waiting together, so how samples share an event
/// depends on timing; their order does not.
fn logger_lines(m: &Monitor) -> Vec<String> {
    m.stdout
        .lines()
        .into_iter()
        .filter_map(|l| {
            let body = l.strip_prefix("[logger] Samples { ")?.strip_suffix(" }")?;
            let (source, samples) = body.split_once(", ")?;
            Some(
                samples
                    .split(", ")
                    .map(|s| format!("[logger] Samples {{ {source}, {s} }}"))
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect()
}

#[test]
fn python_statsd_counters_gauges_timers_and_sets_reach_the_monitor() {
    let m = Monitor::start(&[
        "--no-sim",
        "--web",
        "127.0.0.1:0",
        "--statsd",
        "127.0.0.1:0",
    ]);
    let addr = statsd_addr(&m);
    let (host, port) = addr.rsplit_once(':').unwrap();
    let script = format!(
        r#"
import statsd
c = statsd.StatsClient("{host}", {port}, prefix="shop")
c.incr("orders", 3)
c.gauge("pool.size", 12)
c.gauge("pool.size", 3, delta=True)
c.timing("checkout.latency", 42)
c.set("users", "alice")
with c.pipeline() as p:
    p.incr("batch")
    p.incr("batch")
    p.timing("batch.latency", 7.5)
"#
    );
    let out = Command::new(interop_python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_succeeded(&out);
    // 5 datagrams of one line, one (the pipeline) of three.
    let s = eventually("8 lines accepted", || {
        let s = statsd_status(&m);
        (s["accepted"] == 8).then_some(s)
    });
    assert_eq!(s["received"], 6, "{s}");
    assert_eq!(s["malformed"], 0, "{s}");
    let want = [
        r#"[logger] Samples { source: "statsd", shop.orders counter 3 }"#,
        r#"[logger] Samples { source: "statsd", shop.pool.size gauge 12 }"#,
        r#"[logger] Samples { source: "statsd", shop.pool.size gauge_delta 3 }"#,
        r#"[logger] Samples { source: "statsd", shop.checkout.latency observation 42 }"#,
        r#"[logger] Samples { source: "statsd", shop.users set "alice" }"#,
        // One datagram of three lines, in order.
        r#"[logger] Samples { source: "statsd", shop.batch counter 1 }"#,
        r#"[logger] Samples { source: "statsd", shop.batch counter 1 }"#,
        r#"[logger] Samples { source: "statsd", shop.batch.latency observation 7.5 }"#,
    ];
    let lines = eventually("every sample in the logger", || {
        let l = logger_lines(&m);
        (l.len() >= want.len()).then_some(l)
    });
    assert_eq!(lines, want);
}

#[test]
fn malformed_lines_are_counted_by_reason_and_the_good_ones_beside_them_kept() {
    let m = Monitor::start(&[
        "--no-sim",
        "--web",
        "127.0.0.1:0",
        "--statsd",
        "127.0.0.1:0",
    ]);
    let addr = statsd_addr(&m);
    let mut datagram = b"good.a:1|c\nnovalue\ngood.b:2|g|#service:web\nx:abc|c\n:1|c\n".to_vec();
    datagram.extend_from_slice(b"good.c:5|ms|@0.5|#route:/x\nx:1|c|@7\nx:1|zz\nx:1|c|#a,,b\n");
    datagram.extend_from_slice(b"\xff\xfe:1|c\ngood.d:1|c|@0.1\ntruncated:1|");
    send(&addr, &datagram);
    send(&addr, b"good.e:1|s\n\n");
    let s = eventually("every line of both datagrams", || {
        let s = statsd_status(&m);
        (s["accepted"].as_u64()? + s["malformed"].as_u64()? == 13).then_some(s)
    });
    assert_eq!(s["accepted"], 5, "{s}");
    assert_eq!(s["received"], 2, "{s}");
    let by_reason = &s["malformed_by_reason"];
    for (reason, n) in [
        ("no value", 1),
        ("bad value", 1),
        ("empty name", 1),
        ("bad sample rate", 1),
        ("unknown type", 2),
        ("bad tag", 1),
        ("not UTF-8", 1),
    ] {
        assert_eq!(by_reason[reason], n, "{reason}: {s}");
    }
    let examples: Vec<&str> = s["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["input"].as_str().unwrap())
        .collect();
    assert!(examples.contains(&"truncated:1|"), "{s}");
    assert!(examples.contains(&"novalue"), "{s}");
    let want = [
        r#"[logger] Samples { source: "statsd", good.a counter 1 }"#,
        r#"[logger] Samples { source: "web", good.b gauge 2 }"#,
        r#"[logger] Samples { source: "statsd", good.c{route="/x"} observation 5 x2 }"#,
        r#"[logger] Samples { source: "statsd", good.d counter 10 }"#,
        r#"[logger] Samples { source: "statsd", good.e set "1" }"#,
    ];
    let lines = eventually("the good lines in the logger", || {
        let l = logger_lines(&m);
        (l.len() >= want.len()).then_some(l)
    });
    assert_eq!(lines, want);
}

#[test]
fn an_asked_for_address_that_is_taken_is_an_error_naming_it() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(bin())
        .args(["monitor", "--no-data-dir", "--no-web", "--duration", "5"])
        .args(["--statsd", &addr])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("cannot listen on {addr} for StatsD")),
        "{err}"
    );
    assert!(err.contains("--no-statsd"), "{err}");
}

#[test]
fn the_default_port_taken_is_a_warning_and_the_monitor_runs_on() {
    // Hold 8125 if it is free; if another monitor holds it, it is taken all
    // the same (try for a while: test monitors come and go).
    let mut held = None;
    for _ in 0..100 {
        match UdpSocket::bind("127.0.0.1:8125") {
            Ok(s) => {
                held = Some(s);
                break;
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    let mut m = Monitor::start(&["--no-web", "--duration", "1.5", "--interval-ms", "50"]);
    assert!(m.wait().success(), "{}", m.stderr.text());
    let err = m.stderr.text();
    assert!(
        err.contains(
            "[statsd] warning: cannot listen on the default StatsD address 127.0.0.1:8125"
        ),
        "{err}"
    );
    let out = m.stdout.text();
    assert!(!out.contains("[statsd] listening"), "{out}");
    assert!(out.contains("[dashboard] === 1s summary ==="), "{out}");
    drop(held);
}

/// `--modules ingest` on the edge, next to the services: it takes StatsD and
/// exports; the watching process shows what it took.
#[test]
fn an_edge_process_ingests_statsd_and_exports_to_a_watching_one_over_nats() {
    let server = NatsServer::start().expect("start nats-server");
    let url = server.url();
    let watcher = Monitor::start(&[
        "--modules",
        "dashboard,logger,alerter,web",
        "--web",
        "127.0.0.1:0",
        "--nats",
        &url,
    ]);
    watcher.stdout.wait_for("the watcher connected", |l| {
        l.starts_with("[nats] exporting and importing metrics.>")
    });
    let mut edge = Monitor::start(&[
        "--modules",
        "ingest",
        "--no-web",
        "--statsd",
        "127.0.0.1:0",
        "--nats",
        &url,
    ]);
    edge.stdout.wait_for("the edge exporting", |l| {
        l.starts_with("[nats] exporting metrics.> to")
    });
    let addr = statsd_addr(&edge);
    send(
        &addr,
        b"edge.requests:1|c|#service:shop\nedge.latency:12|ms|#service:shop",
    );
    send(&addr, b"edge.queue:4|g\nbroken");
    let want = [
        r#"[logger] Samples { source: "shop", edge.requests counter 1 }"#,
        r#"[logger] Samples { source: "shop", edge.latency observation 12 }"#,
        r#"[logger] Samples { source: "statsd", edge.queue gauge 4 }"#,
    ];
    let lines = eventually("the edge's samples in the watcher's logger", || {
        let l = logger_lines(&watcher);
        (l.len() >= want.len()).then_some(l)
    });
    assert_eq!(lines, want);
    // The edge runs no consumer of its own.
    edge.interrupt();
    assert!(edge.wait().success(), "{}", edge.stderr.text());
    let out = edge.stdout.text();
    assert!(
        !out.contains("[logger]") && !out.contains("[dashboard]"),
        "{out}"
    );
    assert!(out.contains("[nats] disconnected: 3 exported"), "{out}");
}
