//! Request/reply: a request carries a reply-to inbox of the bus's own; a
//! reply to it goes straight to the waiting requester.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::pending::Answer;
use super::route::{Prepared, Route, RouteError};
use super::{Bus, BusInner};
use crate::envelope::Envelope;
use crate::error::{PublishError, ReplyError, RequestError};
use crate::message::Message;
use crate::topic::Topic;

/// Where a reply goes: a requester waiting on this bus, or an inbox that
/// is not this bus's (a transport may carry the reply there).
enum ReplyTo<T> {
    Here(oneshot::Sender<Answer<T>>, Topic),
    Elsewhere(Topic),
}

impl<T: Send + Sync + 'static> Bus<T> {
    /// Sends `event` on `topic` as a request and waits up to `timeout` for one
    /// reply. Fails at once with [`RequestError::NoResponders`] when nothing
    /// subscribes to `topic`.
    ///
    /// Timeouts are kept by one task per bus, spawned in the tokio runtime
    /// of the first request (and again by a later request once that runtime
    /// is gone). A bus shared by several runtimes at once therefore needs
    /// that runtime to keep running: a current-thread runtime that is kept
    /// but no longer driven holds every request's timeout back until it
    /// runs again or is dropped. Panics, as a tokio timer does, in a runtime
    /// built without timers.
    pub async fn request(
        &self,
        topic: &str,
        event: T,
        timeout: Duration,
    ) -> Result<Arc<Envelope<T>>, RequestError> {
        // Without a stamp to apply, the envelope is made without a message.
        let wrap = |bus: &Self, route, reply_to| match bus.stamp() {
            Some(_) => bus.wrap(route, Message::new(event).reply_to(reply_to)),
            None => bus.wrap_plain(route, event, |e| e.set_reply_to(reply_to)),
        };
        self.request_on(topic, wrap, timeout).await
    }

    /// [`request`](Self::request) with a [`Message`] (for metadata).
    pub async fn request_msg(
        &self,
        mut msg: Message<T>,
        timeout: Duration,
    ) -> Result<Arc<Envelope<T>>, RequestError> {
        let topic = msg.topic.take().unwrap_or_default();
        let wrap = |bus: &Self, route, reply_to| bus.wrap(route, msg.reply_to(reply_to));
        self.request_on(&topic, wrap, timeout).await
    }

    /// Sends the request `wrap` makes (given the route and the reply-to
    /// inbox) and waits for its reply.
    async fn request_on(
        &self,
        topic: &str,
        wrap: impl FnOnce(
            &Self,
            Result<Arc<Route<T>>, RouteError>,
            Topic,
        ) -> Result<Prepared<T>, PublishError<T>>,
        timeout: Duration,
    ) -> Result<Arc<Envelope<T>>, RequestError> {
        let inner = &self.inner;
        let n = inner.next_inbox.fetch_add(1, Ordering::Relaxed);
        let reply_to = inner.inbox(n);
        let now = Instant::now();
        // A timeout too long to add is as good as none (about 30 years).
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400));
        let closed = || RequestError::Closed {
            topic: topic.to_string(),
        };
        // Wrapped before the future first waits, so that the event is not
        // kept in it beside its envelope (a smaller future is cheaper to
        // move); registered before it is sent, so that no reply can come
        // first.
        let prepared = match wrap(self, self.route_checked(topic), reply_to) {
            Ok(x) => x,
            Err(PublishError::InvalidTopic { error, .. }) => {
                return Err(RequestError::Topic(error))
            }
            Err(_) => return Err(closed()),
        };
        let mut answer = inner.register_request(n, deadline);
        let mut guard = PendingGuard {
            inner,
            n,
            answered: false,
        };
        // Pinned where it is made: not moved into the `select!` (it holds
        // the publish's future, the largest part of a request's).
        let mut sent = std::pin::pin!(async {
            match self.dispatch(prepared).await {
                Ok(r) if r.subscribers == 0 => Err(RequestError::NoResponders {
                    topic: topic.to_string(),
                }),
                Ok(_) => Ok(()),
                Err(PublishError::Store { error, .. }) => Err(RequestError::Store {
                    topic: topic.to_string(),
                    reason: error.to_string(),
                }),
                Err(_) => Err(closed()),
            }
        });
        // Sending may wait for room; the deadline bounds that wait too.
        let answer = tokio::select! {
            biased;
            sent = &mut sent => {
                sent?;
                (&mut answer).await
            }
            early = &mut answer => early,
        };
        match answer {
            Ok(Some(reply)) => {
                guard.answered = true;
                Ok(reply)
            }
            Ok(None) => {
                guard.answered = true;
                Err(RequestError::Timeout {
                    topic: topic.to_string(),
                    timeout,
                })
            }
            Err(_) => Err(closed()),
        }
    }

    /// Answers `request` with `event`: it goes to the requester waiting on
    /// the request's reply-to topic, with the request's id as causation id
    /// and its correlation id.
    pub async fn reply(&self, request: &Envelope<T>, event: T) -> Result<(), ReplyError> {
        let (tx, topic) = match self.reply_to(request)? {
            ReplyTo::Here(tx, topic) => (tx, topic),
            ReplyTo::Elsewhere(reply_to) => {
                let msg = Message::new(event).caused_by(request);
                return self.reply_elsewhere(msg, reply_to).await;
            }
        };
        // Made in place, as `reply_msg` would make it (with the stamp's
        // name as its source; its cause is the request).
        let source = self.stamp().map(|s| s.name.clone());
        let env = self.plain_envelope(topic, event, |e| {
            e.source = source;
            e.set_cause(request);
        });
        answer(tx, env)
    }

    /// [`reply`](Self::reply) with a [`Message`] (for metadata such as the source).
    pub async fn reply_msg(
        &self,
        request: &Envelope<T>,
        msg: Message<T>,
    ) -> Result<(), ReplyError> {
        let msg = msg.caused_by(request);
        match self.reply_to(request)? {
            ReplyTo::Here(tx, topic) => answer(tx, self.envelope(topic, msg)),
            ReplyTo::Elsewhere(reply_to) => self.reply_elsewhere(msg, reply_to).await,
        }
    }

    /// Where the reply to `request` goes: a requester of this bus's is
    /// taken off the waiting list here (straight to it: no routing, and no
    /// one-off inbox topic in the route cache).
    fn reply_to(&self, request: &Envelope<T>) -> Result<ReplyTo<T>, ReplyError> {
        let Some(reply_to) = request.reply_to() else {
            return Err(ReplyError::NotARequest {
                id: request.id.to_string(),
                topic: request.topic.to_string(),
            });
        };
        let inner = &*self.inner;
        let Some(n) = inner.inbox_number(reply_to) else {
            return Ok(ReplyTo::Elsewhere(reply_to.clone()));
        };
        match inner.pending.lock().take(n) {
            Some(tx) => Ok(ReplyTo::Here(tx, reply_to.clone())),
            None => Err(ReplyError::RequesterGone {
                reply_to: reply_to.to_string(),
            }),
        }
    }

    /// A reply to an inbox that is not this bus's: published, for a
    /// transport to carry to a requester elsewhere. (Boxed: the publish's
    /// future would make every reply's future as large.)
    fn reply_elsewhere(
        &self,
        msg: Message<T>,
        reply_to: Topic,
    ) -> impl Future<Output = Result<(), ReplyError>> + Send + '_ {
        let msg = msg.topic(reply_to.as_str());
        Box::pin(async move {
            match self.send(msg).await {
                Ok(r) if r.subscribers > 0 => Ok(()),
                _ => Err(ReplyError::RequesterGone {
                    reply_to: reply_to.to_string(),
                }),
            }
        })
    }
}

/// Hands `env` to its waiting requester.
fn answer<T>(tx: oneshot::Sender<Answer<T>>, env: Arc<Envelope<T>>) -> Result<(), ReplyError> {
    tx.send(Some(env)).map_err(|env| ReplyError::RequesterGone {
        reply_to: env.map_or_else(String::new, |e| e.topic.to_string()),
    })
}

/// Takes a request's registration back when its requester gives up.
struct PendingGuard<'a, T> {
    inner: &'a BusInner<T>,
    n: u64,
    /// The registration was taken by whoever answered.
    answered: bool,
}

impl<T> BusInner<T> {
    /// Reply-to inbox `n` of this bus: `<inbox head><n>`, valid by
    /// construction (the head is), so not validated again; stored inline
    /// (no allocation) up to a billion requests.
    fn inbox(&self, n: u64) -> Topic {
        let mut digits = itoa::Buffer::new();
        Topic::from_valid_parts(&[&self.inbox_head, digits.format(n)])
    }

    /// The number of `topic` if it is one of this bus's reply inboxes.
    fn inbox_number(&self, topic: &Topic) -> Option<u64> {
        let digits = topic.as_str().strip_prefix(&*self.inbox_head)?;
        // What `inbox` writes: decimal digits, no sign, no leading zero.
        if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
            return None;
        }
        digits.bytes().try_fold(0u64, |n, b| {
            let digit = b.is_ascii_digit().then(|| u64::from(b - b'0'))?;
            n.checked_mul(10)?.checked_add(digit)
        })
    }
}

impl<T> Drop for PendingGuard<'_, T> {
    fn drop(&mut self) {
        if !self.answered {
            self.inner.pending.lock().take(self.n);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Bus;

    /// A reply inbox is its bus's prefix and number, and short enough to be
    /// stored inline (no allocation per request) up to a billion requests.
    #[test]
    fn reply_inboxes_are_numbered_and_short() {
        let bus = Bus::<u32>::new();
        let inner = &bus.inner;
        for n in [0, 7, 999_999, 999_999_999] {
            let inbox = inner.inbox(n);
            assert_eq!(inbox.as_str(), format!("{}{n}", inner.inbox_head));
            assert!(inbox.as_str().len() <= 30, "{inbox:?}");
            assert_eq!(inner.inbox_number(&inbox), Some(n));
        }
        assert!(inner.inbox_head.starts_with("_INBOX."));
        let other = Bus::<u32>::new();
        assert_ne!(other.inner.inbox_head, inner.inbox_head);
        assert_eq!(inner.inbox_number(&other.inner.inbox(3)), None);
        assert_eq!(inner.inbox_number(&inner.inbox(u64::MAX)), Some(u64::MAX));
        for tail in ["", "01", "1a", "-1", "+1", "1.2", "18446744073709551616"] {
            let Ok(topic) = crate::Topic::new(format!("{}{tail}", inner.inbox_head).as_str())
            else {
                assert_eq!(tail, "", "only a topic ending in `.` is malformed");
                continue;
            };
            assert_eq!(inner.inbox_number(&topic), None, "{topic}");
        }
    }
}
