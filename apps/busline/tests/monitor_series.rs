//! Every metric is a series: `/api/summary` lists each by the name it was
//! sent with, with its per-second and per-minute statistics; a cap on the
//! number of series counts what it turns away; a restart replays the last
//! minute into every series.

mod common;

use common::*;
use serde_json::{json, Value};

/// The series `name` of `source` in a summary, if it is listed.
fn series<'a>(summary: &'a Value, source: &str, series: &str) -> Option<&'a Value> {
    summary["series"]
        .as_array()?
        .iter()
        .find(|s| s["source"] == source && s["series"] == series)
}

/// Waits until the summary lists `series` of `source` with `count` samples
/// in its minute; returns that series.
fn minute_count(m: &Monitor, source: &str, name: &str, count: f64) -> Value {
    let mut last = Value::Null;
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(&format!("{source}/{name} with {count} samples"), || {
            last = get(m, "/api/summary").json();
            series(&last, source, name)
                .filter(|s| s["minute"]["count"].as_f64() == Some(count))
                .cloned()
        })
    }));
    found.unwrap_or_else(|_| panic!("never listed {source}/{name} x{count}; last: {last:#}"))
}

fn near(v: &Value, want: f64) {
    let got = v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert!((got - want).abs() <= want * 0.001, "{got} vs {want}");
}

fn post_ok(m: &Monitor, body: Value) {
    let r = post(m, "/api/events", &body.to_string());
    assert_eq!(r.status, 202, "{r:?}");
}

#[test]
fn every_metric_is_listed_as_a_series_with_its_statistics() {
    let m = Monitor::start(&[
        "--no-sim",
        "--web",
        "127.0.0.1:0",
        "--log-file",
        "/dev/null",
        "--max-series",
        "3",
        "--duration",
        "120",
    ]);
    let mut events: Vec<Value> = (1..=10)
        .map(|ms| json!({"type": "request", "path": "/a", "latency_ms": ms * 10, "status": 200}))
        .collect();
    events
        .extend((0..3).map(|_| json!({"type": "db_query", "query": "SELECT 1", "duration_ms": 4})));
    events.push(json!({"type": "error", "source": "checkout", "message": "first"}));
    events.push(json!({"type": "error", "source": "checkout", "message": "card declined"}));
    post_ok(&m, Value::Array(events));

    let req = minute_count(
        &m,
        "web",
        r#"request.latency_ms{path="/a",status="200"}"#,
        10.0,
    );
    assert_eq!(req["name"], "request.latency_ms");
    assert_eq!(req["labels"], json!({"path": "/a", "status": "200"}));
    assert_eq!(req["kind"], "observation");
    let min = &req["minute"];
    assert_eq!(
        (min["sum"].as_f64(), min["mean"].as_f64()),
        (Some(550.0), Some(55.0))
    );
    assert_eq!(
        (min["min"].as_f64(), min["max"].as_f64()),
        (Some(10.0), Some(100.0))
    );
    near(&min["p50"], 50.0);
    near(&min["p90"], 90.0);
    near(&min["p99"], 100.0);
    assert!(
        (min["rate"].as_f64().unwrap() - 10.0 / 60.0).abs() < 1e-9,
        "{req:#}"
    );
    let db = minute_count(&m, "db", "db.query.duration_ms", 3.0);
    assert_eq!(db["minute"]["mean"].as_f64(), Some(4.0));
    let err = minute_count(&m, "checkout", "error", 2.0);
    assert_eq!(
        (err["kind"].as_str(), err["last_message"].as_str()),
        (Some("error"), Some("card declined"))
    );

    // The store is full (3 series): new series are turned away, counted, shown.
    post_ok(
        &m,
        json!([
            {"type": "request", "path": "/b", "latency_ms": 1},
            {"type": "request", "path": "/c", "latency_ms": 1},
            {"type": "request", "path": "/a", "latency_ms": 1},
        ]),
    );
    let s = eventually("the overflow counted", || {
        let s = get(&m, "/api/summary").json();
        (s["series_status"]["overflow"]["samples"] == 2).then_some(s)
    });
    let o = &s["series_status"]["overflow"];
    assert_eq!(o["by_name"], json!({"request.latency_ms": 2}), "{s:#}");
    assert_eq!(o["max_series"], 3);
    assert_eq!(s["series"].as_array().unwrap().len(), 3);
    // The known series still counts.
    minute_count(
        &m,
        "web",
        r#"request.latency_ms{path="/a",status="200"}"#,
        11.0,
    );
    m.stdout.wait_for("the ingest line", |l| {
        l == "  Ingest: 2 samples of new series over --max-series 3 (request.latency_ms: 2)"
    });
    // And on /metrics, for a Prometheus watching the monitor.
    let text = get(&m, "/metrics").body;
    assert!(text.contains("busline_monitor_series 3\n"), "{text}");
    assert!(
        text.contains("busline_monitor_series_overflow_samples_total 2\n"),
        "{text}"
    );
}

#[test]
fn a_restart_replays_the_last_minute_into_every_series() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let args = [
        "--no-sim",
        "--web",
        "127.0.0.1:0",
        "--log-file",
        "/dev/null",
        "--data-dir",
        data,
        "--duration",
        "120",
    ];
    let mut first = Monitor::start(&args);
    post_ok(
        &first,
        json!([
            {"type": "request", "path": "/replay", "latency_ms": 7},
            {"type": "request", "path": "/replay", "latency_ms": 9},
            {"type": "db_query", "query": "q", "duration_ms": 2},
            {"type": "error", "source": "billing", "message": "timeout"},
        ]),
    );
    minute_count(&first, "billing", "error", 1.0);
    first.interrupt();
    assert!(first.wait().success());

    let second = Monitor::start(&args);
    let req = minute_count(
        &second,
        "web",
        r#"request.latency_ms{path="/replay",status="200"}"#,
        2.0,
    );
    assert_eq!(req["minute"]["mean"].as_f64(), Some(8.0));
    minute_count(&second, "db", "db.query.duration_ms", 1.0);
    minute_count(&second, "billing", "error", 1.0);
}
