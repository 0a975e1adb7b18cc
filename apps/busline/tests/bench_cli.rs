//! The benchmark commands run, print the JSON the README relies on, and lose nothing.

use std::process::Command;

fn busline(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_busline"))
        .args(args)
        .output()
        .expect("run busline");
    assert!(
        out.status.success(),
        "busline {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

#[test]
fn fanout_json_has_every_system_and_loses_nothing() {
    for policy in ["lossless", "lossy"] {
        let v = busline(&[
            "bench",
            "fanout",
            "--subscribers",
            "3",
            "--events",
            "20000",
            "--rounds",
            "1",
            "--policy",
            policy,
            "--json",
        ]);
        let results = v["results"].as_array().unwrap();
        let systems: Vec<&str> = results
            .iter()
            .map(|r| r["system"].as_str().unwrap())
            .collect();
        assert_eq!(
            systems,
            [
                &*format!("busline-{policy}"),
                &*format!("busline-{policy}-publish-to"),
                "tokio-broadcast-naive",
                "tokio-broadcast-yield64",
                "tokio-mpsc-per-subscriber",
                "async-broadcast",
                "flume-per-subscriber",
                "flume-envelope-per-subscriber"
            ]
        );
        for r in results {
            assert_eq!(r["lost"], 0, "{r}");
            let delivered = r["delivered"].as_u64().unwrap();
            let lagged = r["lagged"].as_u64().unwrap();
            assert_eq!(delivered + lagged, 60_000, "{r}");
            assert!(r["deliveries_per_s"].as_f64().unwrap() > 0.0);
            assert!(r["ratio_vs_flume_envelope"].as_f64().unwrap() > 0.0, "{r}");
        }
        // Each row is compared with the one channel carrying envelopes.
        let envelope = &results[systems.len() - 1];
        assert_eq!(envelope["system"], "flume-envelope-per-subscriber");
        assert_eq!(envelope["ratio_vs_flume_envelope"], 1.0);
        if policy == "lossless" {
            assert_eq!(results[0]["delivered"], 60_000);
        }
    }
}

#[test]
fn fanout_json_compares_cpu_per_delivery_with_broadcast() {
    let v = busline(&[
        "bench",
        "fanout",
        "--subscribers",
        "2",
        "--events",
        "20000",
        "--rounds",
        "1",
        "--threads",
        "1",
        "--json",
    ]);
    assert_eq!(v["threads"], 1);
    for r in v["results"].as_array().unwrap() {
        assert!(r["cpu_ns_per_delivery"].as_f64().is_some(), "{r}");
        // (null when broadcast's CPU time was below the clock's tick)
        assert!(r.get("cpu_ratio_vs_broadcast_best").is_some(), "{r}");
        assert_eq!(r["lost"], 0, "{r}");
    }
}

#[test]
fn slow_subscriber_json_has_the_limit_and_loses_nothing() {
    let v = busline(&[
        "bench",
        "fanout",
        "--work",
        "format",
        "--subscribers",
        "3",
        "--events",
        "20000",
        "--rounds",
        "1",
        "--json",
    ]);
    assert_eq!(v["work"], "format");
    assert_eq!(v["publishers"], 2);
    let results = v["results"].as_array().unwrap();
    let systems: Vec<&str> = results
        .iter()
        .map(|r| r["system"].as_str().unwrap())
        .collect();
    assert_eq!(
        systems,
        [
            "plain-loop-limit",
            "busline-lossless",
            "tokio-mpsc-per-subscriber",
            "async-broadcast"
        ]
    );
    assert_eq!(results[0]["delivered"], 20_000);
    assert_eq!(results[0]["ratio_vs_limit"], 1.0);
    for r in results {
        assert_eq!(r["lost"], 0, "{r}");
        // The logger did the same work in every system.
        assert_eq!(r["formatted_bytes"], results[0]["formatted_bytes"], "{r}");
        for field in [
            "events_per_s",
            "deliveries_per_s",
            "cpu_ns_per_event",
            "cpu_ns_per_delivery",
            "voluntary_ctxt_switches",
            "nonvoluntary_ctxt_switches",
            "ratio_vs_limit",
        ] {
            assert!(r[field].is_number(), "{field}: {r}");
        }
    }
    for r in &results[1..] {
        assert_eq!(r["delivered"], 60_000, "{r}");
    }
}

#[test]
fn keyed_json_handles_every_job_in_each_system() {
    let v = busline(&[
        "bench", "keyed", "--events", "20000", "--keys", "64", "--rounds", "1", "--json",
    ]);
    let results = v["results"].as_array().unwrap();
    let systems: Vec<&str> = results
        .iter()
        .map(|r| r["system"].as_str().unwrap())
        .collect();
    assert_eq!(
        systems,
        [
            "busline-keyed-group",
            "busline-queue-group",
            "mpsc-hash-workers"
        ]
    );
    for r in results {
        assert_eq!(r["handled"], 20_000, "{r}");
        assert!(r["events_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert_eq!(results[1]["ratio_vs_queue_group"], 1.0);
}

#[test]
fn request_json_has_both_actors_for_each_requester_count() {
    let v = busline(&[
        "bench",
        "request",
        "--requests",
        "2000",
        "--requesters",
        "1,4",
        "--rounds",
        "1",
        "--json",
    ]);
    let rows: Vec<(String, u64)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r["round_trips_per_s"].as_f64().unwrap() > 0.0, "{r}");
            assert!(
                r["p50_us"].as_f64().unwrap() <= r["p99_us"].as_f64().unwrap(),
                "{r}"
            );
            (
                r["system"].as_str().unwrap().to_string(),
                r["requesters"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("busline-module", 1),
        ("mpsc-oneshot-actor", 1),
        ("busline-module", 4),
        ("mpsc-oneshot-actor", 4),
    ];
    assert_eq!(rows, want.map(|(s, n)| (s.to_string(), n)));
}

#[test]
fn routing_json_reports_cost_and_ratio() {
    let v = busline(&[
        "bench",
        "routing",
        "--subscribers",
        "2000",
        "--publishes",
        "2000",
        "--rounds",
        "1",
        "--json",
    ]);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["subscribers"], 10);
    assert_eq!(results[1]["subscribers"], 2000);
    assert!(v["ns_per_publish"].as_f64().unwrap() > 0.0);
    assert!(v["ratio_vs_10"].as_f64().unwrap() > 0.0);
    // 2000 subscribers take some resident memory each.
    assert!(v["rss_bytes_per_subscription"].as_f64().unwrap() > 0.0);
    assert!(results[1]["rss_bytes_per_subscription"].is_number());
}

#[test]
fn ingest_json_accounts_for_every_statsd_line_and_otlp_point() {
    let v = busline(&[
        "bench",
        "ingest",
        "--lines",
        "5000",
        "--per-datagram",
        "10",
        "--malformed",
        "2",
        "--bodies",
        "20",
        "--points",
        "34",
        "--rounds",
        "1",
        "--json",
    ]);
    let results = v["results"].as_array().unwrap();
    let rows: Vec<(&str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["system"].as_str().unwrap(),
                r["protocol"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("bare-udp", "statsd"),
            ("busline-monitor", "statsd"),
            ("bare-otlp-decode", "otlp"),
            ("busline-monitor", "otlp")
        ]
    );
    for r in &results[..2] {
        assert_eq!(r["sent"], 5000, "{r}");
        assert_eq!(r["lost"], 0, "{r}");
        let counted = r["counted"].as_u64().unwrap();
        let rejected = r["rejected"].as_u64().unwrap();
        let dropped = r["kernel_dropped"].as_u64().unwrap();
        assert_eq!(counted + rejected + dropped, 5000, "{r}");
        assert_eq!(dropped % 10, 0, "whole datagrams: {r}");
        assert!(r["per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
    // Two malformed lines in each datagram the monitor read.
    let m = &results[1];
    let read = 5000 - m["kernel_dropped"].as_u64().unwrap();
    assert_eq!(m["rejected"].as_u64().unwrap(), read / 5, "{m}");
    assert_eq!(m["counted"].as_u64().unwrap(), read / 5 * 4, "{m}");
    // OTLP: 20 bodies, each of two services × one group of 17 points (16
    // taken, one refused): 680 points, every one counted or rejected.
    for r in &results[2..] {
        assert_eq!(r["sent"], 680, "{r}");
        assert_eq!(r["lost"], 0, "{r}");
        assert_eq!(r["kernel_dropped"], 0, "{r}");
        assert!(r["per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert_eq!(
        results[2]["counted"], 680,
        "the bare decode reads every point"
    );
    let m = &results[3];
    assert_eq!(
        m["rejected"], 40,
        "one refused point per service and body: {m}"
    );
    assert_eq!(m["counted"], 640, "{m}");
    assert!(m["ratio_vs_bare"].as_f64().unwrap() > 0.0, "{m}");
}

#[test]
fn bad_arguments_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/metrics.jsonl");
    let empty = dir.path().display().to_string();
    // (Each of these once ran on, hung, panicked or said something else.)
    for (args, says) in [
        (
            vec!["bench", "fanout", "--events", "0"],
            "must be at least 1",
        ),
        (
            vec!["bench", "fanout", "--threads", "0"],
            "--threads must be at least 1",
        ),
        (
            vec!["bench", "fanout", "--work", "format", "--policy", "lossy"],
            "--work format measures lossless publishers",
        ),
        (
            vec!["bench", "ingest", "--malformed", "25"],
            "--malformed must be less than --per-datagram",
        ),
        (
            vec!["bench", "log", "--batch", "0"],
            "--batch and --events must be at least 1",
        ),
        (
            vec!["bench", "es", "--snapshot-every", "0"],
            "--snapshot-every must be between 1 and --events",
        ),
        (
            vec![
                "publish",
                "--to",
                "bad url",
                r#"{"type":"request","path":"/x","latency_ms":1,"status":200}"#,
            ],
            "--to `bad url` is not a monitor address",
        ),
        (
            vec![
                "monitor",
                "--data-dir",
                "/etc/passwd",
                "--duration",
                "1",
                "--no-web",
            ],
            "it is a file, not a directory",
        ),
        (vec!["log", "verify", &empty], "holds no log"),
        (vec!["log", "info", &empty], "holds no log"),
        (vec!["log", "read", &empty], "holds no log"),
        (
            vec![
                "monitor",
                "--log-file",
                missing.to_str().unwrap(),
                "--duration",
                "1",
                "--no-web",
                "--no-data-dir",
            ],
            "--log-file: cannot open",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_busline"))
            .args(&args)
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn nats_json_has_every_system_in_both_modes() {
    // Needs a real nats-server (the bench starts a private one), like the other NATS tests.
    let v = busline(&[
        "bench", "nats", "--events", "500", "--rounds", "1", "--json",
    ]);
    let rows: Vec<(&str, &str)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["mode"].as_str().unwrap(), r["system"].as_str().unwrap()))
        .collect();
    let mut want = Vec::new();
    for mode in ["core", "jetstream"] {
        for system in [
            "async-nats",
            "async-nats+1hdr",
            "async-nats+meta",
            "busline-nats",
        ] {
            want.push((mode, system));
        }
    }
    assert_eq!(rows, want);
    for r in v["results"].as_array().unwrap() {
        assert!(r["msgs_per_s"].as_f64().unwrap() > 0.0, "{r}");
        if r["system"] == "async-nats" {
            assert_eq!(r["ratio_vs_async_nats"], 1.0, "{r}");
        }
    }
}
