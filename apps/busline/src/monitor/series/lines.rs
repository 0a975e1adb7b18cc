//! The lines the 1 s terminal summary adds under the seed's three: the
//! busiest other series, and what ingest refused or lost.
//!
//! ```text
//! [dashboard] === 1s summary ===
//!   Requests: 10, avg latency: 87ms (p50 80ms, p99 190ms)
//!   DB queries: 5, avg: 15ms (p99 31ms)
//!   Errors: 1 (4 in the last minute)
//!   checkout/orders.placed{region="eu"} rate 12/s
//!   checkout/http.server.duration rate 40/s, mean 23, p99 120
//!   Ingest: statsd 3 malformed (no type: 2, bad value: 1), 5 dropped by the kernel
//! ```
//!
//! The seed's metrics (the simulated requests, queries and errors) are in
//! the three lines already and are not repeated; with only them, the summary
//! is exactly the seed's. The ingest line appears only when something was
//! malformed, dropped by the kernel, over `--max-series`, too old, missed or
//! a scrape target is down.

use std::fmt::Write as _;

use super::{SeriesView, StoreView};
use crate::monitor::ingest_status::IngestSnapshot;
use crate::monitor::metric::Ms;

/// How many of the busiest other series the summary shows.
pub const BUSIEST: usize = 5;
/// The longest series name a line shows (longer ones are cut).
const NAME_CHARS: usize = 72;

/// Whether `s` is one of the seed's metrics (shown in its three lines).
pub fn is_seed(s: &SeriesView) -> bool {
    matches!(
        (s.source.as_str(), s.name.as_str()),
        ("web", "request.latency_ms") | ("db", "db.query.duration_ms")
    ) || (s.kind == "error" && s.name == "error")
}

/// The busiest series that are not the seed's, busiest first (by the last
/// second's rate, then the minute's); idle ones left out.
pub fn busiest(view: &StoreView, n: usize) -> Vec<&SeriesView> {
    let mut v: Vec<&SeriesView> = view
        .series
        .iter()
        .filter(|s| !is_seed(s) && s.minute.count > 0.0)
        .collect();
    // (total_cmp: a NaN rate, from inf + -inf, still sorts somewhere.)
    v.sort_by(|a, b| {
        b.second
            .rate
            .total_cmp(&a.second.rate)
            .then(b.minute.rate.total_cmp(&a.minute.rate))
    });
    v.truncate(n);
    v
}

/// One series, compact: `  source/name{labels} rate N/s, …`.
pub fn line(s: &SeriesView) -> String {
    let mut name = format!("{}/{}", s.source, s.series);
    if name.chars().count() > NAME_CHARS {
        name = name.chars().take(NAME_CHARS - 1).collect::<String>() + "…";
    }
    let mut out = format!("  {name} rate {}/s", Ms(s.second.rate));
    let st = &s.second;
    match s.kind {
        "gauge" => {
            if let Some(v) = s.value {
                let _ = write!(out, ", value {}", Ms(v));
            }
        }
        "observation" | "histogram" => {
            if let (Some(m), Some(p)) = (st.mean, st.p99) {
                let _ = write!(out, ", mean {}, p99 {}", Ms(m), Ms(p));
            }
        }
        "set" => {
            if let Some(d) = st.distinct {
                let _ = write!(out, ", distinct {d}");
            }
        }
        _ => {}
    }
    out.push('\n');
    out
}

/// The lines under the seed's three: the busiest other series, then the
/// ingest line if anything went wrong. Empty when there is nothing to add.
pub fn render(view: Option<&StoreView>, ingest: &IngestSnapshot, missed: u64) -> String {
    let mut out = String::new();
    if let Some(v) = view {
        for s in busiest(v, BUSIEST) {
            out.push_str(&line(s));
        }
    }
    let problems = problems(view, ingest, missed);
    if !problems.is_empty() {
        let _ = writeln!(out, "  Ingest: {}", problems.join("; "));
    }
    out
}

/// What ingest refused or lost, one phrase each (none when all is well).
pub fn problems(view: Option<&StoreView>, ingest: &IngestSnapshot, missed: u64) -> Vec<String> {
    let mut out = Vec::new();
    for (name, p) in [
        ("statsd", &ingest.statsd),
        ("otlp", &ingest.otlp),
        ("api", &ingest.api),
        ("scrape", &ingest.scrape),
    ] {
        let mut parts = Vec::new();
        if p.malformed > 0 {
            let reasons: Vec<String> = p
                .malformed_by_reason
                .iter()
                .map(|(r, n)| format!("{r}: {n}"))
                .collect();
            parts.push(format!(
                "{} malformed ({})",
                p.malformed,
                reasons.join(", ")
            ));
        }
        if p.kernel_dropped > 0 {
            parts.push(format!("{} dropped by the kernel", p.kernel_dropped));
        }
        if !parts.is_empty() {
            out.push(format!("{name} {}", parts.join(", ")));
        }
    }
    let down: Vec<&str> = ingest
        .targets
        .iter()
        .filter(|t| !t.up)
        .map(|t| t.url.as_str())
        .collect();
    if !down.is_empty() {
        out.push(format!("scrape targets down: {}", down.join(", ")));
    }
    if let Some(v) = view {
        let o = &v.overflow;
        if o.samples > 0 {
            let mut names: Vec<(&String, &u64)> = o.by_name.iter().collect();
            names.sort_by(|a, b| b.1.cmp(a.1));
            let top: Vec<String> = names
                .iter()
                .take(3)
                .map(|(n, c)| format!("{n}: {c}"))
                .collect();
            out.push(format!(
                "{} samples of new series over --max-series {} ({})",
                o.samples,
                o.max_series,
                top.join(", ")
            ));
        }
        if v.too_old > 0 {
            out.push(format!("{} samples older than a minute", v.too_old));
        }
        if v.bad_histograms > 0 {
            out.push(format!(
                "{} histograms whose counts do not fit their bounds",
                v.bad_histograms
            ));
        }
    }
    if missed > 0 {
        out.push(format!("series store missed {missed} events"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::Store;
    use super::*;
    use crate::monitor::metric::Metric;
    use crate::monitor::sample::{Sample, Value};

    const NOW: u64 = 2_000_000_000;

    /// Series whose rate is NaN (inf + -inf increments) sort without a
    /// panic and leave the others in order.
    #[test]
    fn nan_rates_sort_in_a_total_order() {
        let mut st = Store::new(1000);
        let mut samples = Vec::new();
        for i in 0..300 {
            let c = |v| Sample::new("c", Value::Counter { value: v }).label("i", i.to_string());
            if i % 3 == 0 {
                samples.extend([c(f64::INFINITY), c(f64::NEG_INFINITY)]);
            } else {
                samples.push(c(((i * 7919) % 300) as f64));
            }
        }
        let metric = Metric::Samples {
            source: "w".into(),
            samples,
        };
        st.record(&metric, NOW - 500, NOW - 500);
        let view = st.view(NOW);
        let rates: Vec<f64> = busiest(&view, 1000)
            .iter()
            .map(|s| s.second.rate)
            .filter(|r| !r.is_nan())
            .collect();
        assert_eq!(rates.len(), 200);
        assert!(rates.windows(2).all(|w| w[0] >= w[1]), "{rates:?}");
    }

    #[test]
    fn the_busiest_other_series_get_a_line_each() {
        let mut st = Store::new(3);
        let req = Metric::Request {
            path: "/".into(),
            latency_ms: 5.0,
            status: 200,
        };
        for _ in 0..50 {
            st.record(&req, NOW - 500, NOW - 500);
        }
        let mut samples = Vec::new();
        for i in 0..4 {
            samples.push(Sample::new("jobs.done", Value::Counter { value: 2.0 }));
            samples.push(Sample::new("queue.depth", Value::Gauge { value: i as f64 }));
        }
        samples.push(Sample::new("overflowing", Value::Counter { value: 1.0 }));
        st.record(
            &Metric::Samples {
                source: "worker".into(),
                samples,
            },
            NOW - 500,
            NOW - 500,
        );
        let view = st.view(NOW);
        let text = render(Some(&view), &IngestSnapshot::default(), 0);
        assert_eq!(
            text,
            "  worker/jobs.done rate 8/s\n  worker/queue.depth rate 4/s, value 3\n  \
             Ingest: 1 samples of new series over --max-series 3 (overflowing: 1)\n"
        );
        // Nothing to add: nothing at all.
        let mut quiet = Store::new(10);
        quiet.record(&req, NOW - 500, NOW - 500);
        let text = render(Some(&quiet.view(NOW)), &IngestSnapshot::default(), 0);
        assert_eq!(text, "");
    }

    #[test]
    fn the_ingest_line_names_what_was_refused() {
        let status = crate::monitor::ingest_status::IngestStatus::default();
        status.statsd.malformed("no type", "x:1", 2);
        status
            .statsd
            .kernel_dropped
            .store(5, std::sync::atomic::Ordering::Relaxed);
        let text = render(None, &status.snapshot(), 0);
        assert_eq!(
            text,
            "  Ingest: statsd 2 malformed (no type: 2), 5 dropped by the kernel\n"
        );
    }
}
