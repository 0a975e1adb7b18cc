//! The data points a request could not give, counted by reason for the
//! answer's `partial_success` and the ingest counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Refused data points by reason, with the first metric refused for each.
#[derive(Debug, Default)]
pub struct Rejected {
    /// Count and first metric name, by reason.
    pub by_reason: BTreeMap<&'static str, (u64, String)>,
}

impl Rejected {
    /// Counts `n` points of `metric` refused for `reason`.
    pub fn add(&mut self, reason: &'static str, metric: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.by_reason
            .entry(reason)
            .or_insert_with(|| (0, metric.to_owned()))
            .0 += n;
    }

    /// Data points refused, in all.
    pub fn total(&self) -> u64 {
        self.by_reason.values().map(|(n, _)| n).sum()
    }

    /// For `partial_success.error_message`: each reason with its count and
    /// the first metric it refused.
    pub fn message(&self) -> String {
        let mut s = String::new();
        for (i, (reason, (n, metric))) in self.by_reason.iter().enumerate() {
            if i > 0 {
                s.push_str("; ");
            }
            let _ = write!(
                s,
                "{n} data point(s) refused: {reason} (first: metric {metric:?})"
            );
        }
        s
    }
}
