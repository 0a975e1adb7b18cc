//! What the exporter, the importers and request/reply share: [`Ctx`], the
//! [`IMPORTED`] header, and how a loop waits for its next message or the stop.

use std::sync::Arc;

use busline::WeakBus;
use futures::StreamExt;
use tokio::sync::watch;

use crate::codec::Codec;
use crate::inboxes::Inboxes;
use crate::stats::Counters;
use crate::status::Status;

/// Header put on every imported event; the exporter skips events carrying it.
pub const IMPORTED: &str = "busline-nats-imported";

/// What the exporter and importers share.
pub(crate) struct Ctx<T> {
    /// The `async-nats` client: imports, acks, retries, reply inboxes.
    pub(crate) client: async_nats::Client,
    /// The server address as configured (for errors and the `IMPORTED` header).
    pub(crate) server: String,
    /// The codec for outgoing payloads (incoming ones carry their own).
    pub(crate) codec: Codec,
    pub(crate) counters: Arc<Counters>,
    /// Dead letters go to `<dead_prefix>.<subject>`.
    pub(crate) dead_prefix: String,
    /// The local bus; gone once its last handle is dropped.
    pub(crate) bus: WeakBus<T>,
    /// Set once the transport stops.
    pub(crate) stop: watch::Receiver<bool>,
    /// The client connection's status (the exporter re-reads `max_payload` on changes).
    pub(crate) status: watch::Receiver<Status>,
    pub(crate) inboxes: Arc<Inboxes>,
}

impl<T> Clone for Ctx<T> {
    fn clone(&self) -> Self {
        Ctx {
            client: self.client.clone(),
            server: self.server.clone(),
            codec: self.codec,
            counters: self.counters.clone(),
            dead_prefix: self.dead_prefix.clone(),
            bus: self.bus.clone(),
            stop: self.stop.clone(),
            status: self.status.clone(),
            inboxes: self.inboxes.clone(),
        }
    }
}

/// The next message of a core subscription, or `None` once it ends or the
/// transport is stopping.
pub(crate) async fn next_or_stop(
    sub: &mut async_nats::Subscriber,
    stop: &mut watch::Receiver<bool>,
) -> Option<async_nats::Message> {
    tokio::select! {
        _ = stop.changed() => None,
        m = sub.next() => m,
    }
}
