//! [`Published`]: the newest view of every series, where the series feed
//! puts it and the dashboard, the web page and the terminal view read it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::StoreView;

/// The newest view of every series, and the events the store missed.
#[derive(Default)]
pub struct Published {
    view: Mutex<Option<Arc<StoreView>>>,
    /// Events the series store missed (it subscribes lossless: stays 0).
    missed: AtomicU64,
}

impl Published {
    /// A new view of every series.
    pub fn set(&self, view: Arc<StoreView>) {
        *self.view.lock() = Some(view);
    }

    /// The newest view, if the feed runs.
    pub fn get(&self) -> Option<Arc<StoreView>> {
        self.view.lock().clone()
    }

    /// Counts `n` events the series store missed.
    pub fn missed(&self, n: u64) {
        self.missed.fetch_add(n, Ordering::Relaxed);
    }

    /// Events the series store missed, in all.
    pub fn missed_total(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }
}
