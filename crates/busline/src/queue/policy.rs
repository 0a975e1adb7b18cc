//! A subscriber's delivery policy, and its filter.

use std::fmt;
use std::sync::Arc;

use crate::envelope::Envelope;
#[cfg(doc)]
use crate::error::RecvError;

/// A predicate run by the publisher on each matching event; `false` skips this
/// subscriber (counted as `filtered`).
pub type Filter<T> = Arc<dyn Fn(&Envelope<T>) -> bool + Send + Sync>;

/// A subscriber's delivery policy.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Policy {
    /// Bounded queue; publishers wait for room (backpressure). Never drops.
    Lossless,
    /// Bounded queue; when full the oldest event is dropped and the subscriber
    /// is told [`RecvError::Lagged`] with the exact count. Publishers never wait.
    Lossy,
    /// Only the newest event per topic is kept (watch semantics).
    Latest,
    /// Competing consumers: each event goes to exactly one member of the named
    /// group. The group's queue is lossless (publishers wait for room).
    Queue(String),
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Lossless => f.write_str("lossless"),
            Policy::Lossy => f.write_str("lossy"),
            Policy::Latest => f.write_str("latest"),
            Policy::Queue(g) => write!(f, "queue({g})"),
        }
    }
}
