//! The tokio runtime the benchmarks run on, and the core count it
//! defaults to.

use anyhow::Result;

/// A multi-thread runtime with `threads` workers (default: one per core).
///
/// The benchmarks make one for every round of every system: tokio tunes
/// its workers by the tasks they ran (how long their polls took, for how
/// often to look at the shared queue), so in a runtime kept from round to
/// round, one system's tasks would tune it for the next system's.
pub(crate) fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = threads {
        b.worker_threads(t);
    }
    Ok(b.enable_all().build()?)
}

/// The cores this process may use (1 where that is unknown).
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
