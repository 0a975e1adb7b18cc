//! [`Message`]: an event with the metadata to publish it with, and the
//! [`Event`] trait of events that name their own topic.

use std::sync::Arc;
use std::time::SystemTime;

use crate::envelope::{Envelope, Headers};
use crate::event_id::EventId;
use crate::topic::Topic;

/// An event type that names its own topic, so `bus.publish(event)` needs no topic.
///
/// ```
/// use std::borrow::Cow;
/// use busline::Event;
///
/// enum Metric { Request { path: String, latency_ms: u64 }, Error { message: String } }
///
/// impl Event for Metric {
///     fn topic(&self) -> Cow<'_, str> {
///         match self {
///             Metric::Request { .. } => "metrics.request".into(),
///             Metric::Error { .. } => "metrics.error".into(),
///         }
///     }
/// }
/// ```
pub trait Event: Send + Sync + 'static {
    /// The topic this event is published on.
    fn topic(&self) -> std::borrow::Cow<'_, str>;
}

/// An event about to be published, with the metadata to put on its envelope.
///
/// Built with [`Message::new`] and chained setters, sent with [`Bus::send`](crate::Bus::send).
#[derive(Debug, Clone)]
pub struct Message<T> {
    pub(crate) payload: T,
    pub(crate) topic: Option<String>,
    pub(crate) source: Option<Arc<str>>,
    pub(crate) correlation_id: Option<EventId>,
    pub(crate) causation_id: Option<EventId>,
    pub(crate) reply_to: Option<Topic>,
    pub(crate) headers: Headers,
    pub(crate) id: Option<EventId>,
    pub(crate) timestamp: Option<SystemTime>,
}

impl<T> Message<T> {
    /// A message carrying `payload`, with no metadata yet.
    pub fn new(payload: T) -> Self {
        Message {
            payload,
            topic: None,
            source: None,
            correlation_id: None,
            causation_id: None,
            reply_to: None,
            headers: Vec::new(),
            id: None,
            timestamp: None,
        }
    }

    /// A message on the event's own topic ([`Event::topic`]).
    pub fn for_event(payload: T) -> Self
    where
        T: Event,
    {
        let topic = payload.topic().into_owned();
        Message::new(payload).topic(topic)
    }

    /// Publishes on `topic` (required by [`Bus::send`](crate::Bus::send)).
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Names the publisher.
    pub fn source(mut self, source: impl Into<Arc<str>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Joins an existing conversation.
    pub fn correlation_id(mut self, id: EventId) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Records the event that caused this one.
    pub fn causation_id(mut self, id: EventId) -> Self {
        self.causation_id = Some(id);
        self
    }

    /// Marks this event as caused by `cause`: its id becomes the causation id and
    /// its correlation id is carried over.
    pub fn caused_by<U>(mut self, cause: &Envelope<U>) -> Self {
        self.causation_id = Some(cause.id);
        self.correlation_id = Some(cause.correlation_id);
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<Arc<str>>, value: impl Into<Arc<str>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Keeps a given event id (for events that come from elsewhere, e.g. a log
    /// or another process); by default the bus makes a new one.
    pub fn id(mut self, id: EventId) -> Self {
        self.id = Some(id);
        self
    }

    /// Keeps a given timestamp; by default the bus stamps the time of publishing.
    pub fn timestamp(mut self, at: SystemTime) -> Self {
        self.timestamp = Some(at);
        self
    }

    /// Asks for replies on `topic` (request/reply; usually set by [`Bus::request`](crate::Bus::request)).
    pub fn reply_to(mut self, topic: Topic) -> Self {
        self.reply_to = Some(topic);
        self
    }

    /// The payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// Takes the payload back.
    pub fn into_payload(self) -> T {
        self.payload
    }
}
