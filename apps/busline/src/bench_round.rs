//! One round of `bench fanout`: the payload every system carries and what
//! a round measured, shared by busline's rows ([`bench_fanout`]) and the
//! peers' ([`bench_peers`]).
//!
//! [`bench_fanout`]: crate::bench_fanout
//! [`bench_peers`]: crate::bench_peers

use std::sync::Arc;
use std::time::{Duration, Instant};

/// The payload every system carries: an `Arc` so no system copies it.
pub(crate) type Payload = Arc<[u64; 8]>;

/// One round of one system: its time and what its subscribers got.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Round {
    pub(crate) elapsed: Duration,
    /// CPU time the whole process used during the round (all threads).
    pub(crate) cpu: Duration,
    pub(crate) delivered: u64,
    pub(crate) lagged: u64,
}

pub(crate) async fn collect(
    start: Instant,
    handles: Vec<tokio::task::JoinHandle<(u64, u64)>>,
) -> Round {
    let mut r = Round::default();
    for h in handles {
        let (got, lag) = h.await.expect("subscriber");
        r.delivered += got;
        r.lagged += lag;
    }
    r.elapsed = start.elapsed();
    r
}
