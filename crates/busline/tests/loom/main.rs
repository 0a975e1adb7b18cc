//! Model checks of the delivery protocol with [loom]: every interleaving of
//! publishers, receivers, wake-ups and closing, up to a preemption bound.
//! The bus's locks and atomics are loom's models in this build
//! (`src/sync.rs`); a lost wake-up shows up as a deadlock, a lost or
//! duplicated event as a failed assertion.
//!
//! Run with (its own target directory, since the cfg rebuilds everything):
//!
//! ```text
//! RUSTFLAGS="--cfg busline_loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p busline --release --test loom
//! ```
#![cfg(busline_loom)]

mod groups_and_closing;
mod lossless_rings;
mod lossy_rings;

use std::ops::Range;

use busline::{Bus, RecvError, Subscription};
use loom::future::block_on;
use loom::thread::{self, JoinHandle};

/// A model with loom's bound of three forced thread switches per run.
pub(crate) fn model(f: impl Fn() + Sync + Send + 'static) {
    model_bounded(3, f)
}

/// A model with at most `preemptions` forced thread switches per run (loom's
/// bound on the state space; most concurrency bugs need two or three).
pub(crate) fn model_bounded(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(preemptions);
    b.check(f);
}

/// Publishes `events` on topic `t`, in order, waiting for room as needed.
pub(crate) fn publish(bus: &Bus<u32>, events: Range<u32>) {
    block_on(async {
        for i in events {
            bus.publish_to("t", i).await.unwrap();
        }
    })
}

/// [`publish`] on a thread of its own, with a handle of its own on `bus`.
pub(crate) fn publish_on_thread(bus: &Bus<u32>, events: Range<u32>) -> JoinHandle<()> {
    let bus = bus.clone();
    thread::spawn(move || publish(&bus, events))
}

/// Receives until the subscription ends: the payloads, in order.
pub(crate) fn receive_all(sub: &mut Subscription<u32>) -> Vec<u32> {
    block_on(async {
        let mut got = Vec::new();
        while let Ok(e) = sub.recv().await {
            got.push(e.payload);
        }
        got
    })
}

/// Receives from a lossy subscription until it ends: the payloads, in
/// order, and the lag it reported.
pub(crate) fn receive_all_lossy(sub: &mut Subscription<u32>) -> (Vec<u32>, u64) {
    block_on(async {
        let (mut got, mut lagged) = (Vec::new(), 0);
        loop {
            match sub.recv().await {
                Ok(e) => got.push(e.payload),
                Err(RecvError::Lagged(n)) => lagged += n,
                Err(_) => break,
            }
        }
        (got, lagged)
    })
}
