//! `busline monitor --tui` in a real terminal: tmux runs it, `capture-pane`
//! reads the screen, `send-keys` presses keys.
//!
//! Needs `tmux` (`apt-get install -y tmux`; scripts/install-deps installs
//! it); without it the test fails and says so.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// A tmux server of its own (`tmux -L <name>`), killed on drop (and its
/// socket file removed).
struct Tmux {
    socket: String,
    path: Option<String>,
}

impl Tmux {
    fn new(test: &str) -> Tmux {
        let socket = format!("busline-{test}-{}", std::process::id());
        Tmux { socket, path: None }
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run tmux: {e}; install it with `apt-get install -y tmux`")
            });
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p"]).stdout).into_owned()
    }

    /// Waits until the screen satisfies `pred`; returns it.
    fn until(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the screen never showed {what}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", keys]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Keeps the screen as `target/artifacts/tui.txt` (and `docs/tui.txt` with
/// `BUSLINE_UPDATE_DOCS=1`).
fn save(screen: &str) {
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("artifacts");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("tui.txt"), screen).unwrap();
    if std::env::var_os("BUSLINE_UPDATE_DOCS").is_some() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        std::fs::write(docs.join("tui.txt"), screen).unwrap();
    }
}

/// The table row of a series: its cells split at whitespace.
fn row<'a>(screen: &'a str, series: &str) -> Option<Vec<&'a str>> {
    let line = screen.lines().find(|l| l.contains(series))?;
    Some(
        line.trim_matches(|c| c == '│' || c == ' ')
            .split_whitespace()
            .collect(),
    )
}

/// Which of `a` and `b` comes first on the screen.
fn above(screen: &str, a: &str, b: &str) -> bool {
    match (screen.find(a), screen.find(b)) {
        (Some(x), Some(y)) => x < y,
        _ => panic!("{a} or {b} not on the screen:\n{screen}"),
    }
}

#[test]
fn the_terminal_view_shows_live_series_sorts_on_keys_and_quits_on_q() {
    let mut tmux = Tmux::new("tui");
    let cmd = format!(
        "{} monitor --tui --no-sim --no-data-dir --web 127.0.0.1:0 --duration 120; echo EXITED $?; stty -a; sleep 60",
        bin()
    );
    tmux.run(&["new-session", "-d", "-x", "160", "-y", "48", &cmd]);
    let path = tmux
        .run(&["display-message", "-p", "#{socket_path}"])
        .stdout;
    tmux.path = Some(String::from_utf8_lossy(&path).trim().to_owned());
    let screen = tmux.until("the header with the web address", |s| {
        s.contains("busline monitor · web http://")
    });
    let addr = screen
        .split("web http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .expect("the web address in the header")
        .to_owned();

    let mut events: Vec<serde_json::Value> = (0..30)
        .map(|_| json!({"type": "request", "path": "/zz-busy", "latency_ms": 10}))
        .collect();
    for _ in 0..2 {
        events.push(json!({"type": "request", "path": "/aa-quiet", "latency_ms": 250}));
    }
    for _ in 0..3 {
        events.push(json!({"type": "error", "source": "checkout", "message": "card declined"}));
    }
    let body = serde_json::Value::Array(events).to_string();
    let r = http(&addr, "POST", "/api/events", &addr, &[], body.as_bytes());
    assert_eq!(r.status, 202, "{r:?}");

    let busy = r#"request.latency_ms{path="/zz-busy",status="200"}"#;
    let quiet = r#"request.latency_ms{path="/aa-quiet",status="200"}"#;
    // Columns: source, series, kind, rate/s, rate/s 1m, count 1m, mean, p50, p99, max.
    let screen = tmux.until("the posted series with their counts", |s| {
        row(s, busy).is_some_and(|r| r[5] == "30")
            && row(s, quiet).is_some_and(|r| r[5] == "2")
            && s.contains("events via /api/events 35")
    });
    let b = row(&screen, busy).unwrap();
    assert_eq!(
        (b[0], b[2], b[6], b[8]),
        ("web", "observation", "10", "10"),
        "{screen}"
    );
    let q = row(&screen, quiet).unwrap();
    assert_eq!((q[6], q[8]), ("250", "250"), "{screen}");
    let e = row(&screen, "card decl").expect("the error series");
    assert_eq!(
        (e[0], e[1], e[2], e[5]),
        ("checkout", "error", "error", "3"),
        "{screen}"
    );
    assert!(screen.contains("sort: rate ↓"), "{screen}");
    assert!(above(&screen, busy, quiet), "busiest first:\n{screen}");
    // The built-in rule's row: its value, its expression (cut by the panel).
    assert!(
        screen.contains("error-rate 3 (count(error [1m]) > 1"),
        "{screen}"
    );
    assert!(screen.contains("api    recv"), "{screen}");

    // `n` sorts by name (source first): checkout, then /aa-quiet, then /zz-busy.
    tmux.keys("n");
    let screen = tmux.until("the table sorted by name", |s| s.contains("sort: name ↓"));
    assert!(above(&screen, quiet, busy), "by name:\n{screen}");
    assert!(above(&screen, "card decl", quiet), "by name:\n{screen}");
    // The selection is the first row; its sparkline is titled with it.
    assert!(screen.contains("┌checkout/error count/s"), "{screen}");
    // `j` moves the selection down: the sparkline follows.
    tmux.keys("j");
    tmux.until("the sparkline of the next row", |s| {
        s.contains(r#"┌web/request.latency_ms{path="/aa-quiet",status="200"} mean"#)
    });
    save(&screen);
    // `r` back to rate.
    tmux.keys("r");
    let screen = tmux.until("the table sorted by rate", |s| s.contains("sort: rate ↓"));
    assert!(above(&screen, busy, quiet), "{screen}");

    // `q` stops the monitor cleanly and gives the terminal back.
    tmux.keys("q");
    let screen = tmux.until("the monitor's exit and stty's modes", |s| {
        s.contains("EXITED") && s.contains("icanon")
    });
    assert!(screen.contains("EXITED 0"), "{screen}");
    // The terminal is out of raw mode: line editing and echo are back.
    assert!(
        screen.contains(" icanon") && !screen.contains("-icanon") && !screen.contains("-echo "),
        "raw mode left on:\n{screen}"
    );
    assert!(
        screen.contains("(q in the terminal view)"),
        "the final line says why it stopped:\n{screen}"
    );
    assert!(!screen.contains("Series"), "the view is gone:\n{screen}");
    // What the monitor printed meanwhile went to a file, named on exit.
    let out = screen
        .lines()
        .find_map(|l| l.strip_prefix("[monitor] output while the terminal view ran: "))
        .unwrap_or_else(|| panic!("no line naming the output file:\n{screen}"))
        .trim();
    let text = std::fs::read_to_string(out).unwrap_or_else(|e| panic!("{out}: {e}"));
    assert!(text.contains("[dashboard] === 1s summary ==="), "{text}");
    assert!(text.contains("[logger] Error"), "{text}");
    std::fs::remove_file(out).unwrap();
}
