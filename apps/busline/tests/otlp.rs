//! OTLP/HTTP `POST /v1/metrics` on the real monitor: the OpenTelemetry
//! Python SDK's exporter (protobuf, gzip) on `--otlp`, an OTLP JSON body as a
//! user sends it with curl on the web address, and bad input.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use common::{eventually, get, interop_python, logged, Monitor, PATIENCE};
use serde_json::Value;

fn script(name: &str) -> String {
    format!("{}/tests/interop/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A POST with exactly these headers; the status, headers and raw body.
fn post(addr: &str, path: &str, headers: &[&str], body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // It may answer (413) before reading the whole body.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

/// Sum of the counter increments of `name` with `labels` from `source`.
fn counted(log: &[(String, Value)], source: &str, name: &str, labels: Value) -> f64 {
    log.iter()
        .filter(|(src, s)| {
            src == source && s["name"] == name && s["kind"] == "counter" && {
                let l = s.get("labels").cloned().unwrap_or(Value::Null);
                labels == Value::Null && l == Value::Null || l == labels
            }
        })
        .map(|(_, s)| s["value"].as_f64().unwrap())
        .sum()
}

fn otlp_counters(m: &Monitor) -> Value {
    get(m, "/api/summary").json()["ingest"]["otlp"].clone()
}

#[test]
fn the_opentelemetry_sdk_exports_counters_histograms_and_gauges() {
    let py = interop_python();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("metrics.jsonl");
    let m = Monitor::start(&[
        "--no-sim",
        "--web",
        "127.0.0.1:0",
        "--otlp",
        "127.0.0.1:0",
        "--log-file",
        log.to_str().unwrap(),
    ]);
    let line = m
        .stdout
        .wait_for("[otlp] line", |l| l.starts_with("[otlp] "));
    let endpoint = line.rsplit(' ').next().unwrap().to_owned();
    let out = Command::new(&py)
        .arg(script("otlp_sdk_send.py"))
        .arg(&endpoint)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run the OTLP sender");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("done"),
        "the SDK sender failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Three exports (two flushes and the one at shutdown), all of their
    // points taken: orders eu and us, latency, temperature each time
    // (cumulative: every series is in every export).
    let c = otlp_counters(&m);
    assert_eq!(c["received"], 3, "{c}");
    assert_eq!(c["malformed"], 0, "{c}");
    assert_eq!(c["accepted"], 12, "{c}");

    let samples = eventually("the last export in the log", || {
        let l = logged(&log);
        let latencies = l.iter().filter(|(_, s)| s["name"] == "latency_ms").count();
        (latencies == 3).then_some(l)
    });
    assert!(samples.iter().all(|(src, _)| src == "shop"));
    let eu = counted(
        &samples,
        "shop",
        "orders",
        serde_json::json!({"region": "eu"}),
    );
    let us = counted(
        &samples,
        "shop",
        "orders",
        serde_json::json!({"region": "us"}),
    );
    assert_eq!((eu, us), (8.0, 2.0), "{samples:?}");
    // The histogram: 5 observations in all, counted once each.
    let mut by_bucket: BTreeMap<String, u64> = BTreeMap::new();
    let mut sum = 0.0;
    for (_, s) in samples.iter().filter(|(_, s)| s["name"] == "latency_ms") {
        assert_eq!(s["kind"], "histogram");
        let bounds = s["bounds"].as_array().unwrap();
        for (i, c) in s["counts"].as_array().unwrap().iter().enumerate() {
            let upper = bounds
                .get(i)
                .map(|b| b.to_string())
                .unwrap_or("+Inf".into());
            *by_bucket.entry(upper).or_default() += c.as_u64().unwrap();
        }
        sum += s["sum"].as_f64().unwrap();
    }
    assert_eq!(by_bucket.values().sum::<u64>(), 5, "{by_bucket:?}");
    assert_eq!(sum, 5.0 + 15.0 + 150.0 + 1500.0 + 40.0);
    // 5 in (0,5], 15 in (10,25], 40 in (25,50], 150 in (100,250], 1500 in (1000,2500].
    for (bound, n) in [
        ("5.0", 1),
        ("25.0", 1),
        ("50.0", 1),
        ("250.0", 1),
        ("2500.0", 1),
    ] {
        assert_eq!(by_bucket.get(bound), Some(&n), "{by_bucket:?}");
    }
    let temps: Vec<f64> = samples
        .iter()
        .filter(|(_, s)| s["name"] == "temperature")
        .map(|(_, s)| {
            assert_eq!(s["kind"], "gauge");
            s["value"].as_f64().unwrap()
        })
        .collect();
    assert_eq!(temps, vec![21.5, 23.0, 23.0]);
    // The --otlp listener serves nothing else.
    let (status, _, _) = post(
        endpoint
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap(),
        "/api/events",
        &["Content-Type: application/json"],
        b"{}",
    );
    assert_eq!(status, 404);
}

/// OTLP JSON as written by hand: 64-bit integers as strings, enums as numbers.
const JSON_BODY: &str = r#"{"resourceMetrics":[{
  "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
  "scopeMetrics":[{"scope":{"name":"curl"},"metrics":[
    {"name":"orders","sum":{"aggregationTemporality":1,"isMonotonic":true,
      "dataPoints":[{"asInt":"3","timeUnixNano":"1700000000000000000",
        "attributes":[{"key":"region","value":{"stringValue":"eu"}}]}]}},
    {"name":"queue.depth","gauge":{"dataPoints":[{"asDouble":4.5}]}},
    {"name":"no.temporality","sum":{"isMonotonic":true,"dataPoints":[{"asInt":"1"},{"asInt":"2"}]}}
  ]}]}]}"#;

#[test]
fn an_otlp_json_body_is_decoded_counted_and_partly_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("metrics.jsonl");
    let m = Monitor::start(&[
        "--no-sim",
        "--web",
        "127.0.0.1:0",
        "--log-file",
        log.to_str().unwrap(),
    ]);
    let (status, head, body) = post(
        &m.addr(),
        "/v1/metrics",
        &["Content-Type: application/json"],
        JSON_BODY.as_bytes(),
    );
    assert_eq!(status, 200, "{head}\n{}", String::from_utf8_lossy(&body));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let partial = &answer["partialSuccess"];
    assert_eq!(partial["rejectedDataPoints"], 2, "{answer}");
    let msg = partial["errorMessage"].as_str().unwrap();
    assert!(
        msg.contains("unspecified aggregation temporality") && msg.contains("\"no.temporality\""),
        "{msg}"
    );
    let c = otlp_counters(&m);
    assert_eq!(
        (c["received"].as_u64(), c["accepted"].as_u64()),
        (Some(1), Some(2)),
        "{c}"
    );
    assert_eq!(
        c["malformed_by_reason"]["unspecified aggregation temporality"], 2,
        "{c}"
    );
    let samples = eventually("the samples in the log", || {
        let l = logged(&log);
        (l.len() == 2).then_some(l)
    });
    assert_eq!(
        counted(
            &samples,
            "checkout",
            "orders",
            serde_json::json!({"region": "eu"})
        ),
        3.0
    );
    let depth = samples
        .iter()
        .find(|(_, s)| s["name"] == "queue.depth")
        .unwrap();
    assert_eq!(
        (depth.1["kind"].as_str(), depth.1["value"].as_f64()),
        (Some("gauge"), Some(4.5))
    );
}

#[test]
fn bad_otlp_requests_get_clear_errors_and_are_counted() {
    let m = Monitor::start(&["--no-sim", "--web", "127.0.0.1:0"]);
    let addr = m.addr();
    let protobuf = "Content-Type: application/x-protobuf";

    let (status, _, body) = post(
        &addr,
        "/v1/metrics",
        &[protobuf],
        b"\xff\xff\xff\xff garbage",
    );
    assert_eq!(status, 400);
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("cannot decode the body as OTLP protobuf"),
        "{text}"
    );

    let (status, _, body) = post(&addr, "/v1/metrics", &["Content-Type: text/plain"], b"x 1");
    assert_eq!(status, 415);
    assert!(String::from_utf8_lossy(&body).contains("application/x-protobuf"));

    let (status, _, body) = post(
        &addr,
        "/v1/metrics",
        &["Content-Type: application/json"],
        b"{\"resourceMetrics\":",
    );
    assert_eq!(status, 400);
    let e: Value = serde_json::from_slice(&body).unwrap();
    assert!(e["message"].as_str().unwrap().contains("OTLP JSON"), "{e}");

    // Bodies over the API's --max-body (64 KiB) but within 4 MiB are taken.
    let points: Vec<String> = (0..4000)
        .map(|i| {
            format!(
                r#"{{"asDouble":{i},"attributes":[{{"key":"i","value":{{"intValue":"{i}"}}}}]}}"#
            )
        })
        .collect();
    let large = format!(
        r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"g","gauge":{{"dataPoints":[{}]}}}}]}}]}}]}}"#,
        points.join(",")
    );
    assert!(large.len() > 128 << 10, "{}", large.len());
    let (status, _, body) = post(
        &addr,
        "/v1/metrics",
        &["Content-Type: application/json"],
        large.as_bytes(),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    let big = vec![0u8; 5 << 20];
    let (status, _, _) = post(&addr, "/v1/metrics", &[protobuf], &big);
    assert_eq!(status, 413);

    let (status, _, _) = post(
        &addr,
        "/v1/metrics",
        &[protobuf, "Content-Encoding: gzip"],
        b"not gzip",
    );
    assert_eq!(status, 400);

    let c = otlp_counters(&m);
    assert_eq!(c["received"], 6, "{c}");
    assert_eq!(c["accepted"], 4000, "{c}");
    for reason in [
        "undecodable OTLP protobuf",
        "wrong content type",
        "undecodable OTLP JSON",
        "body too large",
        "bad gzip body",
    ] {
        assert_eq!(c["malformed_by_reason"][reason], 1, "{reason}: {c}");
    }
    // Still serving.
    let (status, _, _) = post(
        &addr,
        "/v1/metrics",
        &["Content-Type: application/json"],
        JSON_BODY.as_bytes(),
    );
    assert_eq!(status, 200);
}

#[test]
fn a_token_guards_both_otlp_addresses() {
    let token = "s3cret-token";
    let m = Monitor::start(&[
        "--no-sim",
        "--web",
        "127.0.0.1:0",
        "--otlp",
        "127.0.0.1:0",
        "--token",
        token,
    ]);
    let line = m
        .stdout
        .wait_for("[otlp] line", |l| l.starts_with("[otlp] "));
    let otlp = line
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_start_matches("http://")
        .trim_end_matches("/v1/metrics")
        .to_owned();
    let json = "Content-Type: application/json";
    let bearer = format!("Authorization: Bearer {token}");
    for addr in [m.addr(), otlp] {
        let (status, _, _) = post(&addr, "/v1/metrics", &[json], JSON_BODY.as_bytes());
        assert_eq!(status, 401, "{addr} without the token");
        let (status, _, _) = post(
            &addr,
            "/v1/metrics",
            &[json, "Authorization: Bearer wrong-token"],
            JSON_BODY.as_bytes(),
        );
        assert_eq!(status, 401, "{addr} with a wrong token");
        let (status, _, body) = post(&addr, "/v1/metrics", &[json, &bearer], JSON_BODY.as_bytes());
        assert_eq!(status, 200, "{addr}: {}", String::from_utf8_lossy(&body));
    }
}

#[test]
fn otlp_beyond_loopback_needs_a_token() {
    let out = Command::new(common::bin())
        .args([
            "monitor",
            "--no-data-dir",
            "--no-web",
            "--otlp",
            "0.0.0.0:0",
            "--duration",
            "1",
        ])
        .env_remove("BUSLINE_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token"), "{err}");
}
