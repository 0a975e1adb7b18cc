//! What a backend provides to be tested: the [`Harness`] trait, and the
//! in-memory bus as one ([`MemoryHarness`]).

use std::sync::Arc;

use futures::future::BoxFuture;

use super::Probe;
use crate::store::MemoryStore;
use crate::Bus;

/// A backend under test.
pub trait Harness: Send {
    /// The bus events are published on.
    fn publisher(&self) -> Bus<Probe>;
    /// The bus events are received on (may be the same bus).
    fn subscriber(&self) -> Bus<Probe>;
    /// Restarts the backend (persistent backends): afterwards the buses
    /// returned are new, and persisted events must still be there.
    fn restart(&mut self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Err("this backend cannot restart".to_string()) })
    }
    /// Lets events published so far cross to the subscriber side (a network
    /// transport waits for its in-flight messages). Default: nothing to wait for.
    fn settle(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The in-memory bus as a [`Harness`] (persistent through a [`MemoryStore`]
/// kept across "restarts", which stand in for a new bus on the same store).
#[derive(Debug)]
pub struct MemoryHarness {
    bus: Bus<Probe>,
    store: Arc<MemoryStore<Probe>>,
}

impl MemoryHarness {
    /// A fresh bus persisting `conformance.>` to a memory store.
    pub fn new() -> Self {
        let store = Arc::new(MemoryStore::new());
        let bus = Bus::new();
        bus.persist("conformance.>", store.clone())
            .expect("valid pattern");
        MemoryHarness { bus, store }
    }
}

impl Default for MemoryHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness for MemoryHarness {
    fn publisher(&self) -> Bus<Probe> {
        self.bus.clone()
    }
    fn subscriber(&self) -> Bus<Probe> {
        self.bus.clone()
    }
    fn restart(&mut self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.bus.close();
            self.bus = Bus::new();
            self.bus
                .persist("conformance.>", self.store.clone())
                .map_err(|e| e.to_string())
        })
    }
}
