//! The reply inboxes the transport routes replies for (see [`request`](crate::request)):
//! those of requests imported from NATS, whose local replies are exported,
//! and this bus's own, subscribed on NATS.

use std::collections::HashSet;

use crate::dedup::Dedup;

/// How many requesting buses elsewhere an importer remembers replies for.
const REMOTE_INBOXES: usize = 1024;

/// The reply inboxes (`_INBOX.<node>`, a bus's request reply-to topics
/// without their last token) the transport routes replies for.
pub(crate) struct Inboxes {
    /// Of requests imported from NATS: local replies to them are exported.
    remote: std::sync::Mutex<Dedup<String>>,
    /// Of this bus's own requests that were exported: subscribed on NATS,
    /// replies arriving there go to the waiting requester.
    own: std::sync::Mutex<HashSet<String>>,
}

impl Default for Inboxes {
    fn default() -> Self {
        Inboxes {
            remote: std::sync::Mutex::new(Dedup::new(REMOTE_INBOXES)),
            own: std::sync::Mutex::new(HashSet::new()),
        }
    }
}

/// The inbox of a reply-to topic: `_INBOX.<node>` of `_INBOX.<node>.<n>`.
fn inbox_of(reply_to: &str) -> Option<&str> {
    if !reply_to.starts_with("_INBOX.") {
        return None;
    }
    reply_to.rsplit_once('.').map(|(inbox, _)| inbox)
}

impl Inboxes {
    pub(crate) fn is_remote_reply(&self, topic: &str) -> bool {
        inbox_of(topic).is_some_and(|i| self.remote.lock().map(|r| r.contains(i)).unwrap_or(false))
    }

    /// Notes the inbox of an imported request's reply-to topic.
    pub(crate) fn imported_request(&self, reply_to: &str) {
        if let Some(i) = inbox_of(reply_to) {
            if let Ok(mut r) = self.remote.lock() {
                if !r.contains(i) {
                    r.insert(i.to_string());
                }
            }
        }
    }

    /// The inbox of an exported request's reply-to topic, if it is not
    /// subscribed yet (and marks it subscribed).
    pub(crate) fn new_own(&self, reply_to: &str) -> Option<String> {
        let i = inbox_of(reply_to)?;
        let mut own = self.own.lock().ok()?;
        if own.contains(i) {
            return None;
        }
        own.insert(i.to_string());
        Some(i.to_string())
    }
}
