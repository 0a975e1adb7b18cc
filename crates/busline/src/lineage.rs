//! Lineage: the event a module is handling, which what it publishes next
//! is caused by (the semantics are on `Context`, under Lineage).

use std::sync::Arc;

use parking_lot::Mutex;

use crate::envelope::Envelope;
use crate::event_id::EventId;

/// The event a module is handling: what its next publish is caused by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cause {
    pub(crate) id: EventId,
    pub(crate) correlation: EventId,
}

/// The "being handled" cell shared by a module's handles and subscriptions.
#[derive(Debug, Clone, Default)]
pub(crate) struct Handling(Arc<Mutex<Option<Cause>>>);

impl Handling {
    pub(crate) fn get(&self) -> Option<Cause> {
        *self.0.lock()
    }

    /// Records `env` as being handled (`None`: nothing is).
    pub(crate) fn set<T>(&self, env: Option<&Envelope<T>>) {
        *self.0.lock() = env.map(|e| Cause {
            id: e.id,
            correlation: e.correlation_id,
        });
    }
}
