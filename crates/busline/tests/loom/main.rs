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
