//! `busline monitor` end to end: the real binary, real sockets.

mod common;

use std::collections::HashMap;
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
fn the_events_api_checks_every_event() {
    let m = Monitor::start(&[
        "--web",
        "127.0.0.1:0",
        "--no-sim",
        "--max-body",
        "1024",
        "--duration",
        "30",
        "--log-file",
        "/dev/null",
    ]);

    // Valid: one event, and an array.
    let r = post(
        &m,
        "/api/events",
        r#"{"type":"request","path":"/checkout","latency_ms":42.5,"status":200}"#,
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.json()["accepted"], 1);
    let r = post(
        &m,
        "/api/events",
        r#"[{"type":"db_query","query":"SELECT 1","duration_ms":3},
            {"type":"error","source":"payments","message":"card declined"}]"#,
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.json()["accepted"], 2);

    // Malformed JSON.
    let r = post(&m, "/api/events", r#"{"type":"request","#);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("malformed JSON"),
        "{r:?}"
    );

    // A wrong field name: named in the answer.
    let r = post(
        &m,
        "/api/events",
        r#"{"type":"request","path":"/x","latency":42}"#,
    );
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(r.json()["field"], "latency", "{r:?}");
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("unknown field `latency`"));

    // A wrong type, in the second event of an array: nothing of it is published.
    let r = post(
        &m,
        "/api/events",
        r#"[{"type":"request","path":"/ok","latency_ms":1},
            {"type":"request","path":"/x","latency_ms":"slow"}]"#,
    );
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(r.json()["field"], "latency_ms", "{r:?}");
    assert_eq!(r.json()["index"], 1, "{r:?}");

    // Too big.
    let big = format!(
        r#"{{"type":"error","source":"web","message":"{}"}}"#,
        "x".repeat(4000)
    );
    let r = post(&m, "/api/events", &big);
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.body.contains("1024"), "{r:?}");

    // Only the valid ones were counted: 1 request, 1 query, 1 error.
    let summary = eventually("the summary to count the posted events", || {
        let v = get(&m, "/api/summary").json();
        let totals = &v["summary"]["totals"];
        (totals["requests"] == 1 && totals["db_queries"] == 1 && totals["errors"] == 1).then_some(v)
    });
    assert_eq!(summary["ingested"], 3, "{summary}");
    assert_eq!(summary["rejected"], 4, "{summary}");
    assert_eq!(summary["bus"]["published"], 3, "{summary}");
    assert_eq!(
        summary["recent_errors"][0]["message"], "card declined",
        "{summary}"
    );
}

#[test]
fn busline_publish_posts_to_a_running_monitor() {
    let m = Monitor::start(&[
        "--web",
        "127.0.0.1:0",
        "--no-sim",
        "--duration",
        "30",
        "--log-file",
        "/dev/null",
    ]);
    let out = Command::new(bin())
        .args(["publish", "--to", &m.addr()])
        .arg(r#"{"type":"request","path":"/from-shell","latency_ms":7}"#)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // From stdin, as JSON Lines.
    let mut child = Command::new(bin())
        .args(["publish", "--to", &m.addr()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"{\"type\":\"db_query\",\"query\":\"SELECT 2\",\"duration_ms\":1}\n{\"type\":\"request\",\"path\":\"/b\",\"latency_ms\":3}\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A bad event is refused with the field named, and nothing is sent.
    let out = Command::new(bin())
        .args(["publish", "--to", &m.addr()])
        .arg(r#"{"type":"request","path":"/x","latency_ms":-5}"#)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("latency_ms"), "{err}");

    eventually("the published events in the summary", || {
        let v = get(&m, "/api/summary").json();
        (v["summary"]["totals"]["requests"] == 2 && v["summary"]["totals"]["db_queries"] == 1)
            .then_some(())
    });
    assert_eq!(get(&m, "/api/summary").json()["ingested"], 3);
}

/// A minimal parser of the Prometheus text exposition format (0.0.4).
fn parse_prometheus(text: &str) -> Result<HashMap<String, f64>, String> {
    fn is_name(s: &str) -> bool {
        let mut c = s.chars();
        matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
    }
    let mut samples = HashMap::new();
    let mut types: HashMap<String, String> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let err = |m: &str| format!("line {}: {m}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let parts: Vec<&str> = rest.trim_start().splitn(3, ' ').collect();
            match parts.first() {
                Some(&"TYPE") => {
                    let (name, ty) = (parts.get(1).copied(), parts.get(2).copied());
                    let (Some(name), Some(ty)) = (name, ty) else {
                        return Err(err("bad TYPE"));
                    };
                    if !is_name(name) {
                        return Err(err("bad metric name"));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty) {
                        return Err(err("unknown type"));
                    }
                    if types.insert(name.to_owned(), ty.to_owned()).is_some() {
                        return Err(err("second TYPE for a metric"));
                    }
                }
                Some(&"HELP") if !parts.get(1).is_some_and(|s| is_name(s)) => {
                    return Err(err("bad HELP"));
                }
                _ => {} // a comment
            }
            continue;
        }
        // name{labels} value [timestamp]
        let (series, value_part) = match line.find('{') {
            Some(open) => {
                let name = &line[..open];
                if !is_name(name) {
                    return Err(err("bad metric name"));
                }
                // Scan the labels, honouring escapes in quoted values.
                let bytes = line.as_bytes();
                let mut i = open + 1;
                loop {
                    while bytes.get(i) == Some(&b' ') {
                        i += 1;
                    }
                    if bytes.get(i) == Some(&b'}') {
                        break;
                    }
                    let eq = line[i..].find('=').ok_or_else(|| err("label without ="))? + i;
                    if !is_name(line[i..eq].trim()) {
                        return Err(err("bad label name"));
                    }
                    if bytes.get(eq + 1) != Some(&b'"') {
                        return Err(err("unquoted label value"));
                    }
                    i = eq + 2;
                    loop {
                        match bytes.get(i) {
                            None => return Err(err("unterminated label value")),
                            Some(b'\\') => {
                                if !matches!(bytes.get(i + 1), Some(b'\\' | b'"' | b'n')) {
                                    return Err(err("bad escape"));
                                }
                                i += 2;
                            }
                            Some(b'"') => break,
                            Some(b'\n') => return Err(err("newline in label value")),
                            Some(_) => i += 1,
                        }
                    }
                    i += 1;
                    match bytes.get(i) {
                        Some(b',') => i += 1,
                        Some(b'}') => break,
                        _ => return Err(err("expected , or }")),
                    }
                }
                (&line[..=i], &line[i + 1..])
            }
            None => {
                let sp = line.find(' ').ok_or_else(|| err("no value"))?;
                if !is_name(&line[..sp]) {
                    return Err(err("bad metric name"));
                }
                (&line[..sp], &line[sp..])
            }
        };
        let mut fields = value_part.split_whitespace();
        let value = fields.next().ok_or_else(|| err("no value"))?;
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| err("value is not a number"))?,
        };
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| err("bad timestamp"))?;
        }
        if fields.next().is_some() {
            return Err(err("trailing fields"));
        }
        if samples.insert(series.to_owned(), v).is_some() {
            return Err(err("duplicate series"));
        }
    }
    Ok(samples)
}

#[test]
fn the_prometheus_parser_refuses_bad_text() {
    assert!(
        parse_prometheus("a_total 1\nb{x=\"y\",z=\"w\\\"\"} 2.5\n# TYPE a_total counter\n").is_ok()
    );
    assert!(parse_prometheus("1abc 1").is_err());
    assert!(parse_prometheus("a{x=y} 1").is_err());
    assert!(parse_prometheus("a{x=\"y} 1").is_err());
    assert!(parse_prometheus("a one").is_err());
    assert!(parse_prometheus("# TYPE a bogus").is_err());
    assert!(parse_prometheus("a 1\na 2").is_err());
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

#[test]
fn binding_beyond_loopback_needs_a_token() {
    let out = Command::new(bin())
        .args(["monitor", "--web", "0.0.0.0:0", "--duration", "1"])
        .env_remove("BUSLINE_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without a token") && err.contains("--token"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
}

#[test]
fn a_token_guards_the_api() {
    let token = "s3cret-token-for-tests";
    let m = Monitor::start(&[
        "--web",
        "127.0.0.1:0",
        "--token",
        token,
        "--no-sim",
        "--duration",
        "30",
        "--log-file",
        "/dev/null",
    ]);
    let (addr, host) = (m.addr(), m.addr());
    let bearer = format!("Authorization: Bearer {token}");
    let event = br#"{"type":"request","path":"/t","latency_ms":1}"#;

    let r = http(&addr, "GET", "/api/summary", &host, &[], b"");
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = http(
        &addr,
        "GET",
        "/api/summary",
        &host,
        &["Authorization: Bearer wrong-token"],
        b"",
    );
    assert_eq!(r.status, 401, "{r:?}");
    let r = http(&addr, "GET", "/", &host, &[], b"");
    assert_eq!(r.status, 401, "{r:?}");
    let r = http(&addr, "POST", "/api/events", &host, &[], event);
    assert_eq!(r.status, 401, "{r:?}");
    // ?token= opens the page and the stream, not the write API.
    let r = http(
        &addr,
        "POST",
        &format!("/api/events?token={token}"),
        &host,
        &[],
        event,
    );
    assert_eq!(r.status, 401, "{r:?}");

    let r = http(&addr, "GET", "/api/summary", &host, &[&bearer], b"");
    assert_eq!(r.status, 200, "{r:?}");
    let r = http(&addr, "GET", &format!("/?token={token}"), &host, &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("<canvas"), "{r:?}");
    let r = http(
        &addr,
        "GET",
        &format!("/metrics?token={token}"),
        &host,
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = http(&addr, "POST", "/api/events", &host, &[&bearer], event);
    assert_eq!(r.status, 202, "{r:?}");
}

#[test]
fn a_foreign_host_header_is_refused() {
    let m = Monitor::start(&[
        "--web",
        "127.0.0.1:0",
        "--no-sim",
        "--duration",
        "30",
        "--log-file",
        "/dev/null",
    ]);
    let addr = m.addr();
    let port = addr.rsplit(':').next().unwrap();
    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("10.1.2.3:{port}"),
    ] {
        for (method, path) in [
            ("GET", "/"),
            ("GET", "/api/summary"),
            ("POST", "/api/events"),
        ] {
            let r = http(
                &addr,
                method,
                path,
                &host,
                &[],
                br#"{"type":"request","path":"/t","latency_ms":1}"#,
            );
            assert_eq!(r.status, 403, "{host} {method} {path}: {r:?}");
            assert!(r.body.contains("DNS-rebinding"), "{r:?}");
        }
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "localhost".into(),
    ] {
        let r = http(&addr, "GET", "/api/summary", &host, &[], b"");
        assert_eq!(r.status, 200, "{host}: {r:?}");
    }
    // Nothing from the refused requests reached the bus.
    assert_eq!(get(&m, "/api/summary").json()["bus"]["published"], 0);
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

/// `POST /api/events` takes JSON only: a `text/plain` POST (what a page on
/// another site can send to a local monitor without a preflight) is refused.
#[test]
fn the_event_api_refuses_what_a_foreign_web_page_could_send() {
    use std::io::{Read, Write};
    let m = Monitor::start(&["--web", "127.0.0.1:0", "--duration", "30"]);
    let addr = m.addr();
    let event = r#"{"type":"error","source":"evil","message":"x"}"#;
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "POST /api/events HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{event}",
        event.len()
    )
    .unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    assert!(raw.starts_with("HTTP/1.1 415"), "{raw}");
    let r = post(&m, "/api/events", event);
    assert_eq!(r.status, 202, "{r:?}");
}

/// The dashboard URL the monitor prints works with any token it accepts
/// (`+`, `&`, `%`, `#` were not encoded).
#[test]
fn the_printed_url_carries_the_token_encoded() {
    let token = "s3cret+tok&en%#x";
    let m = Monitor::start(&["--web", "127.0.0.1:0", "--token", token, "--duration", "30"]);
    let line = m.stdout.wait_for("[web] dashboard on", |l| {
        l.starts_with("[web] dashboard on ")
    });
    let url = line.trim_start_matches("[web] dashboard on ");
    let path = &url[url.find("/?").unwrap()..];
    assert!(!path.contains('&') && !path.contains('#'), "{path}");
    let host = m.addr();
    let r = http(&m.addr(), "GET", path, &host, &[], b"");
    assert_eq!(r.status, 200, "{path}: {r:?}");
}
