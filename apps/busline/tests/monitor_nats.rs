//! `busline monitor --nats`: publishers in one process, the dashboard,
//! logger and alerter in another, a real `nats-server` between them. The
//! watching process also takes events on its API: it exports those and
//! imports everyone's, and still counts each event once.

mod common;

use busline_nats::server::NatsServer;
use common::*;

#[test]
fn the_dashboard_in_one_process_shows_the_publishers_of_another() {
    let server = NatsServer::start().expect("start nats-server");
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let data_b = dir.path().join("b");

    // B watches: dashboard, logger, alerter (with its own event log and the
    // web API, whose events it exports: it runs both ways).
    let mut b = Monitor::start(&[
        "--modules",
        "dashboard,logger,alerter,web",
        "--web",
        "127.0.0.1:0",
        "--nats",
        &url,
        "--data-dir",
        data_b.to_str().unwrap(),
        "--alert-threshold",
        "1000",
    ]);
    b.stdout.wait_for("B connected both ways", |l| {
        l.starts_with("[nats] exporting and importing metrics.>")
    });

    // A publishes, for a few seconds, and exits.
    let mut a = Monitor::start(&[
        "--modules",
        "publishers",
        "--nats",
        &url,
        "--no-web",
        "--interval-ms",
        "20",
        "--error-rate",
        "0.2",
        "--duration",
        "2",
    ]);
    assert!(a.wait().success(), "{}", a.stderr.text());
    let out_a = a.stdout.text();
    let sent = published(&out_a);
    assert!(sent > 10, "{out_a}");
    // A runs no consumer: no summaries, no log lines of its own.
    assert!(
        !out_a.contains("[logger]") && !out_a.contains("[dashboard]"),
        "{out_a}"
    );
    assert!(
        out_a.contains(&format!("[nats] disconnected: {sent} exported")),
        "{out_a}"
    );

    // B sees A's events: in its logger, its dashboard and its API.
    let v = eventually("A's events in B's dashboard", || {
        let v = get(&b, "/api/summary").json();
        let t = &v["summary"]["totals"];
        let seen = t["requests"].as_u64()? + t["db_queries"].as_u64()? + t["errors"].as_u64()?;
        (seen == sent as u64).then_some(v)
    });
    assert_eq!(v["ingested"], 0, "{v}");
    // Events posted to B: B's consumers get them once, although B's own
    // exports come back to it from the server.
    const POSTED: usize = 5;
    for i in 0..POSTED {
        let body =
            format!(r#"{{"type":"request","path":"/posted/{i}","latency_ms":1,"status":200}}"#);
        assert_eq!(post(&b, "/api/events", &body).status, 202);
    }
    let requests_before = v["summary"]["totals"]["requests"].as_u64().unwrap();
    eventually("the posted events in B's dashboard", || {
        let v = get(&b, "/api/summary").json();
        let r = v["summary"]["totals"]["requests"].as_u64()?;
        (r == requests_before + POSTED as u64).then_some(())
    });
    // Give an echo time to arrive: if B counted its own events again, the
    // total would move past this.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let v = get(&b, "/api/summary").json();
    assert_eq!(
        v["summary"]["totals"]["requests"].as_u64().unwrap(),
        requests_before + POSTED as u64,
        "B counted its own events twice: {v}"
    );
    let sent = sent + POSTED;
    let logged = eventually("A's events in B's logger", || {
        let n = b
            .stdout
            .lines()
            .iter()
            .filter(|l| l.starts_with("[logger] "))
            .count();
        (n >= sent).then_some(n)
    });
    b.interrupt();
    assert!(b.wait().success(), "{}", b.stderr.text());
    let out_b = b.stdout.text();
    assert!(
        logged > 0 && logged <= sent,
        "{logged} logged of {sent}\n{out_b}"
    );
    assert_eq!(
        out_b.lines().filter(|l| l.starts_with("[logger] ")).count(),
        sent,
        "{out_b}"
    );
    assert!(out_b.contains("[logger] Request { path: \"/"), "{out_b}");
    assert!(out_b.contains("[dashboard] === 1s summary ==="), "{out_b}");
    assert!(
        out_b.contains(&format!(
            "[nats] disconnected: {POSTED} exported, {} imported",
            sent - POSTED
        )),
        "{out_b}"
    );
}

#[test]
fn a_bad_nats_server_is_a_clear_error() {
    let out = std::process::Command::new(bin())
        .args([
            "monitor",
            "--no-data-dir",
            "--no-web",
            "--modules",
            "publishers",
            "--nats",
            &dead_nats(),
            "--duration",
            "5",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect the monitor to NATS at nats://127.0.0.1:"),
        "{err}"
    );
}

/// A NATS URL on a port nothing listens on.
fn dead_nats() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("nats://127.0.0.1:{port}")
}

/// Two monitors that both publish and watch (the default modules, each with
/// its own data directory, as on two hosts) each import every event the
/// other exported: each has a JetStream consumer of its own. (They shared
/// one, named after the modules only, and each got about half.)
#[test]
fn two_monitors_that_publish_and_watch_each_get_all_of_the_others_events() {
    let server = NatsServer::start().expect("start nats-server");
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    let mut a = Monitor::start(&[
        "--nats",
        &url,
        "--no-web",
        "--interval-ms",
        "20",
        "--data-dir",
        da.to_str().unwrap(),
        "--duration",
        "8",
    ]);
    a.stdout.wait_for("A connected both ways", |l| {
        l.starts_with("[nats] exporting and importing metrics.>")
    });
    let mut b = Monitor::start(&[
        "--nats",
        &url,
        "--no-web",
        "--interval-ms",
        "20",
        "--data-dir",
        db.to_str().unwrap(),
        "--duration",
        "3",
    ]);
    assert!(b.wait().success(), "{}", b.stderr.text());
    let counts = |line: &str| -> Vec<u64> {
        line.split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect()
    };
    let lb = b.stdout.wait_for("B's NATS summary", |l| {
        l.starts_with("[nats] disconnected:")
    });
    let b_exported = counts(&lb)[0];
    assert!(b_exported > 50, "{lb}");
    assert!(a.wait().success(), "{}", a.stderr.text());
    let la = a.stdout.wait_for("A's NATS summary", |l| {
        l.starts_with("[nats] disconnected:")
    });
    let a_imported = counts(&la)[1];
    assert_eq!(a_imported, b_exported, "A: {la}\nB: {lb}");
}
