//! The transport's counters: [`TransportStats`] for users, [`Counters`]
//! (atomics) for the exporter and the importers that update them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the transport.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TransportStats {
    /// Local events handed to NATS.
    pub exported: u64,
    /// Of those, acknowledged by JetStream. On core NATS there is no ack:
    /// counted once the client took the message into its outgoing buffer,
    /// which a connection loss can still lose (at-most-once).
    /// [`NatsTransport::flush`](crate::NatsTransport::flush) confirms the server processed what was sent.
    pub acked: u64,
    /// Publishes the server reported as duplicates (a retry of an event it already had).
    pub publish_duplicates: u64,
    /// Publishes re-sent after an ack timed out or failed.
    pub retried: u64,
    /// Local events not sent: too large for the server or not encodable (each logged).
    pub rejected: u64,
    /// Imported events skipped by the exporter (no echo).
    pub echo_skipped: u64,
    /// NATS messages delivered to the local bus.
    pub imported: u64,
    /// Redelivered messages dropped because this import already delivered them.
    pub import_duplicates: u64,
    /// Messages this bus had published itself, back from the server on an
    /// import (a process exporting and importing the same subjects), skipped:
    /// local subscribers had them already.
    pub import_own: u64,
    /// Messages sent to the dead-letter subject.
    pub dead_lettered: u64,
    /// Messages on their last delivery whose dead letter could not be
    /// stored after repeated attempts: lost (each logged as an error).
    pub dead_letters_lost: u64,
    /// Events the exporter was handed and gave up on at shutdown: still
    /// unacknowledged when [`NatsConfig::shutdown_timeout`](crate::NatsConfig::shutdown_timeout) passed, or
    /// published on an exported topic while the exporter was closing its
    /// queue (each shutdown that abandons any logs a warning).
    pub abandoned: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) exported: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) publish_duplicates: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) echo_skipped: AtomicU64,
    pub(crate) imported: AtomicU64,
    pub(crate) import_duplicates: AtomicU64,
    pub(crate) import_own: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) dead_letters_lost: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    /// Core publishes handed to the client since the last confirmed flush,
    /// and the client's connection count before the first of them: a
    /// confirmation over another connection cannot vouch for them.
    pub(crate) core_unconfirmed: AtomicU64,
    pub(crate) core_connects_at: AtomicU64,
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// A snapshot of the user-visible counters.
    pub(crate) fn snapshot(&self) -> TransportStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TransportStats {
            exported: l(&self.exported),
            acked: l(&self.acked),
            publish_duplicates: l(&self.publish_duplicates),
            retried: l(&self.retried),
            rejected: l(&self.rejected),
            echo_skipped: l(&self.echo_skipped),
            imported: l(&self.imported),
            import_duplicates: l(&self.import_duplicates),
            import_own: l(&self.import_own),
            dead_lettered: l(&self.dead_lettered),
            dead_letters_lost: l(&self.dead_letters_lost),
            abandoned: l(&self.abandoned),
        }
    }
}
