//! Alert rules: what the config file's `[[alert]]` tables say, checked.
//!
//! ```toml
//! [[alert]]
//! name = "slow-api"                 # required, unique
//! metric = "http.server.duration"   # the metric's name, a glob (see below)
//! source = "checkout"               # optional: only this service (a glob)
//! labels = { route = "/api/*", status = "!2*" }  # optional label matchers
//! function = "p99"                  # see the table below
//! window = "1m"                     # default 1m
//! op = ">"                          # >, >=, < or <=; default >
//! threshold = 250                   # required (except for `up`)
//! for = "30s"                       # how long it must hold before firing; default 0
//! ```
//!
//! Globs: `*` is any run of characters, the rest is literal (`api.*`,
//! `http_*_total`); a label's pattern with `!` in front matches when the
//! label is absent or does not match (see [`selector`](super::selector)).
//!
//! A rule's value aggregates **every matching series** together over the
//! last `window`, at the samples' event time:
//!
//! | function | value |
//! | --- | --- |
//! | `rate_per_s`, `rate_per_min` | counter increments (other kinds: samples, as `count`) in the window, divided by its length |
//! | `count` | samples in the window (an observation counts its weight, a histogram its bucket counts) |
//! | `sum`, `avg`, `min`, `max` | of the values (observations weighted; histograms by their sum and bucket bounds) |
//! | `p50`, `p90`, `p99` | percentiles of the values (a histogram's buckets at their midpoints), within 0.1% |
//! | `last` | the newest value (gauge deltas add to it) |
//! | `up` | scrape targets down: matching series (default metric `up`) whose last value in the window is 0; `op`/`threshold` default to `> 0`, so it fires when any target is down |
//!
//! Errors and set members have no value: `count` and the rates see them,
//! the value functions do not. With no sample in the window `count`, `sum`
//! and the rates are 0, the others have no value, and a rule without a value
//! does not hold (a firing rule resolves).
//!
//! Durations (`window`, `for`) are written like `500ms`, `30s`, `1m`,
//! `1m30s`, `2h` (or a number of seconds); a window is 1 s to 24 h.
//!
//! A rule that cannot be read stops start-up with an error naming the rule
//! (its number among the `[[alert]]` tables, and its name when it has one)
//! and the key at fault.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;

use super::selector::{Glob, LabelMatcher, Selector};

/// The name of the default rule, the seed's errors per minute.
pub const DEFAULT_RULE: &str = "error-rate";
/// The shortest window.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// The longest window or `for`.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// What a rule computes over its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// Increments per second.
    RatePerS,
    /// Increments per minute.
    RatePerMin,
    /// Samples (weighted).
    Count,
    /// Sum of the values.
    Sum,
    /// Mean of the values.
    Avg,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Median.
    P50,
    /// 90th percentile.
    P90,
    /// 99th percentile.
    P99,
    /// The newest value.
    Last,
    /// Scrape targets down.
    Up,
}

impl Function {
    const ALL: [(&'static str, Function); 12] = [
        ("rate_per_s", Function::RatePerS),
        ("rate_per_min", Function::RatePerMin),
        ("count", Function::Count),
        ("sum", Function::Sum),
        ("avg", Function::Avg),
        ("min", Function::Min),
        ("max", Function::Max),
        ("p50", Function::P50),
        ("p90", Function::P90),
        ("p99", Function::P99),
        ("last", Function::Last),
        ("up", Function::Up),
    ];

    /// Its name in the config file.
    pub fn name(self) -> &'static str {
        Function::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    fn parse(text: &str) -> Result<Function> {
        match Function::ALL.iter().find(|(n, _)| *n == text) {
            Some((_, f)) => Ok(*f),
            None => {
                let names: Vec<_> = Function::ALL.iter().map(|(n, _)| *n).collect();
                bail!(
                    "unknown function {text:?}; expected one of {}",
                    names.join(", ")
                )
            }
        }
    }

    /// The quantile, for a percentile.
    pub fn quantile(self) -> Option<f64> {
        match self {
            Function::P50 => Some(0.50),
            Function::P90 => Some(0.90),
            Function::P99 => Some(0.99),
            _ => None,
        }
    }
}

/// A comparison with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

impl Op {
    fn parse(text: &str) -> Result<Op> {
        Ok(match text {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            other => bail!("unknown comparison {other:?}; expected one of >, >=, <, <="),
        })
    }

    /// Whether `value op threshold`.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        })
    }
}

/// A checked alert rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Its name.
    pub name: String,
    /// The samples it looks at.
    pub selector: Selector,
    /// What it computes.
    pub function: Function,
    /// Over how long.
    pub window: Duration,
    /// The comparison.
    pub op: Op,
    /// The threshold.
    pub threshold: f64,
    /// How long the condition must hold before the rule fires.
    pub hold: Duration,
    /// The seed's errors-per-minute rule (it prints the seed's lines).
    pub is_default: bool,
}

impl Rule {
    /// The seed's rule: more than `threshold` errors in the last minute.
    pub fn default_errors(threshold: u64) -> Rule {
        let mut selector = Selector::metric("error");
        selector.errors_only = true;
        Rule {
            name: DEFAULT_RULE.to_owned(),
            selector,
            function: Function::Count,
            window: Duration::from_secs(60),
            op: Op::Gt,
            threshold: threshold as f64,
            hold: Duration::ZERO,
            is_default: true,
        }
    }

    /// `func(selector [window])`, e.g. `p99(api.latency{route="/x"} [1m])`.
    pub fn lhs(&self) -> String {
        format!(
            "{}({} [{}])",
            self.function.name(),
            self.selector,
            human_duration(self.window)
        )
    }

    /// The whole condition: `p99(api.latency [1m]) > 250`, with ` for 30s`
    /// when it has a `for`.
    pub fn expr(&self) -> String {
        let mut s = format!("{} {} {}", self.lhs(), self.op, num(self.threshold));
        if !self.hold.is_zero() {
            s.push_str(&format!(" for {}", human_duration(self.hold)));
        }
        s
    }

    /// Whether `value` meets the condition (no value never does).
    pub fn holds(&self, value: Option<f64>) -> bool {
        value.is_some_and(|v| self.op.holds(v, self.threshold))
    }
}

/// A number for people: whole numbers without decimals, others with at most
/// three.
pub fn num(v: f64) -> String {
    let v = v + 0.0; // -0 is 0
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// `1m30s`, `500ms`, `2h`: the way rules write durations.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, ms) = (rest / 1000, rest % 1000);
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

/// Parses `500ms`, `30s`, `1m`, `1m30s`, `2h`, `1.5s`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    if t.is_empty() {
        bail!("an empty duration; write e.g. \"30s\", \"1m\" or \"500ms\"");
    }
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let n: f64 = number.parse().map_err(|_| {
            anyhow!("{text:?} is not a duration; write e.g. \"30s\", \"1m\" or \"500ms\"")
        })?;
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => {
                bail!("{text:?}: a number without a unit; write e.g. \"30s\" (units ms, s, m, h)")
            }
            u => bail!("{text:?}: unknown unit {u:?}; expected ms, s, m or h"),
        };
        total += n * scale;
        rest = tail;
    }
    if !total.is_finite() || total > MAX_DURATION.as_secs_f64() {
        bail!("{text:?} is too long: at most 24h");
    }
    Ok(Duration::from_secs_f64(total))
}

/// A duration as written in the file: a text or a number of seconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DurationText {
    Text(String),
    Secs(u64),
}

impl DurationText {
    fn parse(&self) -> Result<Duration> {
        match self {
            DurationText::Text(t) => parse_duration(t),
            DurationText::Secs(s) if *s <= MAX_DURATION.as_secs() => Ok(Duration::from_secs(*s)),
            DurationText::Secs(s) => bail!("{s} seconds is too long: at most 24h"),
        }
    }
}

/// One `[[alert]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: String,
    metric: Option<String>,
    source: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    function: String,
    window: Option<DurationText>,
    op: Option<String>,
    threshold: Option<f64>,
    #[serde(rename = "for")]
    hold: Option<DurationText>,
}

/// Checks the config file's `[[alert]]` tables, in order.
pub fn parse_rules(tables: &[toml::Table]) -> Result<Vec<Rule>> {
    let mut rules: Vec<Rule> = Vec::with_capacity(tables.len());
    for (i, table) in tables.iter().enumerate() {
        let name = table.get("name").and_then(|v| v.as_str());
        let which = match name {
            Some(n) => format!("alert rule #{} ({n:?})", i + 1),
            None => format!("alert rule #{}", i + 1),
        };
        let rule = parse_rule(table).map_err(|e| anyhow!("{which}: {e}"))?;
        if let Some(j) = rules.iter().position(|r| r.name == rule.name) {
            bail!(
                "{which}: key `name`: {:?} is already the name of alert rule #{}",
                rule.name,
                j + 1
            );
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// An error about `key`.
fn at(key: &str, e: impl fmt::Display) -> anyhow::Error {
    anyhow!("key `{key}`: {e}")
}

fn parse_rule(table: &toml::Table) -> Result<Rule> {
    let file: RuleFile = serde_path_to_error::deserialize(table.clone()).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            anyhow!("{}", e.inner())
        } else {
            at(&path, e.inner())
        }
    })?;
    let name = file.name.trim();
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(at("name", "give the rule a name (no control characters)"));
    }
    if name == DEFAULT_RULE {
        return Err(at(
            "name",
            format!("{DEFAULT_RULE:?} is the default rule's name (set its threshold with alert-threshold)"),
        ));
    }
    let function = Function::parse(&file.function).map_err(|e| at("function", e))?;
    let metric = match (file.metric.as_deref(), function) {
        (Some(m), _) if m.trim().is_empty() => return Err(at("metric", "an empty metric name")),
        (Some(m), _) => m.to_owned(),
        (None, Function::Up) => "up".to_owned(),
        (None, _) => {
            return Err(at(
                "metric",
                "missing: name the metric (a glob, e.g. \"api.*\")",
            ))
        }
    };
    let mut selector = Selector::metric(&metric);
    if let Some(s) = &file.source {
        if s.is_empty() {
            return Err(at(
                "source",
                "an empty source; leave the key out for any source",
            ));
        }
        selector.source = Some(Glob::new(s));
    }
    for (key, pattern) in &file.labels {
        if key.is_empty() {
            return Err(at("labels", "an empty label key"));
        }
        selector.labels.push(LabelMatcher::new(key, pattern));
    }
    let window = match &file.window {
        Some(w) => w.parse().map_err(|e| at("window", e))?,
        None => Duration::from_secs(60),
    };
    if window < MIN_WINDOW {
        return Err(at(
            "window",
            format!("{} is too short: at least 1s", human_duration(window)),
        ));
    }
    let hold = match &file.hold {
        Some(d) => d.parse().map_err(|e| at("for", e))?,
        None => Duration::ZERO,
    };
    let op = match &file.op {
        Some(o) => Op::parse(o).map_err(|e| at("op", e))?,
        None => Op::Gt,
    };
    let threshold = match (file.threshold, function) {
        (Some(t), _) if !t.is_finite() => return Err(at("threshold", "not a finite number")),
        (Some(t), _) => t,
        (None, Function::Up) => 0.0,
        (None, _) => return Err(at("threshold", "missing: the value to compare with")),
    };
    Ok(Rule {
        name: name.to_owned(),
        selector,
        function,
        window,
        op,
        threshold,
        hold,
        is_default: false,
    })
}

#[cfg(test)]
mod tests;
