//! `busline monitor --data-dir`: the event log survives a restart and warms
//! the dashboard and alerter up. The real binary, real files.

mod common;

use std::process::Command;

use common::*;

fn busline(args: &[&str]) -> std::process::Output {
    Command::new(bin()).args(args).output().unwrap()
}

#[test]
fn a_restarted_monitor_remembers_the_last_minute() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();

    // Run 1: every metric an error.
    let mut one = Monitor::start(&[
        "--no-web",
        "--data-dir",
        data,
        "--error-rate",
        "1",
        "--alert-threshold",
        "5",
        "--duration",
        "3",
    ]);
    assert!(one.wait().success(), "{}", one.stderr.text());
    let out = one.stdout.text();
    let errors = out
        .lines()
        .filter(|l| l.starts_with("[logger] Error {"))
        .count();
    let total = published(&out);
    assert!(errors > 5, "{out}");
    assert_eq!(errors, total, "error rate 1: every metric an error\n{out}");

    // The log holds every event of run 1, intact.
    let v = busline(&["log", "verify", data]);
    assert!(
        v.status.success(),
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    let r = busline(&["log", "read", data]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&r.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), total);
    for (i, rec) in records.iter().enumerate() {
        assert_eq!(rec["offset"], i as u64, "{rec}");
        let topic = rec["payload"]["topic"].as_str().unwrap();
        assert!(
            topic.starts_with("metrics.") && topic.ends_with(".error"),
            "{rec}"
        );
        assert_eq!(rec["payload"]["payload"]["type"], "error", "{rec}");
    }

    // Run 2 on the same log, no new errors: it starts with run 1's.
    let mut two = Monitor::start(&[
        "--web",
        "127.0.0.1:0",
        "--data-dir",
        data,
        "--error-rate",
        "0",
        "--alert-threshold",
        "5",
        "--duration",
        "4",
        "--log-file",
        "/dev/null",
    ]);
    assert!(
        two.stdout
            .wait_for("the event log line", |l| l
                .starts_with("[monitor] event log in"))
            .ends_with(&format!("({total} events kept)")),
        "{}",
        two.stdout.text()
    );

    // A second monitor on the same directory at the same time: a clear error.
    let three = busline(&["monitor", "--no-web", "--data-dir", data, "--duration", "1"]);
    assert!(!three.status.success());
    let err = String::from_utf8_lossy(&three.stderr);
    assert!(
        err.contains(&format!("cannot open the monitor's event log in {data}"))
            && err.contains("in use by another writer")
            && err.contains("another monitor"),
        "{err}"
    );

    let v = eventually("the warmed-up alerter and dashboard", || {
        let v = get(&two, "/api/summary").json();
        (v["summary"]["errors_last_min"] == total as u64).then_some(v)
    });
    assert_eq!(v["alert"]["rate"], total as u64, "{v}");
    assert_eq!(v["alert"]["firing"], true, "{v}");
    assert_eq!(v["summary"]["totals"]["errors"], total as u64, "{v}");
    assert!(two.wait().success(), "{}", two.stderr.text());
    let out2 = two.stdout.text();
    // The dashboard filled its history with run 1's seconds.
    let backfill = out2
        .lines()
        .find(|l| l.contains("earlier events from the event log"))
        .unwrap_or_else(|| panic!("no backfill line\n{out2}"));
    let backfilled: usize = backfill
        .trim_start_matches("[dashboard] ")
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{backfill}"));
    // Each of run 1's errors counted once: in a past second, or (the last
    // few, within a moment of the restart) in run 2's first second.
    let in_run_2: usize = out2
        .lines()
        .filter_map(|l| l.strip_prefix("  Errors: "))
        .map(|l| l.split(' ').next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert!(backfilled > 0, "{out2}");
    assert_eq!(backfilled + in_run_2, total, "{out2}");
    // It fired on run 1's errors (run 2 has none of its own), once.
    let alerts: Vec<&str> = out2.lines().filter(|l| l.starts_with("[ALERT]")).collect();
    assert_eq!(alerts.len(), 1, "{out2}");
    assert!(alerts[0].contains("threshold exceeded"), "{out2}");

    // And the log now holds both runs.
    let r = busline(&["log", "read", data]);
    let n = String::from_utf8_lossy(&r.stdout).lines().count();
    assert_eq!(n, total + published(&out2));
}

#[test]
fn a_corrupt_log_stops_the_monitor_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut one = Monitor::start(&[
        "--no-web",
        "--data-dir",
        data.to_str().unwrap(),
        "--duration",
        "1",
        "--log-file",
        "/dev/null",
    ]);
    assert!(one.wait().success(), "{}", one.stderr.text());
    assert!(published(&one.stdout.text()) > 4);

    // Flip a byte in the middle of the (only) segment: not a torn tail.
    let segment = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&segment, bytes).unwrap();

    let out = busline(&[
        "monitor",
        "--no-web",
        "--data-dir",
        data.to_str().unwrap(),
        "--duration",
        "1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot open the monitor's event log in {}",
            data.display()
        )) && err.contains("corrupt")
            && err.contains("busline log verify"),
        "{err}"
    );
    // Nothing ran.
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("[monitor] running"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
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
