//! Scraped families → [`Sample`]s.
//!
//! | family | samples |
//! | --- | --- |
//! | counter (`foo_total`), untyped `…_total` | `counter`: the increment since the last scrape ([`Cumulative`]: the first scrape is a baseline, a value below the last is a restart and counts whole) |
//! | gauge, other untyped | `gauge` |
//! | histogram (`_bucket`, `_count`, `_sum`) | one `histogram` per label set: the buckets' increments, the sum's |
//! | summary | a `gauge` per quantile (label `quantile`); `_count` and `_sum` as counters |
//!
//! `_created` lines (when a counter started) are not samples; NaN values
//! are skipped (a gauge with no value yet). A histogram whose buckets do not
//! add up is refused under a reason, the rest of the scrape is kept.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use super::parse::{Family, Kind, Line};
use crate::monitor::cumulative::{Buckets, Cumulative, Start, Step};
use crate::monitor::sample::{Labels, Sample, Value};

/// What one scrape gave.
#[derive(Debug, Default)]
pub struct Scraped {
    /// The samples.
    pub samples: Vec<Sample>,
    /// Lines taken (a counter's first sight is taken with no sample).
    pub accepted: u64,
    /// Lines refused, by reason.
    pub refused: BTreeMap<&'static str, u64>,
}

/// Converts one scrape's `families`, with `cum` holding the last totals.
pub fn convert(families: &[Family], cum: &mut Cumulative, now: Instant) -> Scraped {
    let mut out = Scraped::default();
    for f in families {
        match f.kind {
            Kind::Histogram => histograms(f, cum, now, &mut out),
            Kind::Summary => {
                for l in &f.lines {
                    if l.name == f.name {
                        gauge(l, &mut out);
                    } else {
                        counter(l, cum, now, &mut out);
                    }
                }
            }
            Kind::Counter => {
                for l in &f.lines {
                    counter(l, cum, now, &mut out);
                }
            }
            Kind::Gauge | Kind::Untyped => {
                for l in &f.lines {
                    if f.kind == Kind::Untyped && l.name.ends_with("_total") {
                        counter(l, cum, now, &mut out);
                    } else {
                        gauge(l, &mut out);
                    }
                }
            }
        }
    }
    out
}

fn key(name: &str, labels: &Labels) -> String {
    let mut k = name.to_owned();
    for (n, v) in labels {
        let _ = write!(k, "\u{1}{n}\u{2}{v}");
    }
    k
}

fn gauge(l: &Line, out: &mut Scraped) {
    out.accepted += 1;
    if !l.value.is_nan() {
        out.samples.push(sample(
            &l.name,
            l.labels.clone(),
            Value::Gauge { value: l.value },
        ));
    }
}

fn counter(l: &Line, cum: &mut Cumulative, now: Instant, out: &mut Scraped) {
    if l.name.ends_with("_created") {
        out.accepted += 1;
        return;
    }
    if !l.value.is_finite() || l.value < 0.0 {
        *out.refused
            .entry("a counter that is negative or not a finite number")
            .or_default() += 1;
        return;
    }
    match cum.counter(&key(&l.name, &l.labels), l.value, Start::Unknown, now) {
        Step::Full => {
            *out.refused
                .entry("too many cumulative series tracked")
                .or_default() += 1
        }
        step => {
            out.accepted += 1;
            if let Some(value) = step.increment() {
                out.samples
                    .push(sample(&l.name, l.labels.clone(), Value::Counter { value }));
            }
        }
    }
}

fn sample(name: &str, labels: Labels, value: Value) -> Sample {
    Sample {
        name: name.to_owned(),
        labels,
        value,
        at_ms: None,
    }
}

/// A histogram's lines of one label set.
#[derive(Default)]
struct Parts {
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: Option<f64>,
    lines: u64,
}

fn histograms(f: &Family, cum: &mut Cumulative, now: Instant, out: &mut Scraped) {
    let mut by_labels: BTreeMap<Labels, Parts> = BTreeMap::new();
    for l in &f.lines {
        let suffix = &l.name[f.name.len().min(l.name.len())..];
        let mut labels = l.labels.clone();
        let le = labels.remove("le");
        let p = by_labels.entry(labels).or_default();
        p.lines += 1;
        match (suffix, le) {
            ("_bucket", Some(le)) => match le
                .parse::<f64>()
                .ok()
                .or((le == "+Inf").then_some(f64::INFINITY))
            {
                Some(bound) => p.buckets.push((bound, l.value)),
                None => p.buckets.push((f64::NAN, l.value)),
            },
            ("_count", _) => p.count = Some(l.value),
            ("_sum", _) => p.sum = Some(l.value),
            // `_created`, `_gcount`, `_gsum`: not samples.
            _ => {}
        }
    }
    for (labels, p) in by_labels {
        let lines = p.lines;
        let Some(total) = buckets(p) else {
            *out.refused
                .entry("a histogram whose buckets do not add up")
                .or_default() += lines;
            continue;
        };
        match cum.histogram(&key(&f.name, &labels), total, Start::Unknown, now) {
            Step::Full => {
                *out.refused
                    .entry("too many cumulative series tracked")
                    .or_default() += lines
            }
            Step::Rebased => {
                *out.refused
                    .entry("a histogram that changed its buckets (taken as the new baseline)")
                    .or_default() += lines
            }
            step => {
                out.accepted += lines;
                if let Some(b) = step.increment() {
                    out.samples.push(sample(
                        &f.name,
                        labels,
                        Value::Histogram {
                            bounds: b.bounds,
                            counts: b.counts,
                            sum: b.sum,
                            min: None,
                            max: None,
                        },
                    ));
                }
            }
        }
    }
}

/// `le`-cumulative buckets as per-bucket counts; `None` unless the bounds
/// are numbers, the counts whole and never falling, and `+Inf` is there
/// (or `_count` stands for it).
fn buckets(mut p: Parts) -> Option<Buckets> {
    if p.buckets
        .iter()
        .any(|(b, c)| b.is_nan() || !c.is_finite() || *c < 0.0 || c.fract() != 0.0)
    {
        return None;
    }
    p.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let inf = match p.buckets.last() {
        Some((b, c)) if b.is_infinite() => {
            let c = *c;
            p.buckets.pop();
            c
        }
        _ => p.count?,
    };
    let mut counts = Vec::with_capacity(p.buckets.len() + 1);
    let mut below = 0.0;
    for (_, c) in &p.buckets {
        if *c < below {
            return None;
        }
        counts.push((*c - below) as u64);
        below = *c;
    }
    if inf < below {
        return None;
    }
    counts.push((inf - below) as u64);
    Some(Buckets {
        bounds: p.buckets.iter().map(|(b, _)| *b).collect(),
        counts,
        sum: p.sum.filter(|s| s.is_finite()),
    })
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::*;

    fn scrape(cum: &mut Cumulative, text: &str) -> Scraped {
        convert(&parse(text).unwrap(), cum, Instant::now())
    }

    const HIST: &str = "# TYPE lat histogram\nlat_bucket{le=\"1\"} A\nlat_bucket{le=\"5\"} B\nlat_bucket{le=\"+Inf\"} C\nlat_count C\nlat_sum S\n";

    fn hist(a: u32, b: u32, c: u32, s: f64) -> String {
        HIST.replace('A', &a.to_string())
            .replace('B', &b.to_string())
            .replace('C', &c.to_string())
            .replace('S', &s.to_string())
    }

    #[test]
    fn counters_become_increments_and_a_restart_counts_whole() {
        let mut cum = Cumulative::default();
        let text = |n: u32| {
            format!("# TYPE req counter\nreq_total{{code=\"200\"}} {n}\nreq_created{{code=\"200\"}} 1.7e9\n# TYPE t gauge\nt 3\n")
        };
        let first = scrape(&mut cum, &text(10));
        assert_eq!(first.samples.len(), 1, "the first scrape is a baseline");
        assert_eq!(first.accepted, 3);
        let next = scrape(&mut cum, &text(14));
        assert_eq!(next.samples[0].value, Value::Counter { value: 4.0 });
        assert_eq!(next.samples[0].labels["code"], "200");
        let restarted = scrape(&mut cum, &text(2));
        assert_eq!(restarted.samples[0].value, Value::Counter { value: 2.0 });
    }

    #[test]
    fn histograms_become_bucket_increments() {
        let mut cum = Cumulative::default();
        assert!(scrape(&mut cum, &hist(1, 2, 3, 4.0)).samples.is_empty());
        let s = scrape(&mut cum, &hist(2, 5, 7, 10.5));
        assert_eq!(
            s.samples[0].value,
            Value::Histogram {
                bounds: vec![1.0, 5.0],
                counts: vec![1, 2, 1],
                sum: Some(6.5),
                min: None,
                max: None
            }
        );
        let bad = scrape(&mut cum, &hist(5, 2, 7, 1.0));
        assert_eq!(bad.refused["a histogram whose buckets do not add up"], 5);
    }
}
