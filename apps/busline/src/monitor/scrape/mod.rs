//! Prometheus scrapes: `--scrape [JOB=]URL` (repeatable), every
//! `--scrape-interval` seconds (default 5).
//!
//! Each target is fetched with a timeout of the interval (from 1 s to 10 s),
//! its text parsed ([`parse`]) and turned into samples ([`convert`]:
//! counters into increments, restarts handled), published lossless with the
//! job as their source (`metrics.<job>.<name>`).
//!
//! ## Jobs
//!
//! `--scrape api=http://127.0.0.1:8000/metrics` names the job `api`;
//! without a name it is the URL's `host:port` (`127.0.0.1:8000`). Two
//! targets of one job feed the same series (counters add up).
//!
//! ## Up or down
//!
//! Every scrape also publishes `up` (a gauge: 1 when the scrape worked, 0
//! when not) labelled `instance` (the URL) and `job`, so an alert rule can
//! watch it, and sets the target's state in `/api/summary`'s
//! `ingest.targets` (up, the last error, samples, failures). A target that
//! refuses the connection, answers an HTTP error, does not answer within the
//! timeout, or serves text that is not the exposition format is down with
//! that error, and counted in `ingest.scrape.malformed` by reason; a text
//! that does not parse is refused whole, as Prometheus does. The monitor
//! goes on scraping it.

pub mod convert;
pub mod parse;

use super::sample_check::check;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use busline::{BoxError, Context, Module};

use super::cumulative::Cumulative;
use super::ingest_status::{self, IngestStatus};
use super::metric::Metric;
use super::sample::{Sample, Value};

/// The longest a scrape waits for its target.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10);
/// The least time a scrape waits for its target (with a shorter interval,
/// a slow scrape delays the next one).
pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);
/// The largest exposition read (bytes).
pub const MAX_BODY: usize = 16 << 20;

/// A target to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The job: the source of its samples.
    pub job: String,
    /// Its URL.
    pub url: String,
}

impl Target {
    /// `URL` or `JOB=URL`.
    pub fn parse(text: &str) -> anyhow::Result<Target> {
        let (job, url) = match text.split_once('=') {
            Some((job, url)) if !job.contains("://") => (Some(job.trim()), url.trim()),
            _ => (None, text.trim()),
        };
        let parsed = reqwest::Url::parse(url)
            .with_context(|| format!("scrape {text:?}: {url:?} is not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("scrape {text:?}: expected an http:// or https:// URL");
        }
        let job = match job {
            Some("") => bail!("scrape {text:?}: an empty job name before `=`"),
            Some(job) => job.to_owned(),
            None => match (parsed.host_str(), parsed.port_or_known_default()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_owned(),
                _ => bail!("scrape {text:?}: the URL has no host"),
            },
        };
        Ok(Target {
            job,
            url: url.to_owned(),
        })
    }
}

/// The `scrape` module: scrapes every target on its own schedule.
#[derive(Clone)]
pub struct Scraper {
    targets: Vec<Target>,
    interval: Duration,
    ingest: Arc<IngestStatus>,
}

impl Scraper {
    /// Scrapes `targets` every `interval`.
    pub fn new(targets: Vec<Target>, interval: Duration, ingest: Arc<IngestStatus>) -> Scraper {
        Scraper {
            targets,
            interval,
            ingest,
        }
    }
}

impl Module<Metric> for Scraper {
    fn name(&self) -> &str {
        "scrape"
    }

    async fn run(&mut self, ctx: Context<Metric>) -> Result<(), BoxError> {
        let timeout = self.interval.clamp(MIN_TIMEOUT, MAX_TIMEOUT);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("busline-monitor/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let loops = self.targets.iter().cloned().map(|t| {
            let job = TargetLoop {
                target: t,
                client: client.clone(),
                ctx: ctx.clone(),
                ingest: self.ingest.clone(),
                cum: Cumulative::default(),
                failures: 0,
                timeout,
                scraped: false,
            };
            job.run(self.interval)
        });
        tokio::select! {
            _ = futures::future::join_all(loops) => {}
            _ = ctx.shutdown_requested() => {}
        }
        Ok(())
    }
}

struct TargetLoop {
    target: Target,
    client: reqwest::Client,
    ctx: Context<Metric>,
    ingest: Arc<IngestStatus>,
    cum: Cumulative,
    failures: u64,
    timeout: Duration,
    /// A scrape worked before: series new since then appeared meanwhile.
    scraped: bool,
}

impl TargetLoop {
    async fn run(mut self, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.once().await {
                return;
            }
        }
    }

    /// One scrape; false once the bus is closed.
    async fn once(&mut self) -> bool {
        let counters = &self.ingest.scrape;
        counters.received.fetch_add(1, Ordering::Relaxed);
        let result = self.fetch().await.and_then(|text| {
            let families = parse::parse(&text).map_err(|e| {
                (
                    "unparsable exposition",
                    format!("not the Prometheus text format: {e}"),
                )
            })?;
            let seen_before = self.scraped;
            Ok(convert::convert(
                &families,
                &mut self.cum,
                Instant::now(),
                seen_before,
            ))
        });
        let (mut samples, accepted, error) = match result {
            Ok(s) => {
                self.scraped = true;
                for (reason, n) in &s.refused {
                    counters.malformed(reason, &self.target.url, *n);
                }
                let mut samples = s.samples;
                let before = samples.len();
                samples.retain(|x| match check(x) {
                    Ok(()) => true,
                    Err(e) => {
                        counters.malformed(
                            "a sample over the monitor's limits",
                            &format!("{}: {}: {}", self.target.url, x.name, e.reason),
                            1,
                        );
                        false
                    }
                });
                let over = (before - samples.len()) as u64;
                (samples, s.accepted.saturating_sub(over), None)
            }
            Err((reason, message)) => {
                counters.malformed(reason, &format!("{}: {message}", self.target.url), 1);
                self.failures += 1;
                (Vec::new(), 0, Some(message))
            }
        };
        let n = samples.len() as u64;
        samples.push(
            Sample::new(
                "up",
                Value::Gauge {
                    value: if error.is_none() { 1.0 } else { 0.0 },
                },
            )
            .label("instance", self.target.url.as_str())
            .label("job", self.target.job.as_str()),
        );
        for m in Metric::batches(&self.target.job, samples) {
            if self.ctx.send(m.message("scrape")).await.is_err() {
                return false;
            }
        }
        counters.accepted.fetch_add(accepted, Ordering::Relaxed);
        self.ingest.set_target(ingest_status::Target {
            url: self.target.url.clone(),
            up: error.is_none(),
            last_error: error,
            last_scrape_ms: Some(super::sample::unix_ms(std::time::SystemTime::now())),
            samples: n,
            failures: self.failures,
        });
        true
    }

    /// The target's text, or why not (a reason to count, a message to show).
    async fn fetch(&self) -> Result<String, (&'static str, String)> {
        let sent = self
            .client
            .get(&self.target.url)
            .header(
                reqwest::header::ACCEPT,
                "text/plain;version=0.0.4;q=1,*/*;q=0.1",
            )
            .send()
            .await;
        let mut resp = sent.map_err(|e| self.failed(&e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(("HTTP error", format!("HTTP {status} from the target")));
        }
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if body.len() + c.len() > MAX_BODY {
                        return Err(("body too large", format!("more than {MAX_BODY} bytes")));
                    }
                    body.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) => return Err(self.failed(&e)),
            }
        }
        String::from_utf8(body).map_err(|_| ("not UTF-8", "the body is not UTF-8 text".to_owned()))
    }

    fn failed(&self, e: &reqwest::Error) -> (&'static str, String) {
        if e.is_timeout() {
            return (
                "timeout",
                format!(
                    "no answer within {:.1}s (timeout)",
                    self.timeout.as_secs_f64()
                ),
            );
        }
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        let reason = if e.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        (reason, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_their_job() {
        let t = Target::parse("http://127.0.0.1:9100/metrics").unwrap();
        assert_eq!(t.job, "127.0.0.1:9100");
        let t = Target::parse("api=http://h:8000/metrics?x=1").unwrap();
        assert_eq!(
            (t.job.as_str(), t.url.as_str()),
            ("api", "http://h:8000/metrics?x=1")
        );
        let t = Target::parse("http://h/metrics?x=1").unwrap();
        assert_eq!(
            (t.job.as_str(), t.url.as_str()),
            ("h:80", "http://h/metrics?x=1")
        );
        assert!(Target::parse("ftp://h/").is_err());
        assert!(Target::parse("=http://h/").is_err());
        assert!(Target::parse("nonsense").is_err());
    }
}
