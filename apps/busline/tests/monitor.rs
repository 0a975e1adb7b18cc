//! `busline monitor` end to end: the real binary, real sockets. Its web
//! API is in `monitor_web_api.rs`, its `/metrics` in `monitor_metrics.rs`.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

use common::*;

const SUMMARY: &str = "[dashboard] === 1s summary ===";

#[test]
fn summaries_appear_every_second_and_the_logger_sees_every_metric() {
    let mut m = Monitor::start(&["--no-web", "--duration", "3", "--interval-ms", "20"]);
    let status = m.wait();
    let out = m.stdout.text();
    assert!(
        status.success(),
        "exit {status}\n{out}\n{}",
        m.stderr.text()
    );
    let summaries = out.lines().filter(|l| *l == SUMMARY).count();
    assert!(summaries >= 2, "{summaries} summaries in:\n{out}");
    assert!(out.contains("  Requests: "), "{out}");
    assert!(out.contains("  DB queries: "), "{out}");
    assert!(out.contains("  Errors: "), "{out}");
    // Every published metric was logged (lossless), none dropped silently.
    let logged = out.lines().filter(|l| l.starts_with("[logger] ")).count();
    assert!(out.contains("[logger] Request { path: \"/"), "{out}");
    assert!(out.contains("[logger] DbQuery { query: "), "{out}");
    let last = out.lines().last().unwrap();
    let published: usize = last
        .split(": ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in the final line {last:?}"));
    assert!(last.starts_with("[monitor] stopped after"), "{last}");
    assert_eq!(logged, published, "the logger missed metrics:\n{out}");
}

#[test]
fn the_log_file_holds_every_metric_as_json_lines() {
    let dir = tempdir("log");
    let path = dir.join("metrics.jsonl");
    let mut m = Monitor::start(&[
        "--no-web",
        "--duration",
        "1.5",
        "--interval-ms",
        "10",
        "--log-file",
        path.to_str().unwrap(),
    ]);
    assert!(m.wait().success(), "{}", m.stderr.text());
    let out = m.stdout.text();
    assert!(
        !out.contains("[logger]"),
        "stdout logging despite --log-file:\n{out}"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let mut seqs = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            v["topic"].as_str().unwrap().starts_with("metrics."),
            "{line}"
        );
        assert!(v["metric"]["type"].is_string(), "{line}");
        seqs.push(v["seq"].as_u64().unwrap());
    }
    let published: usize = out
        .lines()
        .last()
        .unwrap()
        .split(": ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(published > 10, "{out}");
    assert_eq!(seqs.len(), published, "{out}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn an_alert_fires_once_per_crossing() {
    let mut m = Monitor::start(&[
        "--no-web",
        "--duration",
        "3",
        "--interval-ms",
        "20",
        "--error-rate",
        "1",
        "--alert-threshold",
        "5",
        "--log-file",
        "/dev/null",
        // A dead webhook (nothing listens there): retried, then given up on,
        // without holding anything up.
        "--alert-webhook",
        &dead_url(),
    ]);
    assert!(m.wait().success(), "{}", m.stderr.text());
    let out = m.stdout.text();
    let err = m.stderr.text();
    assert!(err.contains("gave up after 3 attempts"), "{err}");
    let alerts: Vec<&str> = out.lines().filter(|l| l.starts_with("[ALERT]")).collect();
    // The rate crosses 5/min within the first second and stays above it
    // (errors leave the window only after a minute): exactly one alert, no
    // repeats every second, no recovery.
    assert_eq!(alerts.len(), 1, "{out}");
    assert!(
        alerts[0].starts_with("[ALERT] Error rate: 6/min — threshold exceeded!"),
        "{}",
        alerts[0]
    );
    assert!(out.lines().filter(|l| *l == SUMMARY).count() >= 2, "{out}");
}

/// A URL on a port nothing listens on.
fn dead_url() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/hook")
}

#[test]
fn alerts_go_to_the_webhook() {
    // A real HTTP endpoint that records what it receives.
    let hook = webhook(|_| b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    let url = hook.url.clone();
    let mut m = Monitor::start(&[
        "--no-web",
        "--duration",
        "2.5",
        "--interval-ms",
        "20",
        "--error-rate",
        "1",
        "--alert-threshold",
        "5",
        "--log-file",
        "/dev/null",
        "--alert-webhook",
        &url,
    ]);
    assert!(m.wait().success(), "{}", m.stderr.text());
    let bodies = hook.delivered.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}\n{}", m.stdout.text());
    let v: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(v["state"], "firing", "{v}");
    assert_eq!(v["threshold"], 5, "{v}");
    assert!(v["rate"].as_u64().unwrap() > 5, "{v}");
}

#[test]
fn ctrl_c_stops_it_cleanly() {
    let mut m = Monitor::start(&[
        "--web",
        "127.0.0.1:0",
        "--interval-ms",
        "20",
        "--log-file",
        "/dev/null",
    ]);
    m.stdout.wait_for("a summary", |l| l == SUMMARY);
    // An open event stream must not hold up the shutdown.
    let addr = m.addr();
    let mut sse = std::net::TcpStream::connect(&addr).unwrap();
    write!(sse, "GET /api/stream HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut first = [0u8; 64];
    sse.read_exact(&mut first).unwrap();
    m.interrupt();
    let status = m.wait();
    let out = m.stdout.text();
    assert!(
        status.success(),
        "exit {status}\n{out}\n{}",
        m.stderr.text()
    );
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("[monitor] stopped after") && last.contains("SIGINT"),
        "{out}"
    );
}

#[test]
fn config_file_sets_options_and_unknown_keys_are_named() {
    let dir = tempdir("config");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "no-web = true\nduration = 1.2\ninterval-ms = 20\nerror-rate = 1.0\nalert-threshold = 1000\nlog-file = \"/dev/null\"\n",
    )
    .unwrap();
    // The option overrides the file's threshold: an alert fires.
    let mut m = Monitor::start(&[
        "--config",
        good.to_str().unwrap(),
        "--alert-threshold",
        "3",
        "--no-web",
    ]);
    assert!(m.wait().success(), "{}", m.stderr.text());
    assert_eq!(
        m.stdout
            .lines()
            .iter()
            .filter(|l| l.starts_with("[ALERT]"))
            .count(),
        1,
        "{}",
        m.stdout.text()
    );

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "interval-ms = 20\nerror_rate = 0.5\n").unwrap();
    let out = Command::new(bin())
        .args(["monitor", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error_rate") && err.contains("bad.toml"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

fn tempdir(what: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "busline-monitor-test-{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A finite but huge `--duration` is a named error, not a panic.
#[test]
fn a_huge_duration_is_a_named_error_not_a_panic() {
    let out = Command::new(env!("CARGO_BIN_EXE_busline"))
        .args(["monitor", "--no-web", "--no-data-dir", "--duration", "1e20"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("duration 100000000000000000000: too long"),
        "{err}"
    );
}
