//! Publishing: waiting for room (`publish`), not waiting (`try_publish`),
//! and skipping full subscribers (the runtime's `offer`). Each wraps the
//! event in its envelope once and hands it to the delivery protocol
//! (`queue::commit`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::deliver::{deliver_inline, unwrap_env, Receipt};
use super::route::{Prepared, Route};
use super::Bus;
use crate::envelope::Envelope;
use crate::error::PublishError;
use crate::error::StoreError;
use crate::event_id::EventId;
use crate::message::{Event, Message};
use crate::topic::Topic;

impl<T: Send + Sync + 'static> Bus<T> {
    // ----- publishing --------------------------------------------------------

    /// Publishes `event` on its own topic ([`Event::topic`]).
    ///
    /// Waits while a lossless subscriber matching the topic is full
    /// (backpressure). Cancel safe: if the future is dropped before it
    /// completes, no subscriber has received the event.
    pub async fn publish(&self, event: T) -> Result<Receipt, PublishError<T>>
    where
        T: Event,
    {
        let route = self.route_checked(&event.topic());
        let (route, env) = self.wrap_event(route, event)?;
        if route.store.is_none() {
            return deliver_inline!(self, &route, env);
        }
        self.persist_and_deliver(route, env).await
    }

    /// Publishes `event` on `topic`. See [`publish`](Self::publish).
    pub async fn publish_to(&self, topic: &str, event: T) -> Result<Receipt, PublishError<T>> {
        let (route, env) = self.wrap_event(self.route_checked(topic), event)?;
        if route.store.is_none() {
            return deliver_inline!(self, &route, env);
        }
        self.persist_and_deliver(route, env).await
    }

    /// Publishes a [`Message`] (an event with metadata). The message must name
    /// its topic ([`Message::topic`], or [`Message::for_event`] for an [`Event`]);
    /// one without is refused as an invalid (empty) topic.
    pub async fn send(&self, mut msg: Message<T>) -> Result<Receipt, PublishError<T>> {
        let topic = msg.topic.take().unwrap_or_default();
        let (route, env) = self.wrap(self.route_checked(&topic), msg)?;
        if route.store.is_none() {
            return deliver_inline!(self, &route, env);
        }
        self.persist_and_deliver(route, env).await
    }

    /// Delivers a wrapped event, through the store first if its topic is
    /// persisted. (The publish methods do the same inline: one future
    /// fewer for every publish to poll through and drop.)
    pub(super) async fn dispatch(
        &self,
        (route, env): Prepared<T>,
    ) -> Result<Receipt, PublishError<T>> {
        if route.store.is_none() {
            return deliver_inline!(self, &route, env);
        }
        self.persist_and_deliver(route, env).await
    }

    /// Publishes without waiting: if a lossless subscriber has no room, no
    /// subscriber gets the event and it comes back in [`PublishError::Full`],
    /// naming that subscriber.
    pub fn try_publish(&self, event: T) -> Result<Receipt, PublishError<T>>
    where
        T: Event,
    {
        let route = self.route_checked(&event.topic());
        let (route, env) = self.wrap_event(route, event)?;
        self.try_deliver(&route, env)
    }

    /// Delivers `event` to every matching subscriber that has room now and
    /// skips the full ones (lossless subscribers and queue groups), without
    /// waiting: unlike [`try_publish`](Self::try_publish), one full
    /// subscriber does not keep the event from the others. Returns how many
    /// were skipped. For the runtime's system events (a persisted topic is
    /// delivered, not stored).
    #[cfg(feature = "runtime")]
    pub(crate) fn offer(&self, event: T) -> usize
    where
        T: Event,
    {
        let route = self.route_checked(&event.topic());
        let Ok((route, env)) = self.wrap_event(route, event) else {
            return 0;
        };
        let targets = route.targets(&env);
        route.count_filtered(&targets);
        let (mut delivered, mut skipped) = (0, 0);
        for i in 0..targets.len() {
            match targets.get(i).offer(&env) {
                None => {}
                Some(false) => skipped += 1,
                Some(true) => delivered += 1,
            }
        }
        if delivered == 0 && skipped == 0 {
            self.inner.unrouted.fetch_add(1, Ordering::Relaxed);
        }
        skipped
    }

    /// The receipt of an event put in `subscribers` queues; one that went
    /// nowhere counts as unrouted.
    pub(super) fn receipt(&self, seq: u64, id: EventId, subscribers: usize) -> Receipt {
        if subscribers == 0 {
            self.inner.unrouted.fetch_add(1, Ordering::Relaxed);
        }
        Receipt {
            seq,
            id,
            subscribers,
        }
    }

    /// [`try_publish`](Self::try_publish) on a given topic.
    pub fn try_publish_to(&self, topic: &str, event: T) -> Result<Receipt, PublishError<T>> {
        let (route, env) = self.wrap_event(self.route_checked(topic), event)?;
        self.try_deliver(&route, env)
    }

    /// [`try_publish`](Self::try_publish) for a [`Message`].
    pub fn try_send(&self, mut msg: Message<T>) -> Result<Receipt, PublishError<T>> {
        let topic = msg.topic.take().unwrap_or_default();
        let (route, env) = self.wrap(self.route_checked(&topic), msg)?;
        self.try_deliver(&route, env)
    }

    pub(super) fn try_deliver(
        &self,
        route: &Route<T>,
        env: Arc<Envelope<T>>,
    ) -> Result<Receipt, PublishError<T>> {
        if route.store.is_some() {
            return Err(PublishError::Store {
                error: StoreError::new(
                    format!("try_publish on persisted topic `{}`", route.topic),
                    "it cannot wait for the store to acknowledge; use publish",
                ),
                event: unwrap_env(env),
            });
        }
        match self.deliver_now(route, env) {
            Ok(done) => done,
            Err(full) => Err(full.refuse(&self.inner)),
        }
    }

    /// Stamps `msg` with a sequence number, id and time: the one place
    /// envelopes are made (straight into their `Arc`, not moved there).
    pub(super) fn envelope(&self, topic: Topic, mut msg: Message<T>) -> Arc<Envelope<T>> {
        if let Some(stamp) = self.stamp() {
            stamp.apply(&mut msg);
        }
        let (seq, id) = self.next_seq();
        let id = msg.id.unwrap_or(id);
        Arc::new(Envelope::stamped(
            seq,
            id,
            topic,
            msg.timestamp,
            msg.source,
            msg.correlation_id.unwrap_or(id),
            msg.causation_id,
            msg.reply_to,
            msg.headers,
            msg.payload,
        ))
    }

    /// The next event's sequence number, and the id made from it (unless
    /// the event brings its own).
    fn next_seq(&self) -> (u64, EventId) {
        let inner = &*self.inner;
        let seq = inner.seq.fetch_add(1, Ordering::Relaxed);
        (seq, EventId::from_parts(inner.node, seq))
    }

    /// [`envelope`](Self::envelope) for a bare event: no metadata to take
    /// from a message (a stamped handle still stamps it).
    pub(super) fn event_envelope(&self, topic: Topic, event: T) -> Arc<Envelope<T>> {
        if self.stamp().is_some() {
            return self.envelope(topic, Message::new(event));
        }
        self.plain_envelope(topic, event, |_| {})
    }

    /// A bare event's envelope with what `set` adds to it (a reply-to, a
    /// cause), stamped as published now by this bus but not by its stamp
    /// (the caller adds what it must).
    #[inline]
    pub(super) fn plain_envelope(
        &self,
        topic: Topic,
        event: T,
        set: impl FnOnce(&mut Envelope<T>),
    ) -> Arc<Envelope<T>> {
        let (seq, id) = self.next_seq();
        Envelope::new_plain(seq, id, topic, event, set)
    }
}
