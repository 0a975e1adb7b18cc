//! What the ingest listeners took in, refused and lost: the counters the
//! terminal, the full-screen view, the web page and `/api/summary` show.
//!
//! Each protocol (`statsd`, `otlp`, `api`, `scrape`) has a [`Protocol`] of
//! counters: units received (datagrams, requests, scrapes), samples accepted,
//! malformed input counted by reason with the first few examples kept, and
//! what the kernel dropped before the monitor could read it (UDP). Scrape
//! targets each have a [`Target`] with their up/down state.
//!
//! Nothing here is lost silently: every line or data point a listener is
//! handed is either accepted, or counted as malformed under a reason, or (for
//! UDP) counted among the kernel's drops.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::Serialize;

/// How many examples of malformed input each protocol keeps.
pub const EXAMPLES: usize = 8;
/// The longest example kept, in bytes (longer ones are cut).
pub const EXAMPLE_BYTES: usize = 200;

/// The counters of one protocol.
#[derive(Debug, Default)]
pub struct Protocol {
    /// Datagrams, requests or scrapes received.
    pub received: AtomicU64,
    /// Samples (lines, data points) accepted.
    pub accepted: AtomicU64,
    /// Datagrams (StatsD) the kernel dropped because the monitor fell behind.
    pub kernel_dropped: AtomicU64,
    malformed: Mutex<Malformed>,
}

#[derive(Debug, Default)]
struct Malformed {
    by_reason: BTreeMap<String, u64>,
    examples: VecDeque<Example>,
}

/// One example of malformed input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    /// Why it was refused.
    pub reason: String,
    /// The input (cut at [`EXAMPLE_BYTES`]).
    pub input: String,
}

/// A [`Protocol`]'s counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProtocolSnapshot {
    /// Datagrams, requests or scrapes received.
    pub received: u64,
    /// Samples accepted.
    pub accepted: u64,
    /// Malformed input, in all.
    pub malformed: u64,
    /// Malformed input by reason.
    pub malformed_by_reason: BTreeMap<String, u64>,
    /// The first examples of malformed input.
    pub examples: Vec<Example>,
    /// Datagrams the kernel dropped.
    pub kernel_dropped: u64,
}

impl Protocol {
    /// Counts `n` malformed inputs refused for `reason`, keeping `input` as an
    /// example while fewer than [`EXAMPLES`] are kept.
    pub fn malformed(&self, reason: &str, input: &str, n: u64) {
        let mut m = self.malformed.lock();
        match m.by_reason.get_mut(reason) {
            Some(c) => *c += n,
            None => {
                m.by_reason.insert(reason.to_owned(), n);
            }
        }
        if m.examples.len() < EXAMPLES {
            let mut cut = input.len().min(EXAMPLE_BYTES);
            while !input.is_char_boundary(cut) {
                cut -= 1;
            }
            m.examples.push_back(Example {
                reason: reason.to_owned(),
                input: input[..cut].to_owned(),
            });
        }
    }

    /// The counters now.
    pub fn snapshot(&self) -> ProtocolSnapshot {
        let m = self.malformed.lock();
        ProtocolSnapshot {
            received: self.received.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            malformed: m.by_reason.values().sum(),
            malformed_by_reason: m.by_reason.clone(),
            examples: m.examples.iter().cloned().collect(),
            kernel_dropped: self.kernel_dropped.load(Ordering::Relaxed),
        }
    }
}

/// A Prometheus scrape target's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Target {
    /// The URL scraped.
    pub url: String,
    /// Whether the last scrape succeeded.
    pub up: bool,
    /// Why the last scrape failed, if it did.
    pub last_error: Option<String>,
    /// When it was last scraped, Unix milliseconds.
    pub last_scrape_ms: Option<u64>,
    /// Samples the last scrape gave.
    pub samples: u64,
    /// Scrapes that failed, in all.
    pub failures: u64,
}

/// Every ingest counter of the monitor.
#[derive(Debug, Default)]
pub struct IngestStatus {
    /// StatsD over UDP.
    pub statsd: Protocol,
    /// OTLP/HTTP.
    pub otlp: Protocol,
    /// `POST /api/events` and `busline publish`.
    pub api: Protocol,
    /// Prometheus scrapes.
    pub scrape: Protocol,
    targets: Mutex<BTreeMap<String, Target>>,
}

/// [`IngestStatus`] at one moment, as the API and the views show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IngestSnapshot {
    /// StatsD.
    pub statsd: ProtocolSnapshot,
    /// OTLP.
    pub otlp: ProtocolSnapshot,
    /// The JSON API.
    pub api: ProtocolSnapshot,
    /// Prometheus scrapes.
    pub scrape: ProtocolSnapshot,
    /// Scrape targets, by URL.
    pub targets: Vec<Target>,
}

impl IngestStatus {
    /// Sets the state of the scrape target `t.url`.
    pub fn set_target(&self, t: Target) {
        self.targets.lock().insert(t.url.clone(), t);
    }

    /// Every counter now.
    pub fn snapshot(&self) -> IngestSnapshot {
        IngestSnapshot {
            statsd: self.statsd.snapshot(),
            otlp: self.otlp.snapshot(),
            api: self.api.snapshot(),
            scrape: self.scrape.snapshot(),
            targets: self.targets.lock().values().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_input_is_counted_by_reason_with_a_few_examples() {
        let p = Protocol::default();
        for i in 0..20 {
            p.malformed("no type", &format!("line{i}:1"), 1);
        }
        p.malformed("bad value", &"x".repeat(1000), 3);
        let s = p.snapshot();
        assert_eq!(s.malformed, 23);
        assert_eq!(s.malformed_by_reason["no type"], 20);
        assert_eq!(s.malformed_by_reason["bad value"], 3);
        assert_eq!(s.examples.len(), EXAMPLES);
        assert_eq!(s.examples[0].input, "line0:1");
    }

    #[test]
    fn examples_are_cut_at_a_character_boundary() {
        let p = Protocol::default();
        p.malformed("r", &"é".repeat(EXAMPLE_BYTES), 1);
        let s = p.snapshot();
        assert!(s.examples[0].input.len() <= EXAMPLE_BYTES);
        assert!(s.examples[0].input.chars().all(|c| c == 'é'));
    }
}
