//! The options and the file merged and checked: what the monitor runs with.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use super::super::rule::{parse_rules, Rule};
use super::file::{load, FileConfig};
use super::{Modules, MonitorArgs, DEFAULT_WEB};

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
    pub scrape: Vec<super::super::scrape::Target>,
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
        let alert_webhook = webhook(args, &file)?;
        let web = WebSettings::resolve(args, &file)?;
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
        let log = LogSettings::resolve(args, &file)?;
        let modules = match args.modules.as_deref().or(file.modules.as_deref()) {
            Some(text) => Modules::parse(text)?,
            None => Modules::ALL,
        };
        let ingest = IngestSettings::resolve(args, &file, modules, web.token.is_some())?;
        let nats = nats(args, &file, modules)?;
        let max_series = args
            .max_series
            .or(file.max_series)
            .unwrap_or(super::super::series::DEFAULT_MAX_SERIES);
        if max_series == 0 {
            bail!("max-series must be at least 1");
        }
        Ok(Settings {
            max_series,
            tui: args.tui || file.tui.unwrap_or(false),
            interval: Duration::from_millis(interval_ms),
            error_rate,
            alert_threshold: args.alert_threshold.or(file.alert_threshold).unwrap_or(10),
            alert_rules,
            alert_webhook,
            log_file: args.log_file.clone().or(file.log_file),
            web: web.addr,
            token: web.token,
            allow_host: web.allow_host,
            max_body: web.max_body,
            simulate: !(args.no_sim || file.no_sim.unwrap_or(false)),
            duration,
            data_dir: log.data_dir,
            log_retention_age: Duration::from_secs(log.retention_secs),
            log_retention_bytes: log.retention_mb.saturating_mul(1 << 20),
            modules,
            nats,
            otlp: ingest.otlp,
            scrape: ingest.scrape,
            scrape_interval: ingest.scrape_interval,
            statsd: ingest.statsd,
        })
    }
}

/// `alert-webhook`: an http(s) URL.
fn webhook(args: &MonitorArgs, file: &FileConfig) -> Result<Option<String>> {
    let alert_webhook = args.alert_webhook.clone().or(file.alert_webhook.clone());
    if let Some(url) = &alert_webhook {
        let parsed = reqwest::Url::parse(url)
            .with_context(|| format!("alert-webhook {url:?} is not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("alert-webhook {url:?}: expected an http:// or https:// URL");
        }
    }
    Ok(alert_webhook)
}

/// The web page and API: address, token, hosts, body limit.
struct WebSettings {
    addr: Option<SocketAddr>,
    token: Option<String>,
    allow_host: Vec<String>,
    max_body: usize,
}

impl WebSettings {
    fn resolve(args: &MonitorArgs, file: &FileConfig) -> Result<WebSettings> {
        let no_web = args.no_web || (args.web.is_none() && file.no_web.unwrap_or(false));
        let addr = if no_web {
            None
        } else {
            let text = args
                .web
                .clone()
                .or(file.web.clone())
                .unwrap_or_else(|| DEFAULT_WEB.to_owned());
            Some(parse_addr("web address", &text)?)
        };
        let token = args.token.clone().or(file.token.clone());
        if let Some(t) = &token {
            if t.len() < 8 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!("token: use at least 8 characters, without spaces");
            }
        }
        if let Some(addr) = addr {
            if !addr.ip().is_loopback() && token.is_none() {
                bail!(
                    "refusing to serve the web dashboard on {addr} without a token: anyone who can \
                     reach that address could read the metrics and post events. Pass --token <secret> \
                     (or set BUSLINE_TOKEN), or bind to loopback (--web 127.0.0.1:7878)"
                );
            }
        }
        let mut allow_host = file.allow_host.clone();
        allow_host.extend(args.allow_host.iter().cloned());
        let max_body = args.max_body.or(file.max_body).unwrap_or(64 * 1024);
        if max_body < 256 {
            bail!("max-body {max_body} is too small: at least 256 bytes");
        }
        Ok(WebSettings {
            addr,
            token,
            allow_host,
            max_body,
        })
    }
}

/// The event log: where, and how much of it is kept.
struct LogSettings {
    data_dir: Option<PathBuf>,
    retention_secs: u64,
    retention_mb: u64,
}

impl LogSettings {
    fn resolve(args: &MonitorArgs, file: &FileConfig) -> Result<LogSettings> {
        let no_data_dir =
            args.no_data_dir || (args.data_dir.is_none() && file.no_data_dir.unwrap_or(false));
        let data_dir = if no_data_dir {
            None
        } else {
            let dir = args
                .data_dir
                .clone()
                .or(file.data_dir.clone())
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
        Ok(LogSettings {
            data_dir,
            retention_secs,
            retention_mb,
        })
    }
}

/// The `ingest` module set's listeners and scrapers.
struct IngestSettings {
    otlp: Option<SocketAddr>,
    scrape: Vec<super::super::scrape::Target>,
    scrape_interval: Duration,
    statsd: Option<StatsdSettings>,
}

impl IngestSettings {
    fn resolve(
        args: &MonitorArgs,
        file: &FileConfig,
        modules: Modules,
        token: bool,
    ) -> Result<IngestSettings> {
        let otlp = match args.otlp.clone().or(file.otlp.clone()) {
            Some(text) => {
                let addr = parse_addr("otlp address", &text)?;
                if !addr.ip().is_loopback() && !token {
                    bail!("refusing to take OTLP on {addr} without a token: pass --token <secret>, or bind to loopback (--otlp 127.0.0.1:4318)");
                }
                Some(addr)
            }
            None => None,
        };
        let mut scrape = Vec::new();
        for text in file.scrape.iter().chain(&args.scrape) {
            scrape.push(super::super::scrape::Target::parse(text)?);
        }
        let scrape_interval = match args.scrape_interval.or(file.scrape_interval).unwrap_or(5.0) {
            s if s.is_finite() && (0.1..=3600.0).contains(&s) => Duration::from_secs_f64(s),
            s => bail!("scrape-interval {s}: expected seconds from 0.1 to 3600"),
        };
        if !modules.ingest && (otlp.is_some() || !scrape.is_empty()) {
            bail!("--otlp and --scrape belong to the ingest module set: add `ingest` to --modules");
        }
        let no_statsd =
            args.no_statsd || (args.statsd.is_none() && file.no_statsd.unwrap_or(false));
        let statsd = match args.statsd.clone().or(file.statsd.clone()) {
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
        Ok(IngestSettings {
            otlp,
            scrape,
            scrape_interval,
            statsd,
        })
    }
}

/// `--nats` and its credentials; without it, the module set must both
/// publish and consume.
fn nats(args: &MonitorArgs, file: &FileConfig, modules: Modules) -> Result<Option<NatsSettings>> {
    let url = match args.nats.clone().or(file.nats.clone()) {
        None if !modules.publishes() => bail!(
            "modules: nothing in this process publishes metrics (publishers, web-sim, db-sim, web or ingest), so its consumers would have nothing to show; add a publisher, or --nats to get another process's metrics"
        ),
        None if !modules.consumes() => bail!(
            "modules: nothing in this process reads the metrics (dashboard, logger or alerter); add one, or --nats to send them to another process"
        ),
        None => return Ok(None),
        Some(url) => url,
    };
    if url.trim().is_empty() {
        bail!("nats: an empty server URL");
    }
    Ok(Some(NatsSettings {
        url,
        auth: nats_auth(args, file)?,
        ca_file: args.nats_ca.clone().or(file.nats_ca.clone()),
        core: args.nats_core || file.nats_core.unwrap_or(false),
    }))
}

/// One kind of NATS credentials at most.
fn nats_auth(args: &MonitorArgs, file: &FileConfig) -> Result<busline_nats::Auth> {
    let creds = args.nats_creds.clone().or(file.nats_creds.clone());
    let token = args.nats_token.clone().or(file.nats_token.clone());
    let user = args.nats_user.clone().or(file.nats_user.clone());
    let password = args.nats_password.clone().or(file.nats_password.clone());
    let nkey = args.nats_nkey.clone().or(file.nats_nkey.clone());
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
    Ok(if let Some(path) = creds {
        busline_nats::Auth::CredentialsFile(path)
    } else if let Some(t) = token {
        busline_nats::Auth::Token(t)
    } else if let Some(seed) = nkey {
        busline_nats::Auth::NKey(seed)
    } else {
        match (user, password) {
            (Some(user), Some(password)) => busline_nats::Auth::UserPassword { user, password },
            (None, None) => busline_nats::Auth::None,
            _ => bail!("nats: --nats-user and --nats-password go together"),
        }
    })
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
