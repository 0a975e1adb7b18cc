//! What the monitor shows stays consistent whatever it is sent: samples
//! the aggregations cannot hold are refused naming the field (and the
//! monitor keeps counting), the dashboard and the alert rules agree on
//! percentiles and error counts, and the event API counts what it receives,
//! accepts and refuses. Run on the binary.

mod common;

use common::*;
use serde_json::{json, Value};

/// Rules over the same series the store lists, to compare their values.
const RULES: &str = r#"
[[alert]]
name = "lat-p99"
metric = "lat"
source = "w"
function = "p99"
threshold = 1e9

[[alert]]
name = "neg-p50"
metric = "neg"
source = "w"
function = "p50"
threshold = 1e9
"#;

fn start(config: Option<&str>) -> (Monitor, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--no-sim",
        "--web",
        "127.0.0.1:0",
        "--log-file",
        "/dev/null",
        "--duration",
        "120",
    ];
    let path = dir.path().join("monitor.toml");
    if let Some(text) = config {
        std::fs::write(&path, text).unwrap();
        args.extend(["--config", path.to_str().unwrap()]);
    }
    (Monitor::start(&args), dir)
}

fn samples(samples: Value) -> String {
    json!({"type": "samples", "source": "w", "samples": samples}).to_string()
}

/// The minute statistics of series `name` of source `w`, once it has
/// `count` samples.
fn minute(m: &Monitor, name: &str, count: f64) -> Value {
    eventually(&format!("w/{name} with {count} samples"), || {
        let s = get(m, "/api/summary").json();
        s["series"]
            .as_array()?
            .iter()
            .find(|s| s["source"] == "w" && s["series"] == name)
            .filter(|s| s["minute"]["count"].as_f64() == Some(count))
            .map(|s| s["minute"].clone())
    })
}

/// Histograms the store could not take (min > max panicked it; counts
/// past u64 overflowed), observations whose weight overflows a count and
/// labels that carry terminal escapes are refused with the field named,
/// and the monitor goes on.
#[test]
fn samples_the_store_cannot_take_are_refused_naming_the_field() {
    let (m, _dir) = start(None);
    for (sample, field) in [
        (
            json!({"name":"h","kind":"histogram","bounds":[1],"counts":[1,1],"min":5,"max":1}),
            "samples[0].min",
        ),
        (
            json!({"name":"h","kind":"histogram","bounds":[1],"counts":[u64::MAX,1]}),
            "samples[0].counts",
        ),
        (
            json!({"name":"h","kind":"histogram","bounds":[2,1],"counts":[1,1,1]}),
            "samples[0].bounds",
        ),
        (
            json!({"name":"o","kind":"observation","value":1,"weight":1e300}),
            "samples[0].weight",
        ),
        (
            json!({"name":"g","kind":"gauge","value":1,"labels":{"k":"\u{1b}[2J"}}),
            "samples[0].labels",
        ),
    ] {
        let r = post(&m, "/api/events", &samples(json!([sample])));
        assert_eq!(r.status, 422, "{sample}: {r:?}");
        assert_eq!(r.json()["field"], field, "{sample}: {r:?}");
    }
    // Still counting: the store did not panic.
    let ok = json!({"name":"h","kind":"histogram","bounds":[1],"counts":[1,1],"min":0.5,"max":5});
    assert_eq!(post(&m, "/api/events", &samples(json!([ok]))).status, 202);
    let h = minute(&m, "h", 2.0);
    assert_eq!(h["max"], 5.0, "{h}");
    let err = m.stderr.text();
    assert!(!err.contains("panicked"), "{err}");
}

/// The dashboard's percentiles (the series store) and a rule's over the
/// same samples are the same number: one midpoint function, one digest.
#[test]
fn the_dashboard_and_the_rules_agree_on_percentiles() {
    let (m, _dir) = start(Some(RULES));
    // All ten in the open last bucket, up to 300: both count them at 200.
    let lat = json!({"name":"lat","kind":"histogram","bounds":[100],"counts":[0,10],"max":300});
    assert_eq!(post(&m, "/api/events", &samples(json!([lat]))).status, 202);
    let neg: Vec<Value> = [-30, -20, -10]
        .iter()
        .map(|v| json!({"name":"neg","kind":"observation","value":v}))
        .collect();
    assert_eq!(post(&m, "/api/events", &samples(json!(neg))).status, 202);
    for (name, count, rule, stat) in [
        ("lat", 10.0, "lat-p99", "p99"),
        ("neg", 3.0, "neg-p50", "p50"),
    ] {
        let shown = minute(&m, name, count)[stat]
            .as_f64()
            .unwrap_or_else(|| panic!("no {stat} for {name}"));
        let value = eventually(&format!("a value for {rule}"), || {
            let s = get(&m, "/api/summary").json();
            s["rules"].as_array()?.iter().find(|r| r["name"] == rule)?["value"].as_f64()
        });
        assert!(
            (shown - value).abs() <= 1e-9 * shown.abs(),
            "{name}: the dashboard shows {stat} {shown}, rule {rule} {value}"
        );
    }
    let lat = minute(&m, "lat", 10.0);
    assert!((lat["p99"].as_f64().unwrap() - 200.0).abs() <= 0.2, "{lat}");
}

/// `POST /api/events` counts into the API's ingest counters: requests
/// received, samples accepted, refusals by reason with an example.
#[test]
fn the_event_api_counts_what_it_receives_accepts_and_refuses() {
    let (m, _dir) = start(None);
    let two = json!([{"name":"g","kind":"gauge","value":1},{"name":"g","kind":"gauge","value":2}]);
    assert_eq!(post(&m, "/api/events", &samples(two)).status, 202);
    let seed = r#"{"type":"request","path":"/a","latency_ms":5,"status":200}"#;
    assert_eq!(post(&m, "/api/events", seed).status, 202);
    assert_eq!(post(&m, "/api/events", "{").status, 400);
    let bad = samples(json!([{"name":"g","kind":"gauge","value":1,"labels":{"":"v"}}]));
    assert_eq!(post(&m, "/api/events", &bad).status, 422);
    let api = get(&m, "/api/summary").json()["ingest"]["api"].clone();
    assert_eq!(api["received"], 4, "{api}");
    // Two gauges, and the request's latency sample.
    assert_eq!(api["accepted"], 3, "{api}");
    assert_eq!(api["malformed"], 2, "{api}");
    assert_eq!(api["malformed_by_reason"]["malformed JSON"], 1, "{api}");
    assert_eq!(api["malformed_by_reason"]["invalid event"], 1, "{api}");
    let examples = api["examples"].to_string();
    assert!(examples.contains("labels"), "{api}");
}

/// Errors and requests sent in the generic form under the seed's names
/// count in the seed's summary as the built-in rule counts them (the
/// summary said "Errors: 0" while the rule alerted on 11).
#[test]
fn the_summary_counts_generic_errors_and_requests_as_the_rule_does() {
    let (m, _dir) = start(None);
    let errors: Vec<Value> = (0..11)
        .map(|_| json!({"name":"error","kind":"error","message":"card declined"}))
        .collect();
    let body = json!({"type":"samples","source":"payments","samples":errors}).to_string();
    assert_eq!(post(&m, "/api/events", &body).status, 202);
    let latency: Vec<Value> = [10, 20, 30]
        .iter()
        .map(|v| json!({"name":"request.latency_ms","kind":"observation","value":v}))
        .collect();
    let body = json!({"type":"samples","source":"web","samples":latency}).to_string();
    assert_eq!(post(&m, "/api/events", &body).status, 202);
    m.stdout.wait_for("the alert on 11 errors", |l| {
        l.starts_with("[ALERT] Error rate: 11/min")
    });
    m.stdout.wait_for("11 errors in the summary", |l| {
        l.trim_start().starts_with("Errors: ") && l.contains("(11 in the last minute)")
    });
    m.stdout.wait_for("3 requests in the summary", |l| {
        l.trim_start().starts_with("Requests: 3, avg latency: 20ms")
    });
}
