//! The TOML file: its keys, and errors placed in the `[[alert]]` table they
//! are in.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Deserialize;

/// The file form of [`MonitorArgs`](super::MonitorArgs).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct FileConfig {
    pub(super) interval_ms: Option<u64>,
    pub(super) error_rate: Option<f64>,
    pub(super) alert_threshold: Option<u64>,
    pub(super) alert_webhook: Option<String>,
    pub(super) log_file: Option<PathBuf>,
    pub(super) web: Option<String>,
    pub(super) no_web: Option<bool>,
    pub(super) token: Option<String>,
    #[serde(default)]
    pub(super) allow_host: Vec<String>,
    pub(super) max_body: Option<usize>,
    pub(super) no_sim: Option<bool>,
    pub(super) duration: Option<f64>,
    pub(super) data_dir: Option<PathBuf>,
    pub(super) no_data_dir: Option<bool>,
    pub(super) log_retention_secs: Option<u64>,
    pub(super) log_retention_mb: Option<u64>,
    pub(super) modules: Option<String>,
    pub(super) nats: Option<String>,
    pub(super) nats_creds: Option<PathBuf>,
    pub(super) nats_token: Option<String>,
    pub(super) nats_user: Option<String>,
    pub(super) nats_password: Option<String>,
    pub(super) nats_nkey: Option<String>,
    pub(super) nats_ca: Option<PathBuf>,
    pub(super) nats_core: Option<bool>,
    #[serde(default)]
    pub(super) alert: Vec<toml::Table>,
    pub(super) max_series: Option<usize>,
    pub(super) tui: Option<bool>,
    pub(super) otlp: Option<String>,
    #[serde(default)]
    pub(super) scrape: Vec<String>,
    pub(super) scrape_interval: Option<f64>,
    pub(super) statsd: Option<String>,
    pub(super) no_statsd: Option<bool>,
}

pub(super) fn load(path: &Path) -> Result<FileConfig> {
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
pub(super) fn alert_rule_at(text: &str, at: usize) -> Option<usize> {
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
