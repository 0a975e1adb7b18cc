//! Helpers for tests that run the real `busline` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Generous: the machine is shared and noisy. Only an upper bound on waiting.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_busline")
}

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    done: bool,
}

/// Output lines of a child process, collected by a thread.
#[derive(Clone, Default)]
pub struct Output(Arc<(Mutex<Lines>, Condvar)>);

impl Output {
    fn collect(&self, r: impl Read + Send + 'static) {
        let me = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                let (m, cv) = &*me.0;
                m.lock().unwrap().lines.push(line);
                cv.notify_all();
            }
            let (m, cv) = &*me.0;
            m.lock().unwrap().done = true;
            cv.notify_all();
        });
    }

    pub fn lines(&self) -> Vec<String> {
        self.0 .0.lock().unwrap().lines.clone()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// Waits for a line matching `pred`; panics with the output so far if none comes.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let (m, cv) = &*self.0;
        let deadline = Instant::now() + PATIENCE;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(l) = g.lines.iter().find(|l| pred(l)) {
                return l.clone();
            }
            let now = Instant::now();
            if g.done || now >= deadline {
                panic!(
                    "no line {what} (output {}):\n{}",
                    if g.done { "ended" } else { "timed out" },
                    g.lines.join("\n")
                );
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// Waits until the stream ends.
    pub fn wait_done(&self) {
        let (m, cv) = &*self.0;
        let deadline = Instant::now() + PATIENCE;
        let mut g = m.lock().unwrap();
        while !g.done && Instant::now() < deadline {
            g = cv.wait_timeout(g, Duration::from_millis(200)).unwrap().0;
        }
    }
}

/// A running `busline monitor`, killed on drop.
pub struct Monitor {
    pub child: Child,
    pub stdout: Output,
    pub stderr: Output,
    /// `http://127.0.0.1:PORT` when it serves the web dashboard.
    pub base: Option<String>,
}

impl Monitor {
    /// Starts `busline monitor <args>`; if the args serve the web dashboard,
    /// waits for its address (use `--web 127.0.0.1:0` for a free port).
    /// Without `--data-dir` in the args it runs with `--no-data-dir` (no
    /// event log in the working directory, no lock shared between tests).
    pub fn start(args: &[&str]) -> Monitor {
        let no_log: &[&str] = if args.contains(&"--data-dir") {
            &[]
        } else {
            &["--no-data-dir"]
        };
        let mut child = Command::new(bin())
            .arg("monitor")
            .args(no_log)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the busline binary");
        let stdout = Output::default();
        let stderr = Output::default();
        stdout.collect(child.stdout.take().unwrap());
        stderr.collect(child.stderr.take().unwrap());
        let mut m = Monitor {
            child,
            stdout,
            stderr,
            base: None,
        };
        if !args.contains(&"--no-web") {
            let line = m.stdout.wait_for("[web] dashboard on", |l| {
                l.starts_with("[web] dashboard on ")
            });
            let url = line.trim_start_matches("[web] dashboard on ");
            let base = url.split('/').take(3).collect::<Vec<_>>().join("/");
            m.base = Some(base);
        }
        m
    }

    pub fn base(&self) -> &str {
        self.base.as_deref().expect("the monitor serves the web")
    }

    /// `host:port` of the web server.
    pub fn addr(&self) -> String {
        self.base().trim_start_matches("http://").to_owned()
    }

    /// Waits for the process to exit on its own (`--duration`).
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.stdout.wait_done();
                self.stderr.wait_done();
                return s;
            }
            if Instant::now() > deadline {
                panic!(
                    "the monitor did not exit; output:\n{}\nstderr:\n{}",
                    self.stdout.text(),
                    self.stderr.text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGINT (as Ctrl-C does).
    pub fn interrupt(&self) {
        let ok = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -INT failed");
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.1 request over a socket, so the test controls every header
/// (including `Host`). `headers` are extra lines like `"Authorization: Bearer x"`.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    host: &str,
    headers: &[&str],
    body: &[u8],
) -> Response {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body; ignore a reset.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP header in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(nl) = rest[i..].windows(2).position(|w| w == b"\r\n") {
            let size_text = String::from_utf8_lossy(&rest[i..i + nl]).into_owned();
            let size =
                usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap_or(0);
            i += nl + 2;
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[i..(i + size).min(rest.len())]);
            i += size + 2;
            if i >= rest.len() {
                break;
            }
        }
        rest = out;
    }
    Response {
        status,
        headers,
        body: String::from_utf8_lossy(&rest).into_owned(),
    }
}

/// GET from the monitor with a loopback Host header.
pub fn get(m: &Monitor, path: &str) -> Response {
    http(&m.addr(), "GET", path, &m.addr(), &[], b"")
}

/// POST JSON to the monitor with a loopback Host header.
pub fn post(m: &Monitor, path: &str, body: &str) -> Response {
    http(&m.addr(), "POST", path, &m.addr(), &[], body.as_bytes())
}

/// Polls `f` until it returns `Some`, for up to [`PATIENCE`].
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The "N events published" of the monitor's last line.
pub fn published(out: &str) -> usize {
    let last = out.lines().last().unwrap_or_default();
    assert!(last.starts_with("[monitor] stopped after"), "{out}");
    last.split(": ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in the final line {last:?}"))
}

/// An HTTP endpoint for `--alert-webhook` on a free local port.
pub struct Webhook {
    /// Its URL.
    pub url: String,
    /// The bodies of the requests it answered with a 2xx status.
    pub delivered: Arc<Mutex<Vec<String>>>,
}

/// Starts a [`Webhook`] that answers its request number `n` (from 0) with
/// the whole HTTP response `answer(n)`.
pub fn webhook(answer: impl Fn(usize) -> &'static [u8] + Send + 'static) -> Webhook {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/busline", listener.local_addr().unwrap());
    let delivered: Arc<Mutex<Vec<String>>> = Arc::default();
    let d = delivered.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut s) = stream else { break };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let (mut len, mut line) = (0, String::new());
            while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                line.clear();
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let resp = answer(n);
            if resp.starts_with(b"HTTP/1.1 2") {
                d.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
            }
            let _ = s.write_all(resp);
        }
    });
    Webhook { url, delivered }
}

/// Asserts that a command exited successfully, showing its stderr if not.
pub fn assert_succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The interop venv's Python (`scripts/install-deps` makes it, `scripts/test`
/// sets the variable); fails, never skips, without it.
pub fn interop_python() -> String {
    match std::env::var("BUSLINE_INTEROP_PYTHON") {
        Ok(p) if std::path::Path::new(&p).exists() => p,
        other => panic!(
            "BUSLINE_INTEROP_PYTHON must name the interop venv's python (scripts/install-deps \
             makes it, scripts/test sets it); got {other:?}"
        ),
    }
}

/// The address a monitor started with `--statsd 127.0.0.1:0` listens on.
pub fn statsd_addr(m: &Monitor) -> String {
    let line = m.stdout.wait_for("[statsd] listening on", |l| {
        l.starts_with("[statsd] listening on ")
    });
    line["[statsd] listening on ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .to_owned()
}

/// Every sample in a `--log-file` (JSON Lines): (source, sample as JSON).
pub fn logged(path: &std::path::Path) -> Vec<(String, serde_json::Value)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let m = &v["metric"];
        if m["type"] == "samples" {
            for s in m["samples"].as_array().unwrap() {
                out.push((m["source"].as_str().unwrap().to_owned(), s.clone()));
            }
        }
    }
    out
}
