//! The monitor's `/metrics` page, read by prometheus-client's own parser
//! of the text exposition format (`tests/interop/prom_parse.py`).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

/// The series in Prometheus text `text` (`name{label="value",...}` to its
/// value), as prometheus-client parses it; `Err` with the parser's
/// complaint if it refuses the text or a series appears twice.
fn parse_prometheus(text: &str) -> Result<HashMap<String, f64>, String> {
    let mut child = Command::new(interop_python())
        .arg(format!(
            "{}/tests/interop/prom_parse.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the interop python runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let parsed: HashMap<String, serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    Ok(parsed
        .into_iter()
        .map(|(k, v)| {
            let v = v
                .as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .unwrap_or_else(|| panic!("{k}: {v} is not a number"));
            (k, v)
        })
        .collect())
}

/// The check below can fail: the parser refuses what is not the format.
#[test]
fn the_prometheus_parser_refuses_bad_text() {
    let good = parse_prometheus("a_total 1\nb{x=\"y\",z=\"w\\\"\"} 2.5\n").unwrap();
    assert_eq!(good["a_total"], 1.0);
    assert_eq!(good["b{x=\"y\",z=\"w\\\"\"}"], 2.5);
    for bad in ["a{x=y} 1", "a one", "# TYPE a bogus\na 1", "a 1\na 2"] {
        assert!(parse_prometheus(bad).is_err(), "{bad:?} was taken");
    }
}

#[test]
fn metrics_is_prometheus_text() {
    let m = Monitor::start(&[
        "--web",
        "127.0.0.1:0",
        "--interval-ms",
        "20",
        "--duration",
        "30",
        "--log-file",
        "/dev/null",
    ]);
    let samples = eventually("the monitor's counters in /metrics", || {
        let r = get(&m, "/metrics");
        assert_eq!(r.status, 200, "{r:?}");
        assert!(
            r.header("content-type").unwrap().starts_with("text/plain"),
            "{r:?}"
        );
        let samples = parse_prometheus(&r.body).unwrap_or_else(|e| panic!("{e}\nin:\n{}", r.body));
        samples
            .contains_key("busline_monitor_requests_total")
            .then_some(samples)
    });
    assert!(samples["busline_published_total"] > 0.0, "{samples:?}");
    assert!(
        samples["busline_monitor_requests_total"] > 0.0,
        "{samples:?}"
    );
    for sub in ["logger", "dashboard", "alerter"] {
        assert!(
            samples
                .keys()
                .any(|k| k.starts_with("busline_subscriber_delivered_total")
                    && k.contains(&format!("subscriber=\"{sub}\""))),
            "no delivered count for {sub}: {samples:?}"
        );
    }
    assert!(
        samples
            .keys()
            .any(|k| k.starts_with("busline_module_running")),
        "{samples:?}"
    );
}
