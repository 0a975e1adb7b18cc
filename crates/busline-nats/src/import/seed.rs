//! An import's memory of delivered ids, seeded from the bus's own stores.

use crate::dedup::{lock_dedup, Dedup};

/// Events read back from the end of each local store at the start of an
/// import (at most; and at most the dedup window).
const SEED_LIMIT: u64 = 10_000;

/// Puts the ids of the newest events on `pattern`'s topics in the bus's own
/// stores into `dedup`. A message the import had stored locally but not yet
/// acked when it stopped (a shutdown while a lossless subscriber was full,
/// a crash) comes again from the server; it is then known, acked and
/// dropped, not stored a second time. Best effort: a store that cannot be
/// read is logged and skipped (the event may then be stored twice).
pub(crate) async fn seed_from_stores<T: Send + Sync + 'static>(
    bus: &busline::Bus<T>,
    pattern: &str,
    dedup: &std::sync::Mutex<Dedup>,
) {
    let Ok(pattern) = busline::Pattern::new(pattern) else {
        return;
    };
    let limit = SEED_LIMIT.min(lock_dedup(dedup).capacity() as u64);
    if limit == 0 {
        return;
    }
    for (persisted, store) in bus.persisted() {
        if !persisted.overlaps(&pattern) {
            continue;
        }
        let p = pattern.clone();
        // Reading may block on disk.
        let read = tokio::task::spawn_blocking(move || {
            let end = store.end();
            let events = store.read(end.saturating_sub(limit), end)?;
            let mut ids = Vec::new();
            for e in events {
                let e = e?;
                if p.matches(&e.topic) {
                    ids.push(e.id);
                }
            }
            Ok::<_, busline::StoreError>(ids)
        })
        .await;
        match read {
            Ok(Ok(ids)) => {
                let mut d = lock_dedup(dedup);
                ids.into_iter().for_each(|id| d.insert(id));
            }
            Ok(Err(e)) => {
                tracing::warn!(pattern = %pattern, error = %e, "cannot read the local store's newest events: an event stored before a restart but not acked may be stored again")
            }
            Err(e) => {
                tracing::warn!(pattern = %pattern, error = %e, "reading the local store's newest events failed")
            }
        }
    }
}
