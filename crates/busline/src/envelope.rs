//! Envelopes: the metadata every published event travels with.
//!
//! An event is wrapped exactly once, when it is published, and every
//! subscriber gets the same `Arc<Envelope<T>>`: a 1 MiB payload costs the same
//! with one subscriber or sixteen, because it is never cloned.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::sync::Arc;
//! use busline::{Bus, Message};
//!
//! let bus: Bus<String> = Bus::new();
//! let mut a = bus.subscribe("greetings.>").unwrap();
//! let mut b = bus.subscribe("greetings.*").unwrap();
//! bus.send(Message::new("hello".to_string()).topic("greetings.en").header("lang", "en"))
//!     .await
//!     .unwrap();
//! let (ea, eb) = (a.recv().await.unwrap(), b.recv().await.unwrap());
//! assert!(Arc::ptr_eq(&ea, &eb)); // one envelope, shared
//! assert_eq!(ea.topic.as_str(), "greetings.en");
//! assert_eq!(ea.header("lang"), Some("en"));
//! assert_eq!(ea.correlation_id, ea.id); // a new conversation starts with its own id
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use crate::clock;
use crate::topic::Topic;

/// A unique event id: 128 bits, printed as 32 hex digits.
///
/// The high 64 bits are random per bus instance, the low 64 bits count up, so
/// ids are unique across processes (NATS de-duplicates on them) and cheap to make.
///
/// Stored as two `u64` halves (not a `u128`) so an envelope needs only 8-byte
/// alignment, which keeps its allocation on the allocator's fast path.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId {
    hi: u64,
    lo: u64,
}

impl EventId {
    /// The id with these 128 bits.
    pub const fn from_u128(v: u128) -> Self {
        EventId {
            hi: (v >> 64) as u64,
            lo: v as u64,
        }
    }

    /// The id's 128 bits.
    pub const fn as_u128(self) -> u128 {
        ((self.hi as u128) << 64) | self.lo as u128
    }

    /// The high 64 bits: for an event published on a [`Bus`](crate::Bus)
    /// without an id of its own, that bus's [`node`](crate::Bus::node).
    pub const fn node(self) -> u64 {
        self.hi
    }

    pub(crate) const fn from_parts(hi: u64, lo: u64) -> Self {
        EventId { hi, lo }
    }

    /// Parses 32 hex digits (as printed by `Display`).
    pub fn parse(s: &str) -> Option<EventId> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(EventId::from_u128)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.hi, self.lo)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

impl serde::Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EventId::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("invalid event id `{s}`: want 32 hex digits"))
        })
    }
}

/// Free-form string headers. Empty headers cost no allocation.
pub type Headers = Vec<(Arc<str>, Arc<str>)>;

/// An event with its metadata, as subscribers receive it (inside an `Arc`).
///
/// The metadata every event has is in fields; the rest is read through
/// methods. Headers and the store offset, which few events carry, live in
/// one side allocation made only for an event that has one of them, and the
/// time is kept in 8 bytes: that keeps a plain event's envelope small
/// (168 bytes with a `u64` payload, 208 before), since each one is
/// allocated on the publisher's core and read and freed on its
/// subscribers'. The causation id and reply-to topic stay inline: every
/// request and every reply carries them.
#[derive(Clone)]
#[non_exhaustive]
pub struct Envelope<T> {
    /// Position in the publishing bus's sequence: unique per bus and increasing
    /// per publisher (see the crate docs on ordering).
    pub seq: u64,
    /// Unique id of this event.
    pub id: EventId,
    /// The conversation this event belongs to: the id of the event that started
    /// it (an event that starts one carries its own id).
    pub correlation_id: EventId,
    /// The topic it was published on.
    pub topic: Topic,
    /// The module (or other named publisher) that published it, if any.
    pub source: Option<Arc<str>>,
    /// When it was published ([`timestamp`](Self::timestamp)), in
    /// nanoseconds since the Unix epoch; [`FAR`] for a time outside what
    /// that holds (before 1677 or after 2262), which is then kept in `rare`.
    nanos: i64,
    /// [`causation_id`](Self::causation_id).
    causation_id: Option<EventId>,
    /// [`reply_to`](Self::reply_to).
    reply_to: Option<Topic>,
    /// What only some events carry; `None` when all of it is unset.
    rare: Option<Box<Rare>>,
    /// The event itself.
    pub payload: T,
}

/// [`Envelope::nanos`] of a timestamp kept in [`Rare::far_timestamp`].
const FAR: i64 = i64::MIN;

/// The metadata few events carry: one allocation beside the envelope, made
/// only when one of these is set.
#[derive(Clone, Default)]
struct Rare {
    headers: Headers,
    offset: Option<u64>,
    /// The timestamp, when it does not fit [`Envelope::nanos`].
    far_timestamp: Option<SystemTime>,
}

impl<T> Envelope<T> {
    /// When it was published.
    pub fn timestamp(&self) -> SystemTime {
        if self.nanos != FAR {
            return clock::from_nanos(self.nanos);
        }
        self.rare
            .as_ref()
            .and_then(|r| r.far_timestamp)
            .expect("a far timestamp is kept with the rare metadata")
    }

    /// The id of the event whose handling caused this one, if any.
    pub fn causation_id(&self) -> Option<EventId> {
        self.causation_id
    }

    /// Where a reply should go (set on requests).
    pub fn reply_to(&self) -> Option<&Topic> {
        self.reply_to.as_ref()
    }

    /// Free-form headers, in the order they were added.
    pub fn headers(&self) -> &[(Arc<str>, Arc<str>)] {
        self.rare.as_ref().map_or(&[], |r| &r.headers)
    }

    /// Its offset in the bus's durable store, for events on persisted topics
    /// (see [`EventStore`](crate::EventStore)); `None` otherwise.
    pub fn offset(&self) -> Option<u64> {
        self.rare.as_ref().and_then(|r| r.offset)
    }

    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| &**v)
    }

    /// Builds an envelope from parts received from elsewhere (a log, a network
    /// transport), keeping their metadata intact.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        seq: u64,
        id: EventId,
        topic: Topic,
        timestamp: SystemTime,
        source: Option<Arc<str>>,
        correlation_id: EventId,
        causation_id: Option<EventId>,
        reply_to: Option<Topic>,
        headers: Headers,
        payload: T,
    ) -> Self {
        Envelope::stamped(
            seq,
            id,
            topic,
            Some(timestamp),
            source,
            correlation_id,
            causation_id,
            reply_to,
            headers,
            payload,
        )
    }

    /// [`from_parts`](Self::from_parts), but stamped with the time of
    /// publishing (see [`clock::now_nanos`]) when `at` is `None`: the one
    /// place envelopes are made.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn stamped(
        seq: u64,
        id: EventId,
        topic: Topic,
        at: Option<SystemTime>,
        source: Option<Arc<str>>,
        correlation_id: EventId,
        causation_id: Option<EventId>,
        reply_to: Option<Topic>,
        headers: Headers,
        payload: T,
    ) -> Self {
        let (nanos, far_timestamp) = match at.map_or_else(clock::now_nanos, clock::to_nanos) {
            Some(n) => (n, None),
            None => (FAR, Some(at.unwrap_or_else(SystemTime::now))),
        };
        let rare = (!headers.is_empty() || far_timestamp.is_some()).then(|| {
            Box::new(Rare {
                headers,
                offset: None,
                far_timestamp,
            })
        });
        Envelope {
            seq,
            id,
            correlation_id,
            topic,
            source,
            nanos,
            causation_id,
            reply_to,
            rare,
            payload,
        }
    }

    /// A bare event's envelope, published now: no metadata beyond its
    /// ids and topic (the fast path of a plain publish).
    #[inline]
    pub(crate) fn plain(seq: u64, id: EventId, topic: Topic, payload: T) -> Self {
        let Some(nanos) = clock::now_nanos() else {
            return Envelope::stamped(
                seq,
                id,
                topic,
                None,
                None,
                id,
                None,
                None,
                Vec::new(),
                payload,
            );
        };
        Envelope {
            seq,
            id,
            correlation_id: id,
            topic,
            source: None,
            nanos,
            causation_id: None,
            reply_to: None,
            rare: None,
            payload,
        }
    }

    /// The same envelope with its store offset set.
    pub fn with_offset(mut self, offset: u64) -> Self {
        self.set_offset(offset);
        self
    }

    /// Sets its store offset.
    pub(crate) fn set_offset(&mut self, offset: u64) {
        self.rare.get_or_insert_with(Box::default).offset = Some(offset);
    }
}

impl<T: fmt::Debug> fmt::Debug for Envelope<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("seq", &self.seq)
            .field("id", &self.id)
            .field("topic", &self.topic)
            .field("source", &self.source)
            .field("correlation_id", &self.correlation_id)
            .field("causation_id", &self.causation_id())
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

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

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn topic() -> Topic {
        Topic::new("a.b").unwrap()
    }

    /// A plain event's envelope stays small: 168 bytes for a `u64` payload
    /// (it was 208 when every field was inline). A layout fact, not a timing.
    #[test]
    fn a_plain_envelope_is_small() {
        let size = std::mem::size_of::<Envelope<u64>>();
        println!("size_of::<Envelope<u64>>() = {size}");
        assert!(size <= 168, "Envelope<u64> is {size} bytes");
    }

    #[test]
    fn the_rare_metadata_is_allocated_only_when_set() {
        let id = EventId::from_u128(7);
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let plain = Envelope::from_parts(1, id, topic(), at, None, id, None, None, Vec::new(), 0u8);
        assert!(plain.rare.is_none());
        assert_eq!(plain.timestamp(), at);
        assert_eq!(plain.causation_id(), None);
        assert_eq!(plain.reply_to(), None);
        assert!(plain.headers().is_empty());
        assert_eq!(plain.offset(), None);

        let stored = plain.clone().with_offset(9);
        assert!(stored.rare.is_some());
        assert_eq!((stored.offset(), stored.timestamp()), (Some(9), at));
        assert_eq!(stored.causation_id(), None);

        let cause = EventId::from_u128(3);
        let headers: Headers = vec![("k".into(), "v".into()), ("k2".into(), "v2".into())];
        let full = Envelope::from_parts(
            2,
            id,
            topic(),
            at,
            Some("m".into()),
            cause,
            Some(cause),
            Some(Topic::new("_inbox.1").unwrap()),
            headers.clone(),
            0u8,
        );
        assert!(full.rare.is_some());
        assert_eq!(full.causation_id(), Some(cause));
        assert_eq!(full.reply_to().map(|t| t.as_str()), Some("_inbox.1"));
        assert_eq!(full.headers(), headers);
        assert_eq!(full.header("k2"), Some("v2"));
        assert_eq!((full.offset(), full.timestamp()), (None, at));
        assert_eq!(full.with_offset(4).offset(), Some(4));

        // A request or a reply has no side allocation.
        let inbox = Some(Topic::new("_inbox.2").unwrap());
        let request =
            Envelope::from_parts(3, id, topic(), at, None, id, Some(cause), inbox, vec![], 1);
        assert!(request.rare.is_none());
        assert_eq!(request.causation_id(), Some(cause));
        assert_eq!(request.reply_to().map(|t| t.as_str()), Some("_inbox.2"));
    }

    /// Times an `i64` of nanoseconds cannot hold are kept as they are.
    #[test]
    fn far_timestamps_are_kept() {
        let id = EventId::from_u128(1);
        let year = Duration::from_secs(365 * 24 * 3600);
        for at in [UNIX_EPOCH + 400 * year, UNIX_EPOCH - 400 * year] {
            let env =
                Envelope::from_parts(0, id, topic(), at, None, id, None, None, Vec::new(), ());
            assert_eq!(env.nanos, FAR);
            assert_eq!(env.timestamp(), at);
            assert_eq!(env.clone().with_offset(1).timestamp(), at);
            assert_eq!(env.causation_id(), None);
        }
    }
}
