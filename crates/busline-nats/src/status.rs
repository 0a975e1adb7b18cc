//! The client connection's state: [`Status`], and [`StatusEvent`]s, which
//! [`NatsConfig::status_events`](crate::NatsConfig::status_events)(crate::NatsConfig::status_events) publishes
//! on the bus as `$sys.nats.<connected|disconnected|error|slow_consumer|lame_duck|closed>`.
//!
//! The `async-nats` client reports its events to [`on_event`], which
//! updates the `watch` behind [`NatsTransport::status`](crate::NatsTransport::status)(crate::NatsTransport::status)
//! and queues the matching event for one task that publishes them on the
//! bus in order ([`spawn_publisher`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use busline::WeakBus;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Makes the bus event for a status change ([`NatsConfig::status_events`](crate::NatsConfig::status_events)).
pub(crate) type StatusMap<T> = Arc<dyn Fn(&StatusEvent) -> Option<T> + Send + Sync>;

/// Connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnState {
    /// Connected to the server.
    Connected,
    /// Lost the connection; reconnecting (outgoing events wait in the buffer).
    Disconnected,
    /// Shut down.
    Closed,
}

/// The transport's current status, as seen by [`NatsTransport::status`](crate::NatsTransport::status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Connection state.
    pub state: ConnState,
    /// The configured server address.
    pub server: String,
    /// Times the connection was re-established.
    pub reconnects: u64,
    /// The last error the server or client reported, if any.
    pub last_error: Option<String>,
}

/// A status change, as handed to the [`NatsConfig::status_events`](crate::NatsConfig::status_events) mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatusEvent {
    /// (Re)connected.
    Connected {
        /// The server address.
        server: String,
    },
    /// Connection lost.
    Disconnected {
        /// The server address.
        server: String,
    },
    /// An error reported by the server or the client.
    Error {
        /// The server address.
        server: String,
        /// The message.
        message: String,
    },
    /// The server dropped messages for a slow subscription (core NATS).
    SlowConsumer {
        /// The server address.
        server: String,
    },
    /// The server is shutting down gracefully.
    LameDuck {
        /// The server address.
        server: String,
    },
    /// The connection is closed for good.
    Closed {
        /// The server address.
        server: String,
    },
}

impl StatusEvent {
    /// The local topic the event is published on: `$sys.nats.<kind>`.
    pub fn topic(&self) -> &'static str {
        match self {
            StatusEvent::Connected { .. } => "$sys.nats.connected",
            StatusEvent::Disconnected { .. } => "$sys.nats.disconnected",
            StatusEvent::Error { .. } => "$sys.nats.error",
            StatusEvent::SlowConsumer { .. } => "$sys.nats.slow_consumer",
            StatusEvent::LameDuck { .. } => "$sys.nats.lame_duck",
            StatusEvent::Closed { .. } => "$sys.nats.closed",
        }
    }
}

/// Applies one event of the `async-nats` client to `status` and queues the
/// matching [`StatusEvent`] on `events`. `first`: the initial connection's
/// `Connected`, which is no reconnect.
pub(crate) fn on_event(
    ev: async_nats::Event,
    first: bool,
    server: &str,
    status: &watch::Sender<Status>,
    events: &mpsc::UnboundedSender<StatusEvent>,
) {
    use async_nats::Event as E;
    if matches!(ev, E::Draining) {
        return;
    }
    let server = server.to_string();
    // Under the status lock, so the order of the events is the order of the
    // changes, and nothing follows `closed` (the client reports some events
    // late, from its own task: a `connected` could land after shutdown's
    // `closed`).
    status.send_if_modified(|s| {
        if s.state == ConnState::Closed {
            return false;
        }
        let before = s.clone();
        let se = match ev {
            E::Connected => {
                // The initial connection's event may come before or after
                // `connect` marked the state connected: it is no reconnect.
                if s.state == ConnState::Disconnected && !first {
                    s.reconnects += 1;
                }
                s.state = ConnState::Connected;
                StatusEvent::Connected { server }
            }
            E::Disconnected => {
                s.state = ConnState::Disconnected;
                StatusEvent::Disconnected { server }
            }
            E::Closed => {
                s.state = ConnState::Closed;
                StatusEvent::Closed { server }
            }
            E::LameDuckMode => StatusEvent::LameDuck { server },
            E::SlowConsumer(_) => StatusEvent::SlowConsumer { server },
            E::ServerError(e) => {
                let message = e.to_string();
                s.last_error = Some(message.clone());
                StatusEvent::Error { server, message }
            }
            E::ClientError(e) => {
                let message = e.to_string();
                s.last_error = Some(message.clone());
                StatusEvent::Error { server, message }
            }
            E::Draining => return false,
        };
        tracing::info!(event = ?se, "nats status");
        let _ = events.send(se);
        *s != before
    });
}

/// The `async-nats` event callback: every client event goes to [`on_event`].
pub(crate) fn callback(
    server: String,
    status: Arc<watch::Sender<Status>>,
    events: mpsc::UnboundedSender<StatusEvent>,
) -> impl Fn(async_nats::Event) -> futures::future::Ready<()> + Send + Sync + 'static {
    let initial = Arc::new(AtomicBool::new(true));
    move |ev| {
        let first =
            matches!(ev, async_nats::Event::Connected) && initial.swap(false, Ordering::SeqCst);
        on_event(ev, first, &server, &status, &events);
        futures::future::ready(())
    }
}

/// Publishes the status events queued on `events` on the bus, made by
/// `map`, one at a time and in order; once `stop` is set, publishes what
/// is queued and ends (the client, and its callback's sender, outlive the stop).
pub(crate) fn spawn_publisher<T: Send + Sync + 'static>(
    bus: WeakBus<T>,
    map: StatusMap<T>,
    mut events: mpsc::UnboundedReceiver<StatusEvent>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let publish = |se: StatusEvent| {
            let bus = bus.upgrade();
            let ev = map(&se);
            async move {
                if let (Some(bus), Some(ev)) = (bus, ev) {
                    let _ = bus.publish_to(se.topic(), ev).await;
                }
            }
        };
        loop {
            tokio::select! {
                biased;
                se = events.recv() => match se {
                    Some(se) => publish(se).await,
                    None => break,
                },
                _ = stop.changed() => {
                    while let Ok(se) = events.try_recv() {
                        publish(se).await;
                    }
                    break;
                }
            }
        }
    })
}
