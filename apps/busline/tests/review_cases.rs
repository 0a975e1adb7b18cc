//! Cases a review found (each failed before its fix), run on the binary.

mod common;

use std::process::Command;

use common::*;

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

/// After a restart the alert reports the errors of the last minute (it
/// fired on the replay's sixth error and reported 6/min).
#[test]
fn after_a_restart_the_alert_reports_the_errors_of_the_last_minute() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_busline"))
            .args([
                "monitor",
                "--no-web",
                "--data-dir",
                data,
                "--log-file",
                "/dev/null",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // Every request fails: the errors are the requests published.
    let first = run(&[
        "--error-rate",
        "1",
        "--interval-ms",
        "20",
        "--alert-threshold",
        "1000000",
        "--duration",
        "2",
    ]);
    // The first run's last summary: "Errors: N (M in the last minute)".
    let last = first
        .lines()
        .rfind(|l| l.trim_start().starts_with("Errors: "))
        .unwrap_or_else(|| panic!("no summary: {first}"));
    let errors: usize = last
        .split('(')
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{last}"));
    assert!(errors > 10, "{last}");
    let second = run(&[
        "--error-rate",
        "0",
        "--alert-threshold",
        "5",
        "--duration",
        "1",
    ]);
    let alert = second
        .lines()
        .find(|l| l.starts_with("[ALERT] Error rate: "))
        .unwrap_or_else(|| panic!("no alert: {second}"));
    let rate: usize = alert["[ALERT] Error rate: ".len()..]
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // At least what the first run's last summary counted (errors published
    // after that summary are in the replay too).
    assert!(
        rate >= errors,
        "{alert}, while the first run counted {errors}"
    );
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

/// `busline log append` keeps the lines before one that is not UTF-8 and
/// names it (it kept none and named no line).
#[test]
fn log_append_keeps_the_lines_before_a_bad_one() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_busline"))
        .args(["log", "append", log.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"a\":1}\n{\"a\":2}\n\xff\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("line 3"), "{err}");
    let info = Command::new(env!("CARGO_BIN_EXE_busline"))
        .args(["log", "info", log.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("offsets 0..2"), "{text}");
}
