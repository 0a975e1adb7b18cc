//! Payloads that count their own drops, and a small deterministic
//! generator (the tests' one RNG): shared by `ring_delivery/` and
//! `lossy_ring_claims/`, included with `#[path]`.
#![allow(dead_code)]

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

/// Counts, per payload, how often it was dropped.
pub struct Ledger {
    drops: Vec<AtomicU32>,
    made: AtomicU64,
    live: AtomicI64,
}

impl Ledger {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Ledger {
            drops: (0..max).map(|_| AtomicU32::new(0)).collect(),
            made: AtomicU64::new(0),
            live: AtomicI64::new(0),
        })
    }

    pub fn make(self: &Arc<Self>, publisher: u32, n: u64) -> P {
        let id = self.made.fetch_add(1, SeqCst);
        assert!((id as usize) < self.drops.len(), "ledger too small");
        self.live.fetch_add(1, SeqCst);
        P {
            id,
            publisher,
            n,
            ledger: self.clone(),
        }
    }

    /// Payloads made and not dropped yet.
    pub fn live(&self) -> i64 {
        self.live.load(SeqCst)
    }

    /// Every payload made was dropped exactly once (`what` names the case).
    pub fn assert_each_dropped_once(&self, what: &str) {
        let made = self.made.load(SeqCst) as usize;
        let bad: Vec<_> = self.drops[..made]
            .iter()
            .enumerate()
            .map(|(i, d)| (i, d.load(SeqCst)))
            .filter(|&(_, d)| d != 1)
            .collect();
        assert!(
            bad.is_empty(),
            "{what}: payloads (id, times dropped) not dropped exactly once: {:?}{}",
            &bad[..bad.len().min(20)],
            if bad.len() > 20 { " ..." } else { "" }
        );
        assert_eq!(self.live(), 0, "{what}: payloads still alive");
    }
}

/// A payload that records its drop (a second drop is reported by
/// [`Ledger::assert_each_dropped_once`], not by a panic inside the bus).
pub struct P {
    pub id: u64,
    pub publisher: u32,
    /// Its publisher's sequence number (the ring position with one
    /// publisher, or in model tests).
    pub n: u64,
    ledger: Arc<Ledger>,
}

impl Drop for P {
    fn drop(&mut self) {
        self.ledger.drops[self.id as usize].fetch_add(1, SeqCst);
        self.ledger.live.fetch_sub(1, SeqCst);
    }
}

impl fmt::Debug for P {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P{{id {}, p {}, n {}}}", self.id, self.publisher, self.n)
    }
}

pub use busline::test_util::Rng;
