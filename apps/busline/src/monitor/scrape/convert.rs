//! Scraped families → [`Sample`]s.
//!
//! | family | samples |
//! | --- | --- |
//! | counter (`foo_total`), untyped `…_total` | `counter`: the increment since the last scrape ([`Cumulative`]: the first scrape is a baseline, a value below the last is a restart and counts whole) |
//! | gauge, other untyped | `gauge` |
//! | histogram (`_bucket`, `_count`, `_sum`) | one `histogram` per label set: the buckets' increments, the sum's |
//! | summary | a `gauge` per quantile (label `quantile`); `_count` and `_sum` as counters |
//!
//! `_created` lines (when a counter, histogram or summary started, Unix
//! seconds) are no samples: they are the series' start time, so a restart
//! is seen even when the new total already passed the old one, and a series
//! created after the monitor started counts whole at first sight. Without
//! one, a series that first shows in a later scrape of the target counts
//! whole too (it appeared since the last scrape); in the first scrape every
//! total is a baseline. NaN gauges are skipped (no value yet). A histogram whose buckets do not
//! add up is refused under a reason, the rest of the scrape is kept.

use std::collections::{BTreeMap, HashMap};
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

/// Converts one scrape's `families`, with `cum` holding the last totals;
/// `seen_before`: an earlier scrape of the target worked.
pub fn convert(
    families: &[Family],
    cum: &mut Cumulative,
    now: Instant,
    seen_before: bool,
) -> Scraped {
    let mut out = Scraped::default();
    let starts = Starts::of(families, seen_before);
    let cx = (&starts, now);
    for f in families {
        match f.kind {
            Kind::Histogram => histograms(f, cum, cx, &mut out),
            Kind::Summary => {
                for l in &f.lines {
                    if l.name == f.name {
                        gauge(l, &mut out);
                    } else {
                        counter(l, cum, cx, &mut out);
                    }
                }
            }
            Kind::Counter => {
                for l in &f.lines {
                    counter(l, cum, cx, &mut out);
                }
            }
            Kind::Gauge | Kind::Untyped => {
                for l in &f.lines {
                    if f.kind == Kind::Untyped && l.name.ends_with("_total") {
                        counter(l, cum, cx, &mut out);
                    } else {
                        gauge(l, &mut out);
                    }
                }
            }
        }
    }
    out
}

/// The start of each series that has a `_created` line.
struct Starts {
    created: HashMap<String, u64>,
    seen_before: bool,
}

impl Starts {
    fn of(families: &[Family], seen_before: bool) -> Starts {
        let mut created = HashMap::new();
        for l in families.iter().flat_map(|f| &f.lines) {
            if let Some(base) = l.name.strip_suffix("_created") {
                if l.value.is_finite() && l.value > 0.0 {
                    created.insert(key(base, &l.labels), (l.value * 1e9) as u64);
                }
            }
        }
        Starts {
            created,
            seen_before,
        }
    }

    /// The start of the series `base` (a name without `_total`, `_count`,
    /// `_sum`) with `labels`.
    fn of_series(&self, base: &str, labels: &Labels) -> Start {
        match self.created.get(&key(base, labels)) {
            Some(ns) => Start::At(*ns),
            None if self.seen_before => Start::Appeared,
            None => Start::Unknown,
        }
    }
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

fn counter(l: &Line, cum: &mut Cumulative, (starts, now): (&Starts, Instant), out: &mut Scraped) {
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
    let base = ["_total", "_count", "_sum"]
        .iter()
        .find_map(|s| l.name.strip_suffix(s))
        .unwrap_or(&l.name);
    let start = starts.of_series(base, &l.labels);
    match cum.counter(&key(&l.name, &l.labels), l.value, start, now) {
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

fn histograms(
    f: &Family,
    cum: &mut Cumulative,
    (starts, now): (&Starts, Instant),
    out: &mut Scraped,
) {
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
        let start = starts.of_series(&f.name, &labels);
        match cum.histogram(&key(&f.name, &labels), total, start, now) {
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
        let seen = cum_seen(cum);
        convert(&parse(text).unwrap(), cum, Instant::now(), seen)
    }

    /// Whether a scrape was converted before (the tests' cumulative state
    /// is new per target).
    fn cum_seen(cum: &Cumulative) -> bool {
        cum.len() > 0
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
        // A series that shows up in a later scrape counts whole.
        let more = format!("{}req_total{{code=\"500\"}} 3\n", text(2));
        let s = scrape(&mut cum, &more);
        let new = s
            .samples
            .iter()
            .find(|s| s.labels.get("code").map(String::as_str) == Some("500"));
        assert_eq!(new.unwrap().value, Value::Counter { value: 3.0 });
    }

    #[test]
    fn a_created_time_after_the_monitor_started_counts_whole_and_marks_restarts() {
        let mut cum = Cumulative::default();
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            + 1.0;
        let text = |n: u32, created: f64| {
            format!("# TYPE jobs_total counter\njobs_total 0\n# TYPE jobs counter\njobs_total{{q=\"a\"}} {n}\njobs_created{{q=\"a\"}} {created}\n")
        };
        let s = scrape(&mut cum, &text(4, now_s));
        let inc = |s: &Scraped| {
            s.samples
                .iter()
                .find(|s| !s.labels.is_empty())
                .map(|s| s.value.clone())
        };
        assert_eq!(inc(&s), Some(Value::Counter { value: 4.0 }));
        // Restarted and already past the old total: still a reset.
        let s = scrape(&mut cum, &text(9, now_s + 5.0));
        assert_eq!(inc(&s), Some(Value::Counter { value: 9.0 }));
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
