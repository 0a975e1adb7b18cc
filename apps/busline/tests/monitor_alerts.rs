//! Alert rules from the config file, end to end: the real binary, events
//! sent through `POST /api/events`, the `[ALERT]` lines and `/api/summary`.

mod common;

use std::process::Command;

use common::*;

/// Rules that fire on the seed's request shape and on the generic samples
/// form, and resolve once their short windows have passed.
const RULES: &str = r#"
[[alert]]
name = "server-errors"
metric = "request.latency_ms"
labels = { status = "5*" }
function = "count"
window = "5s"
threshold = 2

[[alert]]
name = "slow-checkout"
metric = "request.latency_ms"
labels = { path = "/checkout" }
function = "p99"
window = "5s"
op = ">="
threshold = 200

[[alert]]
name = "queue-deep"
metric = "queue.depth"
source = "worker"
function = "last"
window = "30s"
threshold = 100
for = "1s"

[[alert]]
name = "node-down"
function = "up"
source = "node"
"#;

fn config(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("monitor.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn alerts(m: &Monitor) -> Vec<String> {
    m.stdout
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("[ALERT]"))
        .collect()
}

fn rule(summary: &serde_json::Value, name: &str) -> serde_json::Value {
    summary["rules"]
        .as_array()
        .unwrap_or_else(|| panic!("no rules: {summary}"))
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no rule {name}: {summary}"))
        .clone()
}

#[test]
fn configured_rules_fire_and_resolve_on_events_from_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&dir, RULES);
    let mut m = Monitor::start(&[
        "--config",
        &cfg,
        "--web",
        "127.0.0.1:0",
        "--no-sim",
        "--alert-threshold",
        "2",
        "--duration",
        "60",
        "--log-file",
        "/dev/null",
    ]);

    // Every rule is listed at once, ok, the default first.
    let v = eventually("the rules in /api/summary", || {
        let v = get(&m, "/api/summary").json();
        (v["rules"].as_array().map(Vec::len) == Some(5)).then_some(v)
    });
    let names: Vec<&str> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "error-rate",
            "server-errors",
            "slow-checkout",
            "queue-deep",
            "node-down"
        ]
    );
    let r = rule(&v, "slow-checkout");
    assert_eq!(r["state"], "ok", "{r}");
    assert_eq!(
        r["expr"],
        r#"p99(request.latency_ms{path="/checkout"} [5s]) >= 200"#
    );
    assert_eq!(r["threshold"], 200.0);
    assert!(r["since_ms"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(rule(&v, "queue-deep")["value"], serde_json::Value::Null);

    // Three 500s on /checkout, slow: server-errors (3 > 2) and
    // slow-checkout (p99 300 >= 200) fire. Three errors: the default rule.
    let body = r#"[
        {"type":"request","path":"/checkout","latency_ms":300,"status":500},
        {"type":"request","path":"/checkout","latency_ms":300,"status":503},
        {"type":"request","path":"/checkout","latency_ms":300,"status":500},
        {"type":"request","path":"/health","latency_ms":900,"status":200},
        {"type":"error","source":"payments","message":"card declined"},
        {"type":"error","source":"payments","message":"card declined"},
        {"type":"error","source":"payments","message":"card declined"}
    ]"#;
    let r = post(&m, "/api/events", body);
    assert_eq!(r.status, 202, "{r:?}");
    // The generic samples form: a deep queue on `worker`, and the same
    // metric from another source, which the rule does not look at.
    // A scrape target down (what the scrape ingester publishes per scrape).
    let up = |v: u8| {
        format!(
            r#"{{"type":"samples","source":"node","samples":[{{"name":"up","kind":"gauge","value":{v},"labels":{{"instance":"http://127.0.0.1:9100/metrics","job":"node"}}}}]}}"#
        )
    };
    assert_eq!(post(&m, "/api/events", &up(0)).status, 202);
    for (source, depth) in [("worker", 150), ("other", 5000)] {
        let body = format!(
            r#"{{"type":"samples","source":"{source}","samples":[{{"name":"queue.depth","kind":"gauge","value":{depth}}}]}}"#
        );
        let r = post(&m, "/api/events", &body);
        assert_eq!(r.status, 202, "{r:?}");
    }
    let fired = |name: &str| format!("[ALERT] {name}: ");
    // queue-deep fires after its `for` (the last of the four).
    eventually("queue-deep firing", || {
        alerts(&m)
            .iter()
            .any(|l| l.starts_with(&fired("queue-deep")))
            .then_some(())
    });
    let v = get(&m, "/api/summary").json();
    let q = rule(&v, "queue-deep");
    assert_eq!(
        (&q["state"], &q["value"]),
        (&"firing".into(), &150.0.into()),
        "{q}"
    );
    // And on /metrics, per rule.
    let prom = get(&m, "/metrics").body;
    assert!(
        prom.contains("busline_monitor_rule_firing{rule=\"queue-deep\"} 1"),
        "{prom}"
    );
    assert_eq!(v["alert"]["firing"], true, "{v}");
    assert_eq!(v["alert"]["rate"], 3, "{v}");

    // The queue drains: queue-deep resolves; the short windows pass: the
    // request rules resolve; the target is back. The errors stay in their
    // minute.
    let r = post(
        &m,
        "/api/events",
        r#"{"type":"samples","source":"worker","samples":[{"name":"queue.depth","kind":"gauge","value":20}]}"#,
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(post(&m, "/api/events", &up(1)).status, 202);
    eventually("four resolved lines", || {
        (alerts(&m)
            .iter()
            .filter(|l| l.contains(" resolved: "))
            .count()
            >= 4)
            .then_some(())
    });
    m.interrupt();
    assert!(m.wait().success(), "{}", m.stderr.text());
    let lines = alerts(&m);
    let one = |prefix: &str| {
        let hits: Vec<&String> = lines.iter().filter(|l| l.starts_with(prefix)).collect();
        assert_eq!(hits.len(), 1, "{prefix}: {lines:#?}");
        hits[0].clone()
    };
    assert_eq!(
        one("[ALERT] Error rate: "),
        "[ALERT] Error rate: 3/min — threshold exceeded! (threshold 2/min)"
    );
    assert_eq!(
        one(&fired("server-errors")),
        r#"[ALERT] server-errors: count(request.latency_ms{status="5*"} [5s]) = 3 > 2 — firing"#
    );
    assert_eq!(
        one(&fired("slow-checkout")),
        r#"[ALERT] slow-checkout: p99(request.latency_ms{path="/checkout"} [5s]) = 300 >= 200 — firing"#
    );
    assert_eq!(
        one(&fired("queue-deep")),
        r#"[ALERT] queue-deep: last(queue.depth{source="worker"} [30s]) = 150 > 100 for 1s — firing"#
    );
    assert_eq!(
        one("[ALERT] queue-deep resolved: "),
        r#"[ALERT] queue-deep resolved: last(queue.depth{source="worker"} [30s]) = 20"#
    );
    // (The three may leave the window in different buckets: at 2 or below.)
    let resolved = one("[ALERT] server-errors resolved: ");
    let value = resolved
        .strip_prefix(
            r#"[ALERT] server-errors resolved: count(request.latency_ms{status="5*"} [5s]) = "#,
        )
        .unwrap_or_else(|| panic!("{resolved}"));
    assert!(["0", "1", "2"].contains(&value), "{resolved}");
    assert_eq!(
        one("[ALERT] slow-checkout resolved: "),
        r#"[ALERT] slow-checkout resolved: p99(request.latency_ms{path="/checkout"} [5s]) = no data"#
    );
    assert_eq!(
        one(&fired("node-down")),
        r#"[ALERT] node-down: up(up{source="node"} [1m]) = 1 > 0 — firing"#
    );
    assert_eq!(
        one("[ALERT] node-down resolved: "),
        r#"[ALERT] node-down resolved: up(up{source="node"} [1m]) = 0"#
    );
    assert!(
        !lines.iter().any(|l| l.contains("back to normal")),
        "{lines:#?}"
    );
}

#[test]
fn a_bad_rule_stops_start_up_naming_the_rule_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = "[[alert]]\nname = \"ok\"\nmetric = \"x\"\nfunction = \"max\"\nthreshold = 1\n";
    for (rule, want) in [
        (
            "name = \"p\"\nmetric = \"x\"\nfunction = \"p95\"\nthreshold = 1",
            "alert rule #2 (\"p\"): key `function`: unknown function \"p95\"",
        ),
        (
            "name = \"w\"\nmetric = \"x\"\nfunction = \"max\"\nwindow = \"soon\"\nthreshold = 1",
            "alert rule #2 (\"w\"): key `window`: \"soon\" is not a duration",
        ),
        (
            "name = \"o\"\nmetric = \"x\"\nfunction = \"max\"\nop = \"==\"\nthreshold = 1",
            "alert rule #2 (\"o\"): key `op`: unknown comparison \"==\"",
        ),
        (
            "name = \"k\"\nmetric = \"x\"\nfunction = \"max\"\nthreshold = 1\nlabel = {}",
            "alert rule #2 (\"k\"): key `label`: unknown field `label`",
        ),
        (
            "name = \"t\"\nmetric = \"x\"\nfunction = \"max\"\nthreshold = ",
            "(in alert rule #2)",
        ),
    ] {
        let cfg = config(&dir, &format!("{good}[[alert]]\n{rule}\n"));
        let o = Command::new(bin())
            .args(["monitor", "--config", &cfg, "--no-web", "--no-data-dir"])
            .args(["--duration", "5"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{rule}: it started\n{err}");
        assert!(err.contains(want), "{rule}: {err}");
        assert!(err.contains("monitor.toml"), "{err}");
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("[monitor] running"),
            "{rule}"
        );
    }
}

/// An alert the webhook is still retrying when the monitor stops is
/// delivered within the alerter's grace time (it used to be dropped with
/// the runtime, unreported).
#[test]
fn an_alert_being_retried_at_stop_is_still_delivered() {
    // Busy twice (retried with backoff), then fine.
    let hook = webhook(|n| {
        if n < 2 {
            b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        } else {
            b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
        }
    });
    let o = Command::new(env!("CARGO_BIN_EXE_busline"))
        .args([
            "monitor",
            "--no-web",
            "--no-data-dir",
            "--duration",
            "0.3",
            "--interval-ms",
            "20",
            "--error-rate",
            "1",
            "--alert-threshold",
            "5",
            "--log-file",
            "/dev/null",
            "--alert-webhook",
            &hook.url,
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(out.contains("[ALERT] Error rate:"), "{out}");
    assert_eq!(
        hook.delivered.lock().unwrap().len(),
        1,
        "stdout:\n{out}\nstderr:\n{err}"
    );
}
