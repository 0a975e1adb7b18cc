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

mod args;
mod file;
mod modules;
mod settings;

pub use args::{MonitorArgs, DEFAULT_WEB};
pub use modules::Modules;
#[cfg(test)]
use settings::DEFAULT_DATA_DIR;
pub use settings::{NatsSettings, Settings};

#[cfg(test)]
mod tests;
