//! The monitor's web API end to end: the events API, `busline publish`,
//! and what guards the API (a token beyond loopback, the Host header, JSON
//! only).

mod common;

use std::io::Write;
use std::process::Command;

use common::*;

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
    let m = quiet_web_monitor();
    let out = Command::new(bin())
        .args(["publish", "--to", &m.addr()])
        .arg(r#"{"type":"request","path":"/from-shell","latency_ms":7}"#)
        .output()
        .unwrap();
    assert_succeeded(&out);

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
    assert_succeeded(&out);

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
    let m = quiet_web_monitor();
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

/// A monitor serving its web API on a free port, with no simulated
/// services and no log output, for at most 30 s.
fn quiet_web_monitor() -> Monitor {
    Monitor::start(&[
        "--web",
        "127.0.0.1:0",
        "--no-sim",
        "--duration",
        "30",
        "--log-file",
        "/dev/null",
    ])
}
