//! `busline monitor`'s options, and the TOML file that can set them.
//!
//! Every option has a key of the same name in the file (`--interval-ms 50`
//! is `interval-ms = 50`). Options given on the command line override the
//! file; a key the monitor does not know is an error naming it.
//!
//! ```toml
//! interval-ms = 100
//! error-rate = 0.05
//! alert-threshold = 10
//! alert-webhook = "http://127.0.0.1:9000/hooks/busline"
//! log-file = "metrics.jsonl"
//! web = "127.0.0.1:7878"
//! data-dir = "/var/lib/busline"
//! log-retention-secs = 3600
//! log-retention-mb = 256
//! modules = "dashboard,logger,alerter,web"
//! nats = "nats://127.0.0.1:4222"
//! nats-creds = "/etc/busline/monitor.creds"
//! statsd = "127.0.0.1:8125"
//! otlp = "127.0.0.1:4318"
//! scrape = ["http://127.0.0.1:9100/metrics", "api=http://127.0.0.1:8000/metrics"]
//! scrape-interval = 5
//! max-series = 10000
//!
//! [[alert]]                 # alert rules, beside the default error-rate one
//! name = "slow-api"
//! metric = "http.server.duration"
//! function = "p99"
//! window = "1m"
//! threshold = 250
//! ```
//!
//! See [`rule`](super::rule) for the keys of an `[[alert]]` table.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde::Deserialize;

use super::rule::{parse_rules, Rule};

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

/// The file form of [`MonitorArgs`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    interval_ms: Option<u64>,
    error_rate: Option<f64>,
    alert_threshold: Option<u64>,
    alert_webhook: Option<String>,
    log_file: Option<PathBuf>,
    web: Option<String>,
    no_web: Option<bool>,
    token: Option<String>,
    #[serde(default)]
    allow_host: Vec<String>,
    max_body: Option<usize>,
    no_sim: Option<bool>,
    duration: Option<f64>,
    data_dir: Option<PathBuf>,
    no_data_dir: Option<bool>,
    log_retention_secs: Option<u64>,
    log_retention_mb: Option<u64>,
    modules: Option<String>,
    nats: Option<String>,
    nats_creds: Option<PathBuf>,
    nats_token: Option<String>,
    nats_user: Option<String>,
    nats_password: Option<String>,
    nats_nkey: Option<String>,
    nats_ca: Option<PathBuf>,
    nats_core: Option<bool>,
    #[serde(default)]
    alert: Vec<toml::Table>,
    max_series: Option<usize>,
    tui: Option<bool>,
    otlp: Option<String>,
    #[serde(default)]
    scrape: Vec<String>,
    scrape_interval: Option<f64>,
    statsd: Option<String>,
    no_statsd: Option<bool>,
}

/// Everything the monitor runs with, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Interval of each simulated service.
    pub interval: Duration,
    /// Probability that a simulated metric is an error.
    pub error_rate: f64,
    /// Errors per minute above which the alerter fires.
    pub alert_threshold: u64,
    /// The alert rules of the config file (the default rule aside).
    pub alert_rules: Vec<Rule>,
    /// Where alerts are POSTed, if anywhere.
    pub alert_webhook: Option<String>,
    /// The JSON Lines log file, or stdout when `None`.
    pub log_file: Option<PathBuf>,
    /// The web dashboard's address, or `None` for no web.
    pub web: Option<SocketAddr>,
    /// The API's bearer token.
    pub token: Option<String>,
    /// Extra names accepted in the `Host` header.
    pub allow_host: Vec<String>,
    /// Request body limit.
    pub max_body: usize,
    /// Whether the simulated services run.
    pub simulate: bool,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// The durable event log's directory, or `None` for no log.
    pub data_dir: Option<PathBuf>,
    /// Log segments older than this are deleted.
    pub log_retention_age: Duration,
    /// The log is kept under this many bytes (whole segments are deleted).
    pub log_retention_bytes: u64,
    /// The modules this process runs.
    pub modules: Modules,
    /// The NATS connection, if any.
    pub nats: Option<NatsSettings>,
    /// The most series the store keeps.
    pub max_series: usize,
    /// Whether the full-screen view runs.
    pub tui: bool,
    /// The `--otlp` listener's address, if any.
    pub otlp: Option<SocketAddr>,
    /// Prometheus endpoints to scrape.
    pub scrape: Vec<super::scrape::Target>,
    /// Time between scrapes.
    pub scrape_interval: Duration,
    /// The StatsD listener's address, or `None` for none.
    pub statsd: Option<StatsdSettings>,
}

/// Where the StatsD listener listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsdSettings {
    /// The address.
    pub addr: SocketAddr,
    /// Whether the user asked for it (then failing to bind is an error; the
    /// default taken is a warning).
    pub explicit: bool,
}

/// Which modules a process runs (`--modules`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modules {
    /// The simulated web service.
    pub web_sim: bool,
    /// The simulated database.
    pub db_sim: bool,
    /// The terminal dashboard.
    pub dashboard: bool,
    /// The logger.
    pub logger: bool,
    /// The alerter.
    pub alerter: bool,
    /// The web dashboard and API.
    pub web: bool,
    /// The ingest listeners (StatsD).
    pub ingest: bool,
}

impl Modules {
    /// Every module.
    pub const ALL: Modules = Modules {
        web_sim: true,
        db_sim: true,
        dashboard: true,
        logger: true,
        alerter: true,
        web: true,
        ingest: true,
    };

    /// Parses `--modules`: names separated by commas.
    pub fn parse(text: &str) -> Result<Modules> {
        let mut m = Modules {
            web_sim: false,
            db_sim: false,
            dashboard: false,
            logger: false,
            alerter: false,
            web: false,
            ingest: false,
        };
        for name in text.split(',').map(str::trim) {
            match name {
                "all" => m = Modules::ALL,
                "publishers" => (m.web_sim, m.db_sim) = (true, true),
                "web-sim" => m.web_sim = true,
                "db-sim" => m.db_sim = true,
                "dashboard" => m.dashboard = true,
                "logger" => m.logger = true,
                "alerter" => m.alerter = true,
                "web" => m.web = true,
                "ingest" => m.ingest = true,
                "" => bail!("modules {text:?}: an empty name"),
                other => bail!(
                    "modules: unknown module {other:?}; expected publishers, web-sim, db-sim, \
                     dashboard, logger, alerter, web, ingest or all"
                ),
            }
        }
        Ok(m)
    }

    /// Whether it runs a module that publishes metrics (the simulators, the
    /// web API, the ingest listeners).
    pub fn publishes(&self) -> bool {
        self.web_sim || self.db_sim || self.web || self.ingest
    }

    /// Whether it runs a module that reads metrics (dashboard, logger, alerter).
    pub fn consumes(&self) -> bool {
        self.dashboard || self.logger || self.alerter
    }

    /// The names of the modules it runs, sorted, joined by `-` (part of the
    /// name of the process's JetStream consumer).
    pub fn consumer_key(&self) -> String {
        let mut names = Vec::new();
        for (on, name) in [
            (self.alerter, "alerter"),
            (self.dashboard, "dashboard"),
            (self.db_sim, "db-sim"),
            (self.ingest, "ingest"),
            (self.logger, "logger"),
            (self.web, "web"),
            (self.web_sim, "web-sim"),
        ] {
            if on {
                names.push(name);
            }
        }
        names.join("-")
    }
}

/// `--nats` and its options.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// The server(s).
    pub url: String,
    /// Credentials.
    pub auth: busline_nats::Auth,
    /// The CA of the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// Core NATS instead of JetStream.
    pub core: bool,
}

/// The default directory of the monitor's event log (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "busline-data";

impl Settings {
    /// Merges the options over the config file (if any) and checks the result.
    pub fn resolve(args: &MonitorArgs) -> Result<Settings> {
        let file = match &args.config {
            Some(path) => load(path)?,
            None => FileConfig::default(),
        };
        let interval_ms = args.interval_ms.or(file.interval_ms).unwrap_or(100);
        if interval_ms == 0 {
            bail!("interval-ms must be at least 1");
        }
        let error_rate = args.error_rate.or(file.error_rate).unwrap_or(0.05);
        if !(0.0..=1.0).contains(&error_rate) {
            bail!("error-rate {error_rate} is not a probability: expected a number from 0 to 1");
        }
        let alert_rules = parse_rules(&file.alert).map_err(|e| match &args.config {
            Some(p) => anyhow::anyhow!("config file {}: {e}", p.display()),
            None => e,
        })?;
        let alert_webhook = args.alert_webhook.clone().or(file.alert_webhook);
        if let Some(url) = &alert_webhook {
            let parsed = reqwest::Url::parse(url)
                .with_context(|| format!("alert-webhook {url:?} is not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("alert-webhook {url:?}: expected an http:// or https:// URL");
            }
        }
        let no_web = args.no_web || (args.web.is_none() && file.no_web.unwrap_or(false));
        let web = if no_web {
            None
        } else {
            let text = args
                .web
                .clone()
                .or(file.web)
                .unwrap_or_else(|| DEFAULT_WEB.to_owned());
            Some(parse_addr("web address", &text)?)
        };
        let token = args.token.clone().or(file.token);
        if let Some(t) = &token {
            if t.len() < 8 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!("token: use at least 8 characters, without spaces");
            }
        }
        if let Some(addr) = web {
            if !addr.ip().is_loopback() && token.is_none() {
                bail!(
                    "refusing to serve the web dashboard on {addr} without a token: anyone who can \
                     reach that address could read the metrics and post events. Pass --token <secret> \
                     (or set BUSLINE_TOKEN), or bind to loopback (--web 127.0.0.1:7878)"
                );
            }
        }
        let mut allow_host = file.allow_host;
        allow_host.extend(args.allow_host.iter().cloned());
        let max_body = args.max_body.or(file.max_body).unwrap_or(64 * 1024);
        if max_body < 256 {
            bail!("max-body {max_body} is too small: at least 256 bytes");
        }
        let duration = match args.duration.or(file.duration) {
            Some(s) if !(s.is_finite() && s > 0.0) => {
                bail!("duration {s}: expected a number of seconds > 0")
            }
            Some(s) => match Duration::try_from_secs_f64(s) {
                Ok(d) => Some(d),
                Err(_) => bail!("duration {s}: too long (at most {} seconds)", u64::MAX),
            },
            None => None,
        };
        let no_data_dir =
            args.no_data_dir || (args.data_dir.is_none() && file.no_data_dir.unwrap_or(false));
        let data_dir = if no_data_dir {
            None
        } else {
            let dir = args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            (!dir.as_os_str().is_empty()).then_some(dir)
        };
        let retention_secs = args
            .log_retention_secs
            .or(file.log_retention_secs)
            .unwrap_or(3600);
        if retention_secs < 60 {
            bail!("log-retention-secs {retention_secs} is too short: at least 60 (the warm-up reads the last minute)");
        }
        let retention_mb = args
            .log_retention_mb
            .or(file.log_retention_mb)
            .unwrap_or(256);
        if retention_mb == 0 {
            bail!("log-retention-mb must be at least 1");
        }
        let modules = match args.modules.as_deref().or(file.modules.as_deref()) {
            Some(text) => Modules::parse(text)?,
            None => Modules::ALL,
        };
        let otlp = match args.otlp.clone().or(file.otlp) {
            Some(text) => {
                let addr = parse_addr("otlp address", &text)?;
                if !addr.ip().is_loopback() && token.is_none() {
                    bail!("refusing to take OTLP on {addr} without a token: pass --token <secret>, or bind to loopback (--otlp 127.0.0.1:4318)");
                }
                Some(addr)
            }
            None => None,
        };
        let mut scrape = Vec::new();
        for text in file.scrape.iter().chain(&args.scrape) {
            scrape.push(super::scrape::Target::parse(text)?);
        }
        let scrape_interval = match args.scrape_interval.or(file.scrape_interval).unwrap_or(5.0) {
            s if s.is_finite() && (0.1..=3600.0).contains(&s) => Duration::from_secs_f64(s),
            s => bail!("scrape-interval {s}: expected seconds from 0.1 to 3600"),
        };
        if !modules.ingest && (otlp.is_some() || !scrape.is_empty()) {
            bail!("--otlp and --scrape belong to the ingest module set: add `ingest` to --modules");
        }
        let publishes = modules.publishes();
        let nats = match args.nats.clone().or(file.nats) {
            None if !publishes => bail!(
                "modules: nothing in this process publishes metrics (publishers, web-sim, db-sim, web or ingest), so its consumers would have nothing to show; add a publisher, or --nats to get another process's metrics"
            ),
            None if !modules.consumes() => bail!(
                "modules: nothing in this process reads the metrics (dashboard, logger or alerter); add one, or --nats to send them to another process"
            ),
            None => None,
            Some(url) => {
                if url.trim().is_empty() {
                    bail!("nats: an empty server URL");
                }
                let creds = args.nats_creds.clone().or(file.nats_creds);
                let token = args.nats_token.clone().or(file.nats_token);
                let user = args.nats_user.clone().or(file.nats_user);
                let password = args.nats_password.clone().or(file.nats_password);
                let nkey = args.nats_nkey.clone().or(file.nats_nkey);
                let given = [
                    creds.is_some(),
                    token.is_some(),
                    user.is_some() || password.is_some(),
                    nkey.is_some(),
                ]
                .iter()
                .filter(|b| **b)
                .count();
                if given > 1 {
                    bail!("nats: give one kind of credentials: --nats-creds, --nats-token, --nats-user/--nats-password or --nats-nkey");
                }
                let auth = if let Some(path) = creds {
                    busline_nats::Auth::CredentialsFile(path)
                } else if let Some(t) = token {
                    busline_nats::Auth::Token(t)
                } else if let Some(seed) = nkey {
                    busline_nats::Auth::NKey(seed)
                } else {
                    match (user, password) {
                        (Some(user), Some(password)) => {
                            busline_nats::Auth::UserPassword { user, password }
                        }
                        (None, None) => busline_nats::Auth::None,
                        _ => bail!("nats: --nats-user and --nats-password go together"),
                    }
                };
                Some(NatsSettings {
                    url,
                    auth,
                    ca_file: args.nats_ca.clone().or(file.nats_ca),
                    core: args.nats_core || file.nats_core.unwrap_or(false),
                })
            }
        };
        let max_series = args
            .max_series
            .or(file.max_series)
            .unwrap_or(super::series::DEFAULT_MAX_SERIES);
        if max_series == 0 {
            bail!("max-series must be at least 1");
        }
        let no_statsd =
            args.no_statsd || (args.statsd.is_none() && file.no_statsd.unwrap_or(false));
        let statsd = match args.statsd.clone().or(file.statsd) {
            _ if no_statsd || !modules.ingest => None,
            Some(text) => Some(StatsdSettings {
                addr: parse_addr("statsd address", &text)?,
                explicit: true,
            }),
            None => Some(StatsdSettings {
                addr: crate::monitor::statsd::DEFAULT_ADDR.parse()?,
                explicit: false,
            }),
        };
        Ok(Settings {
            max_series,
            tui: args.tui || file.tui.unwrap_or(false),
            interval: Duration::from_millis(interval_ms),
            error_rate,
            alert_threshold: args.alert_threshold.or(file.alert_threshold).unwrap_or(10),
            alert_rules,
            alert_webhook,
            log_file: args.log_file.clone().or(file.log_file),
            web,
            token,
            allow_host,
            max_body,
            simulate: !(args.no_sim || file.no_sim.unwrap_or(false)),
            duration,
            data_dir,
            log_retention_age: Duration::from_secs(retention_secs),
            log_retention_bytes: retention_mb.saturating_mul(1 << 20),
            modules,
            nats,
            otlp,
            scrape,
            scrape_interval,
            statsd,
        })
    }
}

fn load(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        let rule = e
            .span()
            .and_then(|span| alert_rule_at(&text, span.start))
            .map(|n| format!(" (in alert rule #{n})"))
            .unwrap_or_default();
        anyhow::anyhow!(
            "config file {}{rule}: {}",
            path.display(),
            e.to_string().trim_end()
        )
    })
}

/// The number of the `[[alert]]` table (from 1) that byte `at` of `text`
/// is in, if it is in one.
fn alert_rule_at(text: &str, at: usize) -> Option<usize> {
    let mut rule = None;
    let mut n = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if offset > at {
            break;
        }
        let t = line.trim();
        if t.starts_with('[') {
            let name: String = t
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            if t.starts_with("[[") && name == "alert" {
                n += 1;
                rule = Some(n);
            } else if !name.starts_with("alert.") {
                // (`[alert.labels]` is still the current rule's.)
                rule = None;
            }
        }
        offset += line.len();
    }
    rule
}

/// `host:port`, where host is an IP address or `localhost`; `what` names it in errors.
fn parse_addr(what: &str, text: &str) -> Result<SocketAddr> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .with_context(|| format!("{what} {text:?}: bad port"))?;
        return Ok(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), port));
    }
    bail!("{what} {text:?}: expected IP:PORT, e.g. 127.0.0.1:7878")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(toml: &str, args: MonitorArgs) -> Result<Settings> {
        let dir = std::env::temp_dir().join(format!(
            "busline-config-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("monitor.toml");
        std::fs::write(&path, toml).unwrap();
        let r = Settings::resolve(&MonitorArgs {
            config: Some(path),
            ..args
        });
        std::fs::remove_dir_all(&dir).ok();
        r
    }

    #[test]
    fn defaults() {
        let s = Settings::resolve(&MonitorArgs::default()).unwrap();
        assert_eq!(s.interval, Duration::from_millis(100));
        assert_eq!(s.alert_threshold, 10);
        assert_eq!(s.web, Some(DEFAULT_WEB.parse().unwrap()));
        assert!(s.simulate);
        assert_eq!(s.data_dir, Some(PathBuf::from(DEFAULT_DATA_DIR)));
        assert_eq!(s.log_retention_age, Duration::from_secs(3600));
    }

    /// Without --nats a process must both publish and read metrics.
    #[test]
    fn a_module_set_that_could_do_nothing_is_refused() {
        for (modules, what) in [
            ("dashboard", "nothing in this process publishes"),
            ("logger,alerter", "nothing in this process publishes"),
            ("publishers", "nothing in this process reads"),
        ] {
            let args = MonitorArgs {
                modules: Some(modules.into()),
                ..MonitorArgs::default()
            };
            let e = Settings::resolve(&args).unwrap_err().to_string();
            assert!(e.contains(what), "{modules}: {e}");
            let args = MonitorArgs {
                modules: Some(modules.into()),
                nats: Some("nats://127.0.0.1:4222".into()),
                ..MonitorArgs::default()
            };
            assert!(Settings::resolve(&args).is_ok(), "{modules} with --nats");
        }
    }

    #[test]
    fn modules_and_nats() {
        let m = Modules::parse("publishers").unwrap();
        assert!(m.web_sim && m.db_sim && !m.consumes() && !m.web);
        let m = Modules::parse("dashboard, logger,alerter").unwrap();
        assert_eq!(m.consumer_key(), "alerter-dashboard-logger");
        assert!(!m.web_sim && !m.web);
        let e = Modules::parse("dashboard,loger").unwrap_err().to_string();
        assert!(e.contains("\"loger\""), "{e}");
        let s = Settings::resolve(&MonitorArgs::default()).unwrap();
        assert_eq!(s.modules, Modules::ALL);
        assert!(s.nats.is_none());
        let e = Settings::resolve(&MonitorArgs {
            nats: Some("nats://127.0.0.1:4222".into()),
            nats_user: Some("a".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--nats-password"), "{e}");
        let s = with_file(
            "nats = \"nats://127.0.0.1:4222\"\nnats-token = \"t0ken\"\nmodules = \"web-sim\"\n",
            MonitorArgs::default(),
        )
        .unwrap();
        let n = s.nats.unwrap();
        assert!(matches!(n.auth, busline_nats::Auth::Token(_)) && !n.core);
        assert!(s.modules.web_sim && !s.modules.db_sim);
    }

    #[test]
    fn statsd_is_on_by_default_and_can_be_moved_or_turned_off() {
        let statsd = |a: MonitorArgs| Settings::resolve(&a).unwrap().statsd;
        assert_eq!(
            statsd(MonitorArgs::default()),
            Some(StatsdSettings {
                addr: "127.0.0.1:8125".parse().unwrap(),
                explicit: false
            })
        );
        assert_eq!(
            statsd(MonitorArgs {
                statsd: Some("127.0.0.1:9125".into()),
                ..Default::default()
            }),
            Some(StatsdSettings {
                addr: "127.0.0.1:9125".parse().unwrap(),
                explicit: true
            })
        );
        let off = MonitorArgs {
            no_statsd: true,
            ..Default::default()
        };
        assert_eq!(statsd(off), None);
        let no_ingest = MonitorArgs {
            modules: Some("publishers,dashboard".into()),
            ..Default::default()
        };
        assert_eq!(statsd(no_ingest), None);
        let s = with_file("statsd = \"localhost:9200\"\n", MonitorArgs::default()).unwrap();
        assert_eq!(s.statsd.unwrap().addr, "127.0.0.1:9200".parse().unwrap());
        let s = with_file("no-statsd = true\n", MonitorArgs::default()).unwrap();
        assert_eq!(s.statsd, None);
        let e = Settings::resolve(&MonitorArgs {
            statsd: Some("udp:8125".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("statsd address \"udp:8125\""), "{e}");
    }

    #[test]
    fn ingest_alone_publishes() {
        let m = Modules::parse("ingest").unwrap();
        assert!(m.publishes() && !m.consumes());
        assert!(Modules::parse("all").unwrap().ingest);
        let args = MonitorArgs {
            modules: Some("ingest".into()),
            ..MonitorArgs::default()
        };
        let e = Settings::resolve(&args).unwrap_err().to_string();
        assert!(e.contains("nothing in this process reads"), "{e}");
    }

    #[test]
    fn the_data_dir_can_be_turned_off() {
        let off = |a: MonitorArgs| Settings::resolve(&a).unwrap().data_dir;
        assert_eq!(
            off(MonitorArgs {
                no_data_dir: true,
                ..Default::default()
            }),
            None
        );
        assert_eq!(
            off(MonitorArgs {
                data_dir: Some(PathBuf::new()),
                ..Default::default()
            }),
            None
        );
        let s = with_file("data-dir = \"/tmp/x\"\n", MonitorArgs::default()).unwrap();
        assert_eq!(s.data_dir, Some(PathBuf::from("/tmp/x")));
    }

    #[test]
    fn options_override_the_file() {
        let s = with_file(
            "interval-ms = 50\nalert-threshold = 3\nerror-rate = 0.5\n",
            MonitorArgs {
                alert_threshold: Some(7),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.interval, Duration::from_millis(50));
        assert_eq!(s.alert_threshold, 7);
        assert_eq!(s.error_rate, 0.5);
    }

    #[test]
    fn alert_rules_come_from_the_file_and_their_errors_name_rule_and_key() {
        let rule = "[[alert]]\nname = \"slow\"\nmetric = \"api.latency\"\nfunction = \"p99\"\nthreshold = 250\n";
        let s = with_file(&format!("interval-ms = 50\n{rule}"), MonitorArgs::default()).unwrap();
        assert_eq!(s.alert_rules.len(), 1);
        assert_eq!(s.alert_rules[0].expr(), "p99(api.latency [1m]) > 250");
        let bad = |text: &str| {
            with_file(text, MonitorArgs::default())
                .unwrap_err()
                .to_string()
        };
        // A key the rule does not know, a function, a window.
        let e = bad(&format!("{rule}[[alert]]\nname = \"b\"\nmetric = \"x\"\nfunction = \"max\"\nthreshold = 1\ntreshold = 2\n"));
        assert!(
            e.contains(
                "monitor.toml: alert rule #2 (\"b\"): key `treshold`: unknown field `treshold`"
            ),
            "{e}"
        );
        let e = bad(&rule.replace("p99", "p95"));
        assert!(
            e.contains("alert rule #1 (\"slow\"): key `function`: unknown function \"p95\""),
            "{e}"
        );
        // TOML that does not parse: the rule's number and the line.
        let e = bad(&format!("{rule}[[alert]]\nname = \"b\"\nthreshold = \n"));
        assert!(
            e.contains("(in alert rule #2)") && e.contains("threshold ="),
            "{e}"
        );
        let e = bad("interval-ms = \n[[alert]]\nname = \"b\"\n");
        assert!(!e.contains("alert rule"), "{e}");
        let text = "[[alert]]\na\n[[ alert ]] # x\nb\n[x]\nc\n";
        assert_eq!(alert_rule_at(text, text.find('a').unwrap()), Some(1));
        assert_eq!(alert_rule_at(text, text.find('b').unwrap()), Some(2));
        assert_eq!(alert_rule_at(text, text.find('c').unwrap()), None);
        let text = "[[alert]]\na\n[[alerts]]\nb\n";
        assert_eq!(alert_rule_at(text, text.find('b').unwrap()), None);
        // A sub-table of a rule is still that rule (review #17).
        let text = "[[alert]]\nx = 1\n[[alert]]\n[alert.labels]\nzz = 1\n[web]\nqq = 1\n";
        assert_eq!(alert_rule_at(text, text.find("zz").unwrap()), Some(2));
        assert_eq!(alert_rule_at(text, text.find("qq").unwrap()), None);
    }

    #[test]
    fn max_series_and_tui_from_the_file() {
        let s = with_file("max-series = 50\ntui = true\n", MonitorArgs::default()).unwrap();
        assert_eq!((s.max_series, s.tui), (50, true));
        let s = Settings::resolve(&MonitorArgs::default()).unwrap();
        assert_eq!((s.max_series, s.tui), (10_000, false));
        let e = with_file("max-series = 0\n", MonitorArgs::default()).unwrap_err();
        assert!(e.to_string().contains("max-series"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = with_file("interval_ms = 50\n", MonitorArgs::default()).unwrap_err();
        assert!(e.to_string().contains("interval_ms"), "{e}");
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let e = Settings::resolve(&MonitorArgs {
            web: Some("0.0.0.0:7878".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("--token"), "{e}");
        Settings::resolve(&MonitorArgs {
            web: Some("0.0.0.0:7878".into()),
            token: Some("s3cret-token".into()),
            ..Default::default()
        })
        .unwrap();
    }

    #[test]
    fn bad_values() {
        let bad = |a: MonitorArgs| Settings::resolve(&a).unwrap_err().to_string();
        assert!(bad(MonitorArgs {
            error_rate: Some(2.0),
            ..Default::default()
        })
        .contains("error-rate"));
        assert!(bad(MonitorArgs {
            alert_webhook: Some("ftp://x".into()),
            ..Default::default()
        })
        .contains("alert-webhook"));
        assert!(bad(MonitorArgs {
            web: Some("nonsense".into()),
            ..Default::default()
        })
        .contains("web address"));
    }
}
