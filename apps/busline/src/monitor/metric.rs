//! The monitor's event: one metric from a service.
//!
//! | variant | topic |
//! | --- | --- |
//! | `Request { path, latency_ms, status }` | `metrics.web.request` |
//! | `DbQuery { query, duration_ms }` | `metrics.db.query` |
//! | `Error { source, message }` | `metrics.<source>.error` (`metrics.web.error`, `metrics.db.error`, …) |
//!
//! As JSON (the web API, the JSON Lines log) a metric is an object tagged by
//! `type`: `{"type":"request","path":"/api/data","latency_ms":42,"status":200}`,
//! `{"type":"db_query","query":"SELECT 1","duration_ms":3.5}`,
//! `{"type":"error","source":"web","message":"upstream timeout"}`.
//! [`ingest`](super::ingest) parses and validates that form.
//!
//! Every other metric — whatever StatsD, OTLP, a Prometheus scrape or the
//! JSON API's generic form brings — is a [`Metric::Samples`]: a batch of
//! [`Sample`]s of one source on one topic, `metrics.<source>.<name tokens>`
//! (see [`sample`](super::sample)). The StatsD listener sends the same as a
//! [`Metric::Runs`]: the samples of each series in a burst carried once (see
//! [`run`](mod@super::run)). [`Metric::for_each_sample`] and [`Metric::samples`]
//! give every metric, the seed's three shapes included, as samples.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::run::Run;
use super::sample::{topic_of, Sample, Value};

/// A metric emitted by a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Metric {
    /// An HTTP request served by a web service.
    Request {
        /// The request path, e.g. `/api/data`.
        path: String,
        /// Time to serve it, in milliseconds.
        latency_ms: f64,
        /// The HTTP status it got.
        status: u16,
    },
    /// A database query.
    DbQuery {
        /// The query text.
        query: String,
        /// Time it took, in milliseconds.
        duration_ms: f64,
    },
    /// An error reported by a service.
    Error {
        /// The service that failed: one topic token (`web`, `db`, …).
        source: String,
        /// What went wrong.
        message: String,
    },
    /// Samples from one source that share one topic (one StatsD datagram's
    /// lines of one metric, one OTLP request's points of one metric, …).
    Samples {
        /// The service that sent them.
        source: String,
        /// The samples, at least one; all of them have names that map to
        /// the same topic.
        samples: Vec<Sample>,
    },
    /// Runs of samples from one source that share one topic: each run the
    /// samples of one series in order (a burst of StatsD datagrams).
    Runs {
        /// The service that sent them.
        source: String,
        /// The runs, at least one; all of them have names that map to the
        /// same topic.
        runs: Vec<Run>,
    },
}

impl busline::Event for Metric {
    fn topic(&self) -> Cow<'_, str> {
        match self {
            Metric::Request { .. } => Cow::Borrowed("metrics.web.request"),
            Metric::DbQuery { .. } => Cow::Borrowed("metrics.db.query"),
            Metric::Error { source, .. } => match source.as_str() {
                "web" => Cow::Borrowed("metrics.web.error"),
                "db" => Cow::Borrowed("metrics.db.error"),
                other => Cow::Owned(format!("metrics.{other}.error")),
            },
            Metric::Samples { source, samples } => Cow::Owned(topic_of(
                source,
                samples.first().map(|s| s.name.as_str()).unwrap_or(""),
            )),
            Metric::Runs { source, runs } => Cow::Owned(topic_of(
                source,
                runs.first().map(|r| r.name.as_str()).unwrap_or(""),
            )),
        }
    }
}

impl Metric {
    /// A message carrying this metric on its topic, from `source`.
    pub fn message(self, source: &'static str) -> busline::Message<Metric> {
        use busline::Event as _;
        let topic = self.topic().into_owned();
        busline::Message::new(self).topic(topic).source(source)
    }

    /// `samples` of `source` as metrics, one per topic, each keeping the
    /// samples' order.
    pub fn batches(source: &str, samples: Vec<Sample>) -> Vec<Metric> {
        let mut by_topic: Vec<(String, Vec<Sample>)> = Vec::new();
        // Index in `by_topic` of the last sample's name (runs of one name
        // are common: one metric's points).
        let mut last: Option<usize> = None;
        for s in samples {
            if let Some(i) =
                last.filter(|i| by_topic[*i].1.last().is_some_and(|l| l.name == s.name))
            {
                by_topic[i].1.push(s);
                continue;
            }
            let topic = topic_of(source, &s.name);
            match by_topic.iter().position(|(t, _)| *t == topic) {
                Some(i) => {
                    by_topic[i].1.push(s);
                    last = Some(i);
                }
                None => {
                    by_topic.push((topic, vec![s]));
                    last = Some(by_topic.len() - 1);
                }
            }
        }
        by_topic
            .into_iter()
            .map(|(_, samples)| Metric::Samples {
                source: source.to_owned(),
                samples,
            })
            .collect()
    }

    /// The service that sent it.
    pub fn source(&self) -> &str {
        match self {
            Metric::Request { .. } => "web",
            Metric::DbQuery { .. } => "db",
            Metric::Error { source, .. }
            | Metric::Samples { source, .. }
            | Metric::Runs { source, .. } => source,
        }
    }

    /// It as samples: a request is an observation of `request.latency_ms`
    /// labelled with its `path` and `status`; a query one of
    /// `db.query.duration_ms` (the query text is no label: it would make a
    /// series per query); an error an `error` sample with its message.
    pub fn samples(&self) -> Cow<'_, [Sample]> {
        match self {
            Metric::Request {
                path,
                latency_ms,
                status,
            } => Cow::Owned(vec![Sample::new(
                "request.latency_ms",
                Value::Observation {
                    value: *latency_ms,
                    weight: 1.0,
                },
            )
            .label("path", path.as_str())
            .label("status", status.to_string())]),
            Metric::DbQuery { duration_ms, .. } => Cow::Owned(vec![Sample::new(
                "db.query.duration_ms",
                Value::Observation {
                    value: *duration_ms,
                    weight: 1.0,
                },
            )]),
            Metric::Error { message, .. } => Cow::Owned(vec![Sample::new(
                "error",
                Value::Error {
                    message: message.clone(),
                },
            )]),
            Metric::Samples { samples, .. } => Cow::Borrowed(samples),
            Metric::Runs { runs, .. } => Cow::Owned(runs.iter().flat_map(Run::samples).collect()),
        }
    }

    /// Calls `f` with each of its samples, in order, as [`Metric::samples`]
    /// gives them but without copying a run's name and labels per sample.
    pub fn for_each_sample(&self, mut f: impl FnMut(&Sample)) {
        match self {
            Metric::Samples { samples, .. } => samples.iter().for_each(f),
            Metric::Runs { runs, .. } => runs.iter().for_each(|r| r.for_each_sample(&mut f)),
            m => m.samples().iter().for_each(f),
        }
    }

    /// How many samples it carries (a seed shape is one).
    pub fn sample_count(&self) -> usize {
        match self {
            Metric::Samples { samples, .. } => samples.len(),
            Metric::Runs { runs, .. } => runs.iter().map(|r| r.values.len()).sum(),
            _ => 1,
        }
    }
}

/// Like `Debug`, but numbers print the short way (`latency_ms: 42`, not `42.0`;
/// `latency_ms: 1.25` stays exact).
impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::Request {
                path,
                latency_ms,
                status,
            } => write!(
                f,
                "Request {{ path: {path:?}, latency_ms: {latency_ms}, status: {status} }}"
            ),
            Metric::DbQuery { query, duration_ms } => write!(
                f,
                "DbQuery {{ query: {query:?}, duration_ms: {duration_ms} }}"
            ),
            Metric::Error { source, message } => {
                write!(f, "Error {{ source: {source:?}, message: {message:?} }}")
            }
            Metric::Samples { .. } | Metric::Runs { .. } => {
                write!(f, "Samples {{ source: {:?}", self.source())?;
                let mut out = Ok(());
                self.for_each_sample(|s| {
                    if out.is_ok() {
                        out = write_sample(f, s);
                    }
                });
                out?;
                f.write_str(" }")
            }
        }
    }
}

/// `, name{labels} kind value` of one sample, as [`Metric`]'s `Display` shows it.
fn write_sample(f: &mut fmt::Formatter<'_>, s: &Sample) -> fmt::Result {
    write!(f, ", {} {} ", s.series(), s.value.kind())?;
    match &s.value {
        Value::Counter { value } | Value::Gauge { value } | Value::GaugeDelta { value } => {
            write!(f, "{value}")
        }
        Value::Observation { value, weight } if *weight == 1.0 => write!(f, "{value}"),
        Value::Observation { value, weight } => write!(f, "{value} x{weight}"),
        Value::Histogram { counts, .. } => write!(
            f,
            "{} in {} buckets",
            counts.iter().map(|c| *c as f64).sum::<f64>(),
            counts.len()
        ),
        Value::Set { member } => write!(f, "{member:?}"),
        Value::Error { message } => write!(f, "{message:?}"),
    }
}

/// Milliseconds for people: from 10 up rounded to whole numbers, below with up to two decimals.
#[derive(Debug, Clone, Copy)]
pub struct Ms(pub f64);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v.fract() == 0.0 || v >= 10.0 {
            write!(f, "{}", v.round())
        } else {
            let s = format!("{:.2}", v);
            f.write_str(s.trim_end_matches('0').trim_end_matches('.'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use busline::Event;

    #[test]
    fn topics() {
        let r = Metric::Request {
            path: "/a".into(),
            latency_ms: 1.0,
            status: 200,
        };
        assert_eq!(r.topic(), "metrics.web.request");
        let q = Metric::DbQuery {
            query: "SELECT 1".into(),
            duration_ms: 1.0,
        };
        assert_eq!(q.topic(), "metrics.db.query");
        let e = |s: &str| Metric::Error {
            source: s.into(),
            message: "x".into(),
        };
        assert_eq!(e("web").topic(), "metrics.web.error");
        assert_eq!(e("db").topic(), "metrics.db.error");
        assert_eq!(e("cache").topic(), "metrics.cache.error");
    }

    #[test]
    fn display_is_short() {
        let r = Metric::Request {
            path: "/api/data".into(),
            latency_ms: 42.0,
            status: 200,
        };
        assert_eq!(
            r.to_string(),
            r#"Request { path: "/api/data", latency_ms: 42, status: 200 }"#
        );
        assert_eq!(Ms(3.25).to_string(), "3.25");
        let q = Metric::DbQuery {
            query: "SELECT 1".into(),
            duration_ms: 1.25,
        };
        assert_eq!(
            q.to_string(),
            r#"DbQuery { query: "SELECT 1", duration_ms: 1.25 }"#
        );
        assert_eq!(Ms(3.5).to_string(), "3.5");
        assert_eq!(Ms(12.5).to_string(), "13");
        assert_eq!(Ms(123.4).to_string(), "123");
    }

    #[test]
    fn batches_are_one_per_topic_in_order() {
        let g = |name: &str, v: f64| Sample::new(name, Value::Gauge { value: v });
        let batches = Metric::batches(
            "web",
            vec![
                g("a", 1.0),
                g("a", 2.0),
                g("b", 3.0),
                g("a b", 4.0),
                g("a_b", 5.0),
                g("a", 6.0),
            ],
        );
        let got: Vec<(String, Vec<f64>)> = batches
            .iter()
            .map(|m| {
                let vals = m
                    .samples()
                    .iter()
                    .map(|s| match s.value {
                        Value::Gauge { value } => value,
                        _ => unreachable!(),
                    })
                    .collect();
                (m.topic().into_owned(), vals)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("metrics.web.a".to_owned(), vec![1.0, 2.0, 6.0]),
                ("metrics.web.b".to_owned(), vec![3.0]),
                ("metrics.web.a_b".to_owned(), vec![4.0, 5.0]),
            ]
        );
    }

    #[test]
    fn json_shape() {
        let e = Metric::Error {
            source: "db".into(),
            message: "down".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"error","source":"db","message":"down"}"#
        );
    }
}
