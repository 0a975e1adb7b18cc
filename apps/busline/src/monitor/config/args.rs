//! The command line of `busline monitor`.

use std::path::PathBuf;

use clap::Args;

/// The default address of the web dashboard.
pub const DEFAULT_WEB: &str = "127.0.0.1:7878";

/// Options of `busline monitor`.
#[derive(Debug, Clone, Default, Args)]
pub struct MonitorArgs {
    /// A TOML file setting any of these options (keys as the option names,
    /// e.g. `interval-ms = 50`) and alert rules (`[[alert]]` tables);
    /// options given here override it.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// How often each simulated service emits a metric [default: 100].
    #[arg(long, value_name = "MS")]
    pub interval_ms: Option<u64>,
    /// Probability (0-1) that a simulated metric is an error [default: 0.05].
    #[arg(long, value_name = "P")]
    pub error_rate: Option<f64>,
    /// Alert when errors in the last minute exceed this (the default alert
    /// rule) [default: 10].
    #[arg(long, value_name = "N")]
    pub alert_threshold: Option<u64>,
    /// Also POST alerts as JSON to this URL (with retry and a circuit breaker).
    #[arg(long, value_name = "URL")]
    pub alert_webhook: Option<String>,
    /// Log metrics as JSON Lines to this file instead of stdout.
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Address of the web dashboard [default: 127.0.0.1:7878].
    #[arg(long, value_name = "ADDR")]
    pub web: Option<String>,
    /// No web dashboard (and no HTTP API).
    #[arg(long)]
    pub no_web: bool,
    /// Require this bearer token on the web API (needed to bind beyond loopback).
    #[arg(long, env = "BUSLINE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Also accept this name in the `Host` header (repeatable); loopback names
    /// and the bound address are always accepted.
    #[arg(long, value_name = "NAME")]
    pub allow_host: Vec<String>,
    /// Largest request body the API accepts, in bytes [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub max_body: Option<usize>,
    /// Don't run the simulated web and DB services: only real services
    /// (POST /api/events, `busline publish`) feed the monitor.
    #[arg(long)]
    pub no_sim: bool,
    /// Stop cleanly after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Keep every metric in the durable event log in this directory, and warm
    /// the dashboard and alerter up from its last minute after a restart
    /// [default: ./busline-data]. An empty value means no log.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keep no event log (nothing survives a restart).
    #[arg(long, conflicts_with = "data_dir")]
    pub no_data_dir: bool,
    /// Delete log segments whose newest event is older than this [default: 3600].
    #[arg(long, value_name = "SECS")]
    pub log_retention_secs: Option<u64>,
    /// Delete the oldest log segments while the log is larger than this [default: 256].
    #[arg(long, value_name = "MB")]
    pub log_retention_mb: Option<u64>,
    /// The modules this process runs, comma-separated: `publishers` (=
    /// `web-sim,db-sim`), `web-sim`, `db-sim`, `dashboard`, `logger`,
    /// `alerter`, `web`, or `all` [default: all].
    #[arg(long, value_name = "LIST")]
    pub modules: Option<String>,
    /// Connect the monitor's bus to this NATS server (`nats://host:port`,
    /// several comma-separated): a process running publishers exports
    /// `metrics.>`, a process running dashboard/logger/alerter imports it.
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// NATS credentials file (user JWT + nkey seed).
    #[arg(long, value_name = "PATH")]
    pub nats_creds: Option<PathBuf>,
    /// NATS token.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "BUSLINE_NATS_TOKEN",
        hide_env_values = true
    )]
    pub nats_token: Option<String>,
    /// NATS user name (with --nats-password).
    #[arg(long, value_name = "USER")]
    pub nats_user: Option<String>,
    /// NATS password (with --nats-user).
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "BUSLINE_NATS_PASSWORD",
        hide_env_values = true
    )]
    pub nats_password: Option<String>,
    /// NATS nkey seed (`SU…`).
    #[arg(
        long,
        value_name = "SEED",
        env = "BUSLINE_NATS_NKEY",
        hide_env_values = true
    )]
    pub nats_nkey: Option<String>,
    /// PEM file of the CA that signs the NATS server's certificate (requires TLS).
    #[arg(long, value_name = "PATH")]
    pub nats_ca: Option<PathBuf>,
    /// Core NATS (at-most-once, nothing stored) instead of JetStream.
    #[arg(long)]
    pub nats_core: bool,
    /// Keep at most this many series (source, name, labels); samples of
    /// new series beyond it are counted as overflow and shown [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_series: Option<usize>,
    /// A full-screen live view (series, sparklines, alerts, ingest) instead
    /// of the plain lines; `q` quits. Needs a terminal on stdout.
    #[arg(long)]
    pub tui: bool,
    /// Also take OTLP/HTTP metrics (`POST /v1/metrics`) on a listener of
    /// their own at this address (conventionally 127.0.0.1:4318); the web
    /// address serves the route too.
    #[arg(long, value_name = "ADDR")]
    pub otlp: Option<String>,
    /// Scrape this Prometheus endpoint (repeatable): `URL`, or `JOB=URL` to
    /// name the source (else `host:port` of the URL).
    #[arg(long, value_name = "[JOB=]URL")]
    pub scrape: Vec<String>,
    /// Seconds between scrapes of each target [default: 5].
    #[arg(long, value_name = "SECS")]
    pub scrape_interval: Option<f64>,
    /// Listen for StatsD (UDP) on this address [default: 127.0.0.1:8125; if
    /// that is taken, a warning and no StatsD].
    #[arg(long, value_name = "ADDR")]
    pub statsd: Option<String>,
    /// No StatsD listener.
    #[arg(long, conflicts_with = "statsd")]
    pub no_statsd: bool,
}
