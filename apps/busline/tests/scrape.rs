//! Prometheus scrapes by the real monitor: a `prometheus-client` endpoint in
//! Python (counter, gauge, histogram) scraped, its counter turned into
//! increments across a restart of the exporter, the target shown down while
//! it is gone; a target that hangs and one that serves garbage.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};

use common::{eventually, get, interop_python, logged, Monitor};
use serde_json::Value;

/// `tests/interop/prom_exporter.py`, driven through its stdin.
struct Exporter {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<std::process::ChildStdout>,
    port: u16,
}

impl Exporter {
    fn start(port: u16) -> Exporter {
        let mut child = Command::new(interop_python())
            .arg(format!(
                "{}/tests/interop/prom_exporter.py",
                env!("CARGO_MANIFEST_DIR")
            ))
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run the Prometheus exporter");
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port = line
            .strip_prefix("port ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the exporter did not start: {line:?}"));
        Exporter {
            child,
            stdin,
            out,
            port,
        }
    }

    fn say(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok", "{cmd}");
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn values(log: &[(String, Value)], name: &str, kind: &str) -> Vec<f64> {
    log.iter()
        .filter(|(src, s)| src == "worker" && s["name"] == name && s["kind"] == kind)
        .map(|(_, s)| s["value"].as_f64().unwrap())
        .collect()
}

fn target(m: &Monitor, url: &str) -> Option<Value> {
    let s = get(m, "/api/summary").json();
    s["ingest"]["targets"]
        .as_array()?
        .iter()
        .find(|t| t["url"] == url)
        .cloned()
}

/// Waits until the target is `up` with a scrape after `after_ms`.
fn wait_target(m: &Monitor, url: &str, up: bool, after_ms: u64) -> Value {
    eventually(&format!("{url} up={up}"), || {
        target(m, url).filter(|t| t["up"] == up && t["last_scrape_ms"].as_u64() > Some(after_ms))
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_prometheus_client_endpoint_is_scraped_with_counter_resets_handled() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("metrics.jsonl");
    let mut exp = Exporter::start(0);
    let port = exp.port;
    let url = format!("http://127.0.0.1:{port}/metrics");
    let m = Monitor::start(&[
        "--no-sim",
        "--web",
        "127.0.0.1:0",
        "--scrape",
        &format!("worker={url}"),
        "--scrape-interval",
        "0.2",
        "--log-file",
        log.to_str().unwrap(),
    ]);
    // The first scrape is the counter's baseline (0).
    wait_target(&m, &url, true, 0);
    exp.say("inc 5");
    exp.say("gauge 7");
    for v in ["0.05", "0.3", "0.3", "2"] {
        exp.say(&format!("obs {v}"));
    }
    let t = now_ms();
    wait_target(&m, &url, true, t);
    let mut tries = 0;
    let l = eventually("the increments in the log", || {
        let l = logged(&log);
        tries += 1;
        if tries % 50 == 0 {
            eprintln!(
                "counter {:?} gauge {:?} target {:?}",
                values(&l, "jobs_done_total", "counter"),
                values(&l, "queue_depth", "gauge"),
                target(&m, &url)
            );
        }
        (values(&l, "jobs_done_total", "counter").iter().sum::<f64>() == 5.0
            && values(&l, "queue_depth", "gauge").contains(&7.0))
        .then_some(l)
    });
    // The histogram's observations, per bucket.
    let mut counts = vec![0u64; 4];
    let mut sum = 0.0;
    for (_, s) in l.iter().filter(|(_, s)| s["name"] == "task_seconds") {
        assert_eq!(s["bounds"], serde_json::json!([0.1, 0.5, 1.0]));
        for (i, c) in s["counts"].as_array().unwrap().iter().enumerate() {
            counts[i] += c.as_u64().unwrap();
        }
        sum += s["sum"].as_f64().unwrap();
    }
    assert_eq!(counts, vec![1, 2, 0, 1]);
    assert!((sum - 2.65).abs() < 1e-9, "{sum}");

    // The exporter goes away: the target is down, `up` is 0.
    exp.kill();
    let down = wait_target(&m, &url, false, now_ms());
    let err = down["last_error"].as_str().unwrap();
    assert!(err.contains("onnect"), "{err}");
    // Back on the same port, its counter from 0: a reset, never negative.
    let mut exp = Exporter::start(port);
    exp.say("inc 2");
    let t = now_ms();
    wait_target(&m, &url, true, t);
    let l = eventually("the increments after the restart", || {
        let l = logged(&log);
        (values(&l, "jobs_done_total", "counter").iter().sum::<f64>() == 7.0).then_some(l)
    });
    let incs = values(&l, "jobs_done_total", "counter");
    assert!(incs.iter().all(|v| *v >= 0.0), "{incs:?}");
    let ups: Vec<&Value> = l
        .iter()
        .filter(|(_, s)| s["name"] == "up")
        .map(|(_, s)| s)
        .collect();
    assert!(ups
        .iter()
        .all(|s| s["labels"]["instance"] == url.as_str() && s["labels"]["job"] == "worker"));
    let up_values: Vec<f64> = ups.iter().map(|s| s["value"].as_f64().unwrap()).collect();
    let first_down = up_values
        .iter()
        .position(|v| *v == 0.0)
        .expect("an up of 0");
    assert!(
        up_values[first_down..].contains(&1.0),
        "up again: {up_values:?}"
    );
    let scrape = get(&m, "/api/summary").json()["ingest"]["scrape"].clone();
    assert!(
        scrape["malformed_by_reason"]["connection failed"].as_u64() >= Some(1),
        "{scrape}"
    );
    exp.say("quit");
}

#[test]
fn a_target_that_hangs_or_serves_garbage_is_down_and_the_monitor_goes_on() {
    // Accepts connections and never answers.
    let hang = TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_url = format!("http://{}/metrics", hang.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hang.incoming().flatten() {
            held.push(s);
        }
    });
    // Answers 200 with a page that is not the exposition format.
    let junk = TcpListener::bind("127.0.0.1:0").unwrap();
    let junk_url = format!("http://{}/metrics", junk.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut s in junk.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = "<html><body>not metrics</body></html>\n";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let m = Monitor::start(&[
        "--no-sim",
        "--web",
        "127.0.0.1:0",
        "--scrape",
        &hang_url,
        "--scrape",
        &junk_url,
        "--scrape-interval",
        "0.5",
    ]);
    let hung = wait_target(&m, &hang_url, false, 0);
    let err = hung["last_error"].as_str().unwrap();
    assert!(err.contains("timeout"), "{err}");
    let bad = wait_target(&m, &junk_url, false, 0);
    let err = bad["last_error"].as_str().unwrap();
    assert!(
        err.contains("line 1") && err.contains("metric name"),
        "{err}"
    );
    // It goes on: more scrapes fail the same way, and it still answers.
    let t = now_ms();
    let again = wait_target(&m, &hang_url, false, t);
    assert!(again["failures"].as_u64() >= Some(2), "{again}");
    let scrape = get(&m, "/api/summary").json()["ingest"]["scrape"].clone();
    assert!(
        scrape["malformed_by_reason"]["timeout"].as_u64() >= Some(1),
        "{scrape}"
    );
    assert!(
        scrape["malformed_by_reason"]["unparsable exposition"].as_u64() >= Some(1),
        "{scrape}"
    );
    assert_eq!(scrape["accepted"], 0);
}
