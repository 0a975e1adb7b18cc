//! One conformance suite for every transport.
//!
//! Every way of running a bus — in memory, on the durable log, across
//! processes over NATS — runs the same behaviour tests through [`run`]. A
//! backend says what it promises in a [`Features`] struct; a test for a
//! feature it does not promise is skipped, and says so in the report.
//!
//! A backend provides a [`Harness`]: two bus handles (where events are
//! published, and where they are received; the same bus for the in-memory
//! backend, two processes' buses for a network transport), and, if it is
//! persistent, a way to restart.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use busline::conformance::{run, Features, MemoryHarness};
//! let report = run(&mut MemoryHarness::new(), Features::in_memory()).await;
//! assert!(report.failed.is_empty(), "{report}");
//! assert!(report.passed.contains(&"fan_out"));
//! # }
//! ```
//!
//! The harness a backend provides is in `harness.rs`; the cases, each a
//! sentence about what must hold, in `cases.rs` and (for keyed groups)
//! `keyed.rs`.

mod cases;
mod harness;
mod keyed;

use std::fmt;

pub use self::harness::{Harness, MemoryHarness};

/// The event the suite publishes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    /// Which publisher sent it.
    pub publisher: u32,
    /// Its number in that publisher's sequence.
    pub n: u64,
    /// Some bytes, to carry a payload.
    pub body: String,
}

/// What a backend promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Features {
    /// Events from one publisher arrive in publish order.
    pub ordered: bool,
    /// Events survive a restart and can be replayed.
    pub persistent: bool,
    /// Request/reply works across the harness's two sides.
    pub request_reply: bool,
    /// Queue groups deliver each event to exactly one member.
    pub queue_groups: bool,
    /// The receiving side sees the publisher's envelope metadata (id, source,
    /// correlation, causation, headers).
    pub metadata: bool,
}

impl Features {
    /// What the in-memory bus promises: everything but persistence.
    pub fn in_memory() -> Self {
        Features {
            ordered: true,
            persistent: false,
            request_reply: true,
            queue_groups: true,
            metadata: true,
        }
    }

    /// Everything.
    pub fn all() -> Self {
        Features {
            persistent: true,
            ..Self::in_memory()
        }
    }

    /// A copy with `persistent` set.
    pub fn with_persistent(mut self, on: bool) -> Self {
        self.persistent = on;
        self
    }

    /// A copy with `request_reply` set.
    pub fn with_request_reply(mut self, on: bool) -> Self {
        self.request_reply = on;
        self
    }

    /// A copy with `queue_groups` set.
    pub fn with_queue_groups(mut self, on: bool) -> Self {
        self.queue_groups = on;
        self
    }
}

/// What [`run`] found.
#[derive(Debug, Default)]
pub struct Report {
    /// Tests that passed.
    pub passed: Vec<&'static str>,
    /// Tests skipped, with the feature the backend does not promise.
    pub skipped: Vec<(&'static str, &'static str)>,
    /// Tests that failed, with what went wrong.
    pub failed: Vec<(&'static str, String)>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.passed {
            writeln!(f, "conformance {p}: passed")?;
        }
        for (t, why) in &self.skipped {
            writeln!(
                f,
                "conformance {t}: skipped (backend does not promise {why})"
            )?;
        }
        for (t, why) in &self.failed {
            writeln!(f, "conformance {t}: FAILED: {why}")?;
        }
        write!(
            f,
            "conformance: {} passed, {} failed, {} skipped",
            self.passed.len(),
            self.failed.len(),
            self.skipped.len()
        )
    }
}

/// Runs every test the backend's features allow.
pub async fn run<H: Harness>(h: &mut H, features: Features) -> Report {
    let mut r = Report::default();
    macro_rules! case {
        ($name:literal, $cond:expr, $why:literal, $body:expr) => {
            if $cond {
                match $body.await {
                    Ok(()) => r.passed.push($name),
                    Err(e) => r.failed.push(($name, e)),
                }
            } else {
                r.skipped.push(($name, $why));
            }
        };
    }
    case!("fan_out", true, "", cases::fan_out(h));
    case!("wildcards", true, "", cases::wildcards(h));
    case!(
        "ordered_per_publisher",
        features.ordered,
        "ordering",
        cases::ordered(h)
    );
    case!(
        "metadata",
        features.metadata,
        "metadata",
        cases::metadata(h)
    );
    case!(
        "request_reply",
        features.request_reply,
        "request/reply",
        cases::request_reply(h)
    );
    case!(
        "queue_group",
        features.queue_groups,
        "queue groups",
        cases::queue_group(h)
    );
    case!(
        "keyed_group",
        features.queue_groups,
        "queue groups",
        keyed::keyed_group(h)
    );
    case!(
        "persistence",
        features.persistent,
        "persistence",
        cases::persistence(h)
    );
    case!(
        "keyed_group_resumes",
        features.persistent && features.queue_groups,
        "persistence and queue groups",
        keyed::keyed_group_resumes(h)
    );
    r
}
