//! The general metric model: a [`Sample`] is one measurement of one series.
//!
//! A series is a metric `name` with its `labels` (key=value pairs), sent by a
//! `source` (the service: StatsD's `service` tag or the listener's default,
//! OTLP's `service.name`, a scrape target's job). Every protocol the monitor
//! speaks — StatsD, OTLP, a Prometheus scrape, the JSON API — turns what it
//! receives into samples; the dashboard, the alert rules, the web page and the
//! terminal view read nothing else (the seed's three shapes map onto samples
//! too, see [`Metric::samples`](super::metric::Metric::samples)).
//!
//! ## Kinds
//!
//! | kind | value means | aggregated as |
//! | --- | --- | --- |
//! | `counter` | an increment (a delta since the last sample; cumulative sources are turned into deltas at ingest, resets handled) | count of samples, sum, rate per second |
//! | `gauge` | the current value | last, min, max, mean |
//! | `gauge_delta` | a change of a gauge (StatsD `+n`/`-n`) | added to the last value |
//! | `observation` | one measured value (StatsD timer/histogram/distribution); `weight` is how many it stands for (1 / sample rate) | count, sum, mean, min, max, percentiles |
//! | `histogram` | bucket counts observed since the last sample (OTLP, Prometheus histograms) | as observations, each bucket at its bounds' midpoint |
//! | `set` | one member of a set (StatsD `|s`) | distinct members per window |
//! | `error` | an error event with a message (the seed's `Error`) | count, rate |
//!
//! ## Topics
//!
//! A batch of samples travels on `metrics.<source>.<name>` where the name's
//! dots make tokens: StatsD `api.requests` from `web` is
//! `metrics.web.api.requests`, so `metrics.web.>` selects one service and
//! `metrics.*.api.>` one metric family everywhere. Characters a topic cannot
//! hold (whitespace, `*`, `>`, control characters) become `_` and empty tokens
//! become `_` in the topic only: the sample keeps its name as sent, and that
//! is the name the dashboard, the API and the alert rules use.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Labels of a series, sorted by key (so equal label sets compare equal).
pub type Labels = BTreeMap<String, String>;

/// The most bytes of a topic built from a source and a metric name; longer
/// names are cut (at a character boundary) in the topic only.
pub const MAX_TOPIC: usize = 512;

/// One measurement of one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The metric's name as sent (`http.server.duration`, `api.requests`).
    pub name: String,
    /// Its labels (StatsD tags, OTLP attributes, Prometheus labels).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// The kind and the value.
    #[serde(flatten)]
    pub value: Value,
    /// When it was measured, Unix milliseconds, if the sender said; else the
    /// event's own timestamp counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
}

/// What a sample measured. As JSON, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Value {
    /// An increment of a counter.
    Counter {
        /// How much it went up (a sampled StatsD counter is already scaled
        /// by its rate).
        value: f64,
    },
    /// The current value of a gauge.
    Gauge {
        /// The value.
        value: f64,
    },
    /// A change of a gauge's value (StatsD `+n` / `-n`).
    GaugeDelta {
        /// The change.
        value: f64,
    },
    /// One observed value (a timer, a histogram or distribution value).
    Observation {
        /// The value.
        value: f64,
        /// How many observations it stands for (1 / sample rate).
        #[serde(default = "one", skip_serializing_if = "is_one")]
        weight: f64,
    },
    /// Observations already bucketed by the sender, since its last report.
    Histogram {
        /// Upper bounds of the buckets, ascending; the last bucket has no
        /// upper bound (`counts` has one more entry than `bounds`).
        bounds: Vec<f64>,
        /// Observations per bucket.
        counts: Vec<u64>,
        /// Sum of the observations, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sum: Option<f64>,
        /// Smallest observation, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<f64>,
        /// Largest observation, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
    },
    /// One member of a set.
    Set {
        /// The member.
        member: String,
    },
    /// An error event.
    Error {
        /// What went wrong.
        message: String,
    },
}

fn one() -> f64 {
    1.0
}

fn is_one(w: &f64) -> bool {
    *w == 1.0
}

impl Value {
    /// The kind's name as in JSON (`counter`, `gauge`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Counter { .. } => "counter",
            Value::Gauge { .. } => "gauge",
            Value::GaugeDelta { .. } => "gauge_delta",
            Value::Observation { .. } => "observation",
            Value::Histogram { .. } => "histogram",
            Value::Set { .. } => "set",
            Value::Error { .. } => "error",
        }
    }
}

impl Sample {
    /// A sample of `name` with no labels and no time of its own.
    pub fn new(name: impl Into<String>, value: Value) -> Sample {
        Sample {
            name: name.into(),
            labels: Labels::new(),
            value,
            at_ms: None,
        }
    }

    /// With one more label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Sample {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The series this sample belongs to, as people write it:
    /// `name{key="value",…}` (just `name` without labels).
    pub fn series(&self) -> String {
        series_name(&self.name, &self.labels)
    }
}

/// Unix milliseconds of `t` (0 before 1970): the unit of [`Sample::at_ms`]
/// and of the monitor's JSON.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `name{key="value",…}`, Prometheus style (just `name` without labels).
pub fn series_name(name: &str, labels: &Labels) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let mut s = String::with_capacity(name.len() + 16 * labels.len());
    s.push_str(name);
    s.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '"' => s.push_str("\\\""),
                '\\' => s.push_str("\\\\"),
                '\n' => s.push_str("\\n"),
                // (No terminal escapes in what the dashboard prints.)
                c if c.is_control() => s.extend(c.escape_default()),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

/// Adds one topic token made of `text` to `out`: characters a topic cannot
/// hold become `_`, an empty text is `_`.
fn push_token(out: &mut String, text: &str) {
    if text.is_empty() {
        return out.push('_');
    }
    // Most names are plain ASCII: taken whole.
    if text
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>'))
    {
        return out.push_str(text);
    }
    out.extend(text.chars().map(|c| {
        if c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>') {
            '_'
        } else {
            c
        }
    }));
}

/// The topic of `name` from `source`: `metrics.<source>.<name tokens>`
/// (see the [module docs](self)).
pub fn topic_of(source: &str, name: &str) -> String {
    let mut t = String::with_capacity(9 + source.len() + name.len());
    t.push_str("metrics.");
    push_token(&mut t, source);
    for part in name.split('.') {
        if t.len() + 1 + part.len() > MAX_TOPIC {
            break;
        }
        t.push('.');
        push_token(&mut t, part);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use busline::{Pattern, Topic};

    #[test]
    fn topics_are_source_then_name_tokens() {
        assert_eq!(topic_of("web", "api.requests"), "metrics.web.api.requests");
        assert_eq!(
            topic_of("web", "http_requests_total"),
            "metrics.web.http_requests_total"
        );
        let t = Topic::new(&topic_of("web", "api.requests")).unwrap();
        assert!(Pattern::new("metrics.web.>").unwrap().matches(&t));
        assert!(Pattern::new("metrics.*.api.>").unwrap().matches(&t));
    }

    #[test]
    fn names_that_cannot_be_topics_still_make_valid_topics() {
        for (source, name) in [
            ("my service", "a..b"),
            ("", "x"),
            ("web", "."),
            ("web", "cpu*>load"),
            ("web", "tab\there"),
            ("w.e.b", "ok"),
            ("web", &"long.".repeat(400)),
        ] {
            let t = topic_of(source, name);
            assert!(Topic::new(&t).is_ok(), "{source:?} {name:?} -> {t:?}");
            assert!(t.len() <= MAX_TOPIC, "{t}");
        }
        assert_eq!(topic_of("my service", "a..b"), "metrics.my_service.a._.b");
        assert_eq!(topic_of("w.e.b", "ok"), "metrics.w_e_b.ok");
    }

    #[test]
    fn json_is_tagged_by_kind() {
        let s = Sample::new(
            "api.latency",
            Value::Observation {
                value: 12.5,
                weight: 1.0,
            },
        )
        .label("route", "/x");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"name":"api.latency","labels":{"route":"/x"},"kind":"observation","value":12.5}"#
        );
        let back: Sample = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn series_names_quote_label_values() {
        let s = Sample::new("up", Value::Gauge { value: 1.0 })
            .label("job", "a\"b")
            .label("instance", "h:1");
        assert_eq!(s.series(), r#"up{instance="h:1",job="a\"b"}"#);
        let esc = Sample::new("up", Value::Gauge { value: 1.0 }).label("t", "\u{1b}[2J");
        assert_eq!(esc.series(), r#"up{t="\u{1b}[2J"}"#);
    }
}
