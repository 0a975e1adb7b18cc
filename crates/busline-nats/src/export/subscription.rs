//! The exporter's queues on the bus: one lossless subscription to the
//! export patterns, and (with imports) one to replies to imported requests.

use std::sync::Arc;

use busline::{Bus, Envelope, Pattern, RecvError, Subscription};

use crate::error::NatsError;
use crate::inboxes::Inboxes;

/// The exporter's subscription to the export patterns. One pattern that
/// starts with a literal token is subscribed as it is; otherwise `>` with a
/// filter (which keeps `$sys.` and `_INBOX.` topics out unless a pattern
/// names them, and leaves replies to the reply subscription).
pub(crate) fn export_subscription<T: Send + Sync + 'static>(
    bus: &Bus<T>,
    exports: Vec<Pattern>,
    inboxes: Arc<Inboxes>,
    buffer: usize,
) -> Result<Subscription<T>, NatsError> {
    let pattern = match exports.as_slice() {
        [p] if !matches!(p.as_str().split('.').next(), Some("*" | ">" | "_INBOX")) => {
            p.as_str().to_string()
        }
        _ => ">".to_string(),
    };
    let builder = if pattern != ">" {
        // Only what it names: no filter to run on every local event.
        bus.subscriber(&pattern)
    } else {
        bus.subscriber(">").filter(move |env: &Envelope<T>| {
            let t = env.topic.as_str();
            if t.starts_with("_INBOX.") && inboxes.is_remote_reply(t) {
                return false;
            }
            let reserved = t.starts_with("$sys.") || t.starts_with("_INBOX.");
            exports.iter().any(|p| {
                p.matches(&env.topic)
                    && (!reserved || p.as_str().starts_with(t.split('.').next().unwrap_or("")))
            })
        })
    };
    builder
        .lossless(buffer)
        .name("nats-export")
        .subscribe()
        .map_err(|e| NatsError::Subscribe {
            pattern,
            detail: e.to_string(),
        })
}

/// The exporter's subscription to replies to requests imported from NATS.
pub(crate) fn reply_subscription<T: Send + Sync + 'static>(
    bus: &Bus<T>,
    inboxes: Arc<Inboxes>,
    buffer: usize,
) -> Result<Subscription<T>, NatsError> {
    bus.subscriber("_INBOX.>")
        .lossless(buffer)
        .name("nats-export-replies")
        .filter(move |env: &Envelope<T>| inboxes.is_remote_reply(env.topic.as_str()))
        .subscribe()
        .map_err(|e| NatsError::Subscribe {
            pattern: "_INBOX.>".into(),
            detail: e.to_string(),
        })
}

/// The exporter's queues on the bus.
pub(crate) struct ExportSubs<T> {
    /// Events on the export patterns.
    pub(crate) exports: Option<Subscription<T>>,
    /// Replies to requests that came from NATS (with imports only).
    pub(crate) replies: Option<Subscription<T>>,
}

pub(crate) async fn recv_opt<T: Send + Sync + 'static>(
    q: &mut Option<Subscription<T>>,
) -> Result<Arc<Envelope<T>>, RecvError> {
    match q {
        Some(q) => q.recv().await,
        None => std::future::pending().await,
    }
}
