//! OTLP metrics → [`Sample`](crate::monitor::sample::Sample)s.
//!
//! | OTLP | sample |
//! | --- | --- |
//! | gauge | `gauge` |
//! | monotonic sum, delta | `counter` (the point's value is the increment) |
//! | monotonic sum, cumulative | `counter`, the increment since the last export ([`Cumulative`]) |
//! | non-monotonic sum, cumulative | `gauge` (the current value) |
//! | non-monotonic sum, delta | `gauge_delta` |
//! | histogram, delta | `histogram` (its buckets, sum, min, max) |
//! | histogram, cumulative | `histogram`, the buckets' increments since the last export |
//! | exponential histogram | as a histogram, its buckets' edges as explicit bounds |
//! | summary | a `gauge` per quantile (label `quantile`), `<name>_count` and `<name>_sum` counters |
//!
//! The resource's `service.name` is the source (`otlp` without one); a
//! point's attributes are its labels. The scope (meter) name is no label (it
//! would lengthen every series name), but it, the other resource attributes
//! and the name tell series apart for the cumulative state, so two instances
//! of one service do not look like each other's resets.
//!
//! A cumulative series seen for the first time is a baseline (no
//! increment: its total may hold hours from before the monitor watched),
//! unless its start time is after the monitor started, or its resource and
//! scope were in an earlier request (it appeared since): then its whole
//! total is the increment. A total that falls, or a new start time, is a
//! restart: the new total is the increment. See [`Cumulative`].
//!
//! A point that cannot be taken is counted under a reason and named in the
//! answer's `partial_success`; the other points of the request still count.

//!
//! The concepts, one file each: [`point`] (a metric's points by kind),
//! [`attributes`] (attributes as labels and keys), [`exponential`]
//! (exponential histograms as explicit buckets), [`batches`] (samples into
//! one event per source and topic), [`rejected`] (refused points by reason).

pub mod attributes;
pub mod batches;
pub mod exponential;
pub mod point;
pub mod rejected;

use std::time::Instant;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;

use crate::monitor::cumulative::Cumulative;
use crate::monitor::metric::Metric;
use attributes::{key_of, text};
use batches::Batches;
use point::{Point, Sender};
pub use rejected::Rejected;

/// The source of metrics whose resource has no `service.name`.
pub const DEFAULT_SOURCE: &str = "otlp";

/// What one request gave.
#[derive(Debug, Default)]
pub struct Converted {
    /// The samples as events, one per source and topic (in the order the
    /// topics first came), each with its topic.
    pub metrics: Vec<(String, Metric)>,
    /// Data points taken (a cumulative point's first sight is taken, and
    /// gives no sample).
    pub accepted: u64,
    /// Data points refused, by reason.
    pub rejected: Rejected,
}

/// Converts `req`, turning cumulative values into increments with `cum`.
/// The points' attributes are moved out of `req` into the samples' labels.
pub fn convert(
    req: &mut ExportMetricsServiceRequest,
    cum: &mut Cumulative,
    now: Instant,
) -> Converted {
    let mut out = Converted::default();
    let mut batches = Batches::default();
    let mut key = String::new();
    for rm in &mut req.resource_metrics {
        let attrs = rm
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let source = attrs
            .iter()
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref()))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_SOURCE.to_owned());
        let resource = key_of(attrs);
        for sm in &mut rm.scope_metrics {
            let scope = sm.scope.as_ref().map(|s| s.name.as_str()).unwrap_or("");
            // Series new in a later export of a sender seen before started
            // since: counted whole.
            let seen_before = cum.sender_seen(&format!("{source}\u{1}{resource}\u{1}{scope}"), now);
            let sender = Sender {
                source: &source,
                resource: &resource,
                scope,
                seen_before,
            };
            for m in &mut sm.metrics {
                // Only a summary's samples carry other names than the metric's.
                let summary = matches!(m.data, Some(Data::Summary(_)));
                let mut p = Point {
                    sender,
                    name: &m.name,
                    cum: &mut *cum,
                    now,
                    out: Vec::new(),
                    accepted: 0,
                    rejected: &mut out.rejected,
                    key: &mut key,
                    prefix: None,
                };
                p.metric(&mut m.data);
                out.accepted += p.accepted;
                if summary {
                    batches.add(&source, p.out);
                } else {
                    batches.add_one_name(&source, p.out);
                }
            }
        }
    }
    out.metrics = batches.into_events();
    out
}
