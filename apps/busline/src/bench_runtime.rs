//! The tokio runtime the benchmarks run on, and the core count it
//! defaults to.

use anyhow::Result;

/// A multi-thread runtime with `threads` workers (default: one per core).
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
