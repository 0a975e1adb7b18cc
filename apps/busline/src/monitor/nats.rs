//! The monitor across processes: its bus over NATS (`--nats URL`).
//!
//! Each process runs the modules `--modules` names, and one
//! [`busline_nats::NatsTransport`] joins its bus to the others':
//!
//! | the process runs | `metrics.>` is | connected |
//! | --- | --- | --- |
//! | publishers (`web-sim`, `db-sim`), `web` and/or `ingest`, no consumer | exported | before any module starts |
//! | consumers (`dashboard`, `logger`, `alerter`) only | imported | once the consumers are subscribed |
//! | consumers and something that publishes (the default `all`) | exported and imported | once the consumers are subscribed, before the publishers start |
//!
//! ```text
//! busline monitor --nats nats://127.0.0.1:4222 --modules publishers --no-web
//! busline monitor --nats nats://127.0.0.1:4222 --modules dashboard,logger,alerter,web
//! ```
//!
//! An edge process next to the services ingests (StatsD) and exports, and
//! another watches:
//!
//! ```text
//! busline monitor --nats nats://127.0.0.1:4222 --modules ingest --no-web --no-sim
//! busline monitor --nats nats://127.0.0.1:4222 --modules dashboard,logger,alerter,web
//! ```
//!
//! ## JetStream, at-least-once
//!
//! By default the metrics go through JetStream (stream `BUSLINE_METRICS`,
//! subjects `metrics.>`, file storage, kept for `--log-retention-secs`): a
//! publisher's event counts as handed over once the server acknowledged it,
//! and an importing process reads through a durable consumer named after its
//! host, its data directory (a short hash) and its modules
//! (`monitor-1a2b3c4d-alerter-dashboard-logger-web`), acknowledging an event
//! only after its lossless subscribers (the logger, the alerter) have it. So
//! a watching process that restarts (same host, data directory and modules)
//! goes on where it stopped, and events published while no watcher ran are
//! not lost; every other watching process has a consumer of its own and gets
//! every event. (Two processes on one host without a data directory and with
//! the same modules would share one consumer, splitting the stream.) A new watcher starts with everything the stream still holds;
//! events count at their own timestamps (see [`alerter`](super::alerter)),
//! so old ones do not raise alerts. At-least-once: after a crash an event
//! may be seen twice. `--nats-core` uses core NATS instead: at-most-once,
//! nothing stored, only what arrives while connected.
//!
//! ## Both directions
//!
//! A process that publishes and consumes (its simulators, or events posted
//! to its `POST /api/events`) exports its own events and imports everyone's.
//! Its own come back from the server too; the transport recognises them by
//! their ids ([`busline::Bus::node`]) and skips them (`import_own`), as its
//! consumers had them locally already. So every consumer sees every
//! process's events once, its own included.
//!
//! ## Credentials
//!
//! `--nats-creds`, `--nats-token`, `--nats-user`/`--nats-password`,
//! `--nats-nkey` and `--nats-ca` map to busline-nats' [`Auth`](busline_nats::Auth)
//! and [`Tls`]. A wrong one fails at startup, naming the
//! server and the cause.

use std::sync::Arc;

use anyhow::Context as _;
use busline::{BoxError, Bus, Context, Module};
use busline_nats::{JetStreamConfig, NatsConfig, NatsTransport, Tls};
use parking_lot::Mutex;

use super::config::{Modules, NatsSettings};
use super::metric::Metric;

/// The JetStream stream holding the metrics.
pub const STREAM: &str = "BUSLINE_METRICS";

/// What a process does with `metrics.>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sends its events to the others.
    Export,
    /// Gets the others' events.
    Import,
    /// Sends its own events and gets everyone else's.
    Both,
}

impl Direction {
    /// The direction of a process running `modules`.
    pub fn of(modules: &Modules) -> Direction {
        match (modules.publishes(), modules.consumes()) {
            (_, false) => Direction::Export,
            (false, true) => Direction::Import,
            (true, true) => Direction::Both,
        }
    }

    /// What the process does, for its start line.
    pub fn describe(self) -> &'static str {
        match self {
            Direction::Export => "exporting metrics.> to",
            Direction::Import => "importing metrics.> from",
            Direction::Both => "exporting and importing metrics.> with",
        }
    }
}

/// The name of this process's durable JetStream consumer: its host, its
/// data directory (as a short hash) and its modules. A restarted process
/// (same host, data directory and modules) resumes where it stopped; any
/// other watching process has a consumer of its own and gets every event.
pub fn consumer_name(modules: &Modules, data_dir: Option<&std::path::Path>) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default();
    let dir = data_dir.map_or_else(
        || "(no data directory)".to_owned(),
        |d| {
            std::fs::canonicalize(d)
                .unwrap_or_else(|_| d.to_path_buf())
                .display()
                .to_string()
        },
    );
    // FNV-1a: the same name on every run and Rust version.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host.trim().bytes().chain([0]).chain(dir.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("monitor-{:08x}-{}", h as u32, modules.consumer_key())
}

/// The transport's configuration for this process.
pub fn config(
    nats: &NatsSettings,
    modules: &Modules,
    retention: std::time::Duration,
    data_dir: Option<&std::path::Path>,
) -> NatsConfig<Metric> {
    let direction = Direction::of(modules);
    let mut cfg = NatsConfig::new(nats.url.clone())
        .auth(nats.auth.clone())
        .name(format!("busline-monitor-{}", std::process::id()));
    if let Some(ca) = &nats.ca_file {
        cfg = cfg.tls(Tls {
            required: true,
            ca_file: Some(ca.clone()),
            client_cert: None,
        });
    }
    cfg = match direction {
        Direction::Export => cfg.export("metrics.>"),
        Direction::Import => cfg.import("metrics.>"),
        Direction::Both => cfg.export("metrics.>").import("metrics.>"),
    };
    if nats.core {
        cfg.core()
    } else {
        cfg.jetstream(JetStreamConfig {
            stream: STREAM.into(),
            subjects: vec!["metrics.>".into()],
            max_age: retention,
            durable: consumer_name(modules, data_dir),
            ..Default::default()
        })
    }
}

/// Connects `bus` as `cfg` says, with an error naming the server.
pub async fn connect(
    bus: &Bus<Metric>,
    cfg: NatsConfig<Metric>,
    url: &str,
) -> anyhow::Result<NatsTransport<Metric>> {
    NatsTransport::connect(bus, cfg)
        .await
        .with_context(|| format!("cannot connect the monitor to NATS at {url}"))
}

/// The module holding the transport: it connects (importing processes) or
/// takes a connected one (exporting processes), and on stop hands over what
/// is queued and disconnects. Added after the consumers and before the
/// publishers, so it stops after the publishers and before the consumers.
#[derive(Clone)]
pub struct NatsLink {
    pending: Arc<Mutex<Option<NatsConfig<Metric>>>>,
    transport: Arc<Mutex<Option<NatsTransport<Metric>>>>,
    url: String,
    direction: Direction,
}

impl NatsLink {
    /// A link that connects when the module starts.
    pub fn connect_on_start(cfg: NatsConfig<Metric>, url: &str, direction: Direction) -> Self {
        NatsLink {
            pending: Arc::new(Mutex::new(Some(cfg))),
            transport: Arc::new(Mutex::new(None)),
            url: url.to_owned(),
            direction,
        }
    }

    /// A link around a connected transport.
    pub fn connected(t: NatsTransport<Metric>, url: &str) -> Self {
        NatsLink {
            pending: Arc::new(Mutex::new(None)),
            transport: Arc::new(Mutex::new(Some(t))),
            url: url.to_owned(),
            direction: Direction::Export,
        }
    }
}

impl Module<Metric> for NatsLink {
    fn name(&self) -> &str {
        "nats"
    }

    async fn run(&mut self, ctx: Context<Metric>) -> Result<(), BoxError> {
        let cfg = self.pending.lock().take();
        if let Some(cfg) = cfg {
            let t = connect(ctx.bus(), cfg, &self.url).await?;
            super::say(&format!(
                "[nats] {} {}",
                self.direction.describe(),
                self.url
            ));
            *self.transport.lock() = Some(t);
        }
        ctx.shutdown_requested().await;
        let t = self.transport.lock().take();
        if let Some(t) = t {
            // Hands over what is queued (JetStream: until acknowledged), up
            // to the transport's shutdown timeout.
            match t.shutdown().await {
                Ok(stats) => super::say(&format!(
                    "[nats] disconnected: {} exported, {} imported, {} own skipped, {} abandoned",
                    stats.exported, stats.imported, stats.import_own, stats.abandoned
                )),
                // Core NATS, at-most-once: said, not a failure of the run.
                Err(e @ busline_nats::NatsError::Reconnected { .. }) => {
                    super::say(&format!("[nats] disconnected: {e}"))
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("disconnecting from NATS at {}", self.url))
                        .into())
                }
            }
        }
        Ok(())
    }
}
