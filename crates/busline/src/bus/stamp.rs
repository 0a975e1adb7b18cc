//! A bus handle stamped for a module: what it publishes carries the
//! module's name and the lineage of the event it is handling, and what it
//! subscribes to is named after the module, skips the module's own events
//! and records each event it returns as the one being handled.
//!
//! A module's [`Context`](crate::Context) derefs to such a handle, so the
//! bus's one API (publish, request, subscribe and every subscription
//! option) is the module's too.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::Bus;
use crate::envelope::Envelope;
use crate::lineage::Handling;
use crate::message::Message;

/// Who a stamped handle publishes and subscribes as.
#[derive(Debug)]
pub(crate) struct Stamp {
    pub(crate) name: Arc<str>,
    pub(crate) handling: Handling,
    /// Where its subscriptions add the events they discard when dropped.
    pub(crate) discarded: Arc<AtomicU64>,
}

impl Stamp {
    /// Stamps `msg` with the name (unless it names a source) and the lineage
    /// of the event being handled (unless it names its own).
    pub(crate) fn apply<T>(&self, msg: &mut Message<T>) {
        if msg.source.is_none() {
            msg.source = Some(self.name.clone());
        }
        if msg.causation_id.is_none() && msg.correlation_id.is_none() {
            if let Some(c) = self.handling.get() {
                msg.causation_id = Some(c.id);
                msg.correlation_id = Some(c.correlation);
            }
        }
    }

    /// Whether `env` was published by the module itself.
    pub(crate) fn is_own<T>(&self, env: &Envelope<T>) -> bool {
        env.source.as_deref() == Some(&*self.name)
    }
}

impl<T> Bus<T> {
    /// This bus, stamped as module `name` (see the module docs).
    #[cfg(feature = "runtime")]
    pub(crate) fn stamped(&self, name: Arc<str>, discarded: Arc<AtomicU64>) -> Bus<T> {
        Bus {
            inner: self.inner.clone(),
            stamp: Some(Arc::new(Stamp {
                name,
                handling: Handling::default(),
                discarded,
            })),
        }
    }

    /// The same bus without a stamp.
    #[cfg(feature = "runtime")]
    pub(crate) fn unstamped(&self) -> Bus<T> {
        Bus {
            inner: self.inner.clone(),
            stamp: None,
        }
    }

    pub(crate) fn stamp(&self) -> Option<&Arc<Stamp>> {
        self.stamp.as_ref()
    }
}
