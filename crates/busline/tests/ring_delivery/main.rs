//! The lock-free ring (lossless and lossy subscribers) loses, duplicates
//! and reorders no event, keeps no envelope alive (and drops none twice),
//! does not hang, and counts and signals backpressure exactly: tests that
//! try to make it do otherwise.
//!
//! Timeouts here are deadlock detectors only, never speed assertions.

use busline::{Bus, PublishError};

mod backpressure;
mod cancellation;
mod closing;
mod concurrent_delivery;
mod member_counters;
mod membership_churn;
mod model_check;
mod payload_release;
mod waiting_publishers;

// ----- helpers -------------------------------------------------------------

#[path = "../helpers/ledger.rs"]
mod ledger;
use ledger::P;

/// `RING_REVIEW_WORKERS` overrides the worker threads (more threads than
/// cores preempt tasks inside the protocol's windows more often).
fn rt(workers: usize) -> tokio::runtime::Runtime {
    let workers = std::env::var("RING_REVIEW_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(workers);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// Publishes `p`, first with `try_publish` when `try_first` (falling back to
/// a waiting publish with the event handed back on `Full`).
async fn publish_mixed(bus: &Bus<P>, topic: &str, p: P, try_first: bool) -> usize {
    let p = if try_first {
        match bus.try_publish_to(topic, p) {
            Ok(r) => return r.subscribers,
            Err(PublishError::Full { event, .. }) => event,
            Err(e) => panic!("try_publish: {e:?}"),
        }
    } else {
        p
    };
    bus.publish_to(topic, p).await.unwrap().subscribers
}
