//! A real `nats-server` for tests and benchmarks, managed by a helper.
//!
//! [`NatsServer::start`] spawns `nats-server` on a free loopback port with its
//! own JetStream store directory, waits until it accepts connections and
//! returns; [`url`](NatsServer::url) gives the address. It can be killed
//! (SIGKILL) and restarted on the same port and store, and it is killed and its
//! directory removed on `Drop`.
//!
//! [`make_test_certs`] writes a private CA, a server certificate it signed
//! for `127.0.0.1`, and an unrelated CA, for TLS tests.
//!
//! The binary is `$NATS_SERVER_BIN`, else `nats-server` on `PATH`, else
//! `/usr/sbin/nats-server`. When none exists, `start` returns an error that
//! says so: tests fail loudly rather than pass without a server.
//!
//! Behind the `test-util` feature, never compiled by default: tests get it
//! through a dev-dependency on this crate with the feature.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `nats-server` owned by the caller.
#[derive(Debug)]
pub struct NatsServer {
    bin: PathBuf,
    port: u16,
    dir: PathBuf,
    extra: String,
    child: Option<Child>,
}

/// Finds the `nats-server` binary.
pub fn nats_server_bin() -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let c = d.join("nats-server");
            if c.is_file() {
                return Ok(c);
            }
        }
    }
    let c = Path::new("/usr/sbin/nats-server");
    if c.is_file() {
        return Ok(c.to_path_buf());
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "nats-server not found (set NATS_SERVER_BIN or `apt-get install nats-server`)",
    ))
}

/// A free port for a new server. Ports come from a range below the kernel's
/// ephemeral range, starting at a point derived from the process id, so a
/// port freed by a server this process killed (and will restart) is not
/// handed to another test's server, nor taken by an outgoing connection.
fn free_port() -> io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 12_000 + (std::process::id() % 1_000) * 16;
    for _ in 0..2_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (base + n) % 20_000 + 12_000;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return Ok(port as u16);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl NatsServer {
    /// Starts a server with JetStream on a free port.
    pub fn start() -> io::Result<Self> {
        Self::with_config("")
    }

    /// Starts a server with extra configuration appended to its config file
    /// (e.g. `authorization { user: a, password: b }` or a `tls { .. }` block).
    pub fn with_config(extra: &str) -> io::Result<Self> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("busline-nats-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut s = NatsServer {
            bin: nats_server_bin()?,
            port: free_port()?,
            dir,
            extra: extra.to_string(),
            child: None,
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let conf = self.dir.join("server.conf");
        let store = self.dir.join("js");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{}\njetstream {{ store_dir: {:?} }}\n{}\n",
                self.port,
                store.display().to_string(),
                self.extra
            ),
        )?;
        let log_from = std::fs::metadata(self.dir.join("server.log"))
            .map(|m| m.len())
            .unwrap_or(0);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot run {}: {e}", self.bin.display()))
            })?;
        self.child = Some(child);
        self.wait_ready(log_from)
    }

    /// Waits until *this* server says it is ready (not merely until something
    /// accepts connections on the port) and accepts a connection.
    fn wait_ready(&mut self, log_from: u64) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let log_path = self.dir.join("server.log");
        loop {
            let log = std::fs::read(&log_path).unwrap_or_default();
            let fresh = String::from_utf8_lossy(log.get(log_from as usize..).unwrap_or_default())
                .into_owned();
            if let Some(c) = &mut self.child {
                if let Some(status) = c.try_wait()? {
                    self.child = None;
                    return Err(io::Error::other(format!(
                        "nats-server exited with {status}: {fresh}"
                    )));
                }
            }
            if fresh.contains("Server is ready")
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("nats-server did not become ready in 20 s: {fresh}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's directory (config, log, JetStream store).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the server with SIGKILL (no graceful shutdown) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same store (after [`kill`](Self::kill)).
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) -> io::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("the openssl command: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// Writes, with the `openssl` command, TLS material for tests into `dir`:
/// `ca.pem`/`ca.key` (a private CA), `server.pem`/`server.key` (signed by
/// it for `127.0.0.1` and `localhost`), and `other.pem`/`other.key` (a CA
/// that signed nothing here). Valid for two days.
pub fn make_test_certs(dir: &Path) -> io::Result<()> {
    for ca in ["ca", "other"] {
        let (key, pem, subj) = (
            format!("{ca}.key"),
            format!("{ca}.pem"),
            format!("/CN={ca}"),
        );
        openssl(
            dir,
            &[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &pem,
                "-days", "2", "-subj", &subj,
            ],
        )?;
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    )?;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    )
}
