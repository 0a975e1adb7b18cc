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
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::time::SystemTime;

use crate::clock;
use crate::event_id::EventId;
use crate::topic::Topic;

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

    /// A bare event's envelope, published now, made in its `Arc`: no
    /// metadata beyond its ids and topic but what `set` adds to it (a
    /// reply-to, a cause). The fast path of a plain publish: written
    /// straight into the allocation rather than built on the stack and
    /// copied there (an envelope is about 170 bytes).
    #[inline]
    pub(crate) fn new_plain(
        seq: u64,
        id: EventId,
        topic: Topic,
        payload: T,
        set: impl FnOnce(&mut Self),
    ) -> Arc<Self> {
        let Some(nanos) = clock::now_nanos() else {
            // A system clock outside what nanoseconds in an `i64` hold.
            let mut env = Envelope::stamped(
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
            set(&mut env);
            return Arc::new(env);
        };
        // (`Arc::new` of an uninitialized value, not `Arc::new_uninit`:
        // its layout is a constant, where `new_uninit` works it out at
        // every call.)
        let env = Arc::new(MaybeUninit::<Self>::uninit());
        let slot = Arc::as_ptr(&env).cast_mut().cast::<Self>();
        #[allow(unsafe_code)]
        // SAFETY: `env` was just made and is not shared, so nothing else
        // reads or writes its value; `as_ptr` points at that value
        // (`MaybeUninit<Self>` has the layout of `Self`), the pointer
        // `Arc::get_mut` would hand out, without its count check. Once
        // written, the value is initialized, and `set` changes it through
        // the same pointer before the `Arc` is shared.
        unsafe {
            slot.write(Envelope {
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
            });
            set(&mut *slot);
            env.assume_init()
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

    /// Sets where a reply should go (a request's envelope, as it is made).
    pub(crate) fn set_reply_to(&mut self, reply_to: Topic) {
        self.reply_to = Some(reply_to);
    }

    /// Marks it as caused by `cause`, as [`Message::caused_by`] does (an
    /// envelope as it is made).
    ///
    /// [`Message::caused_by`]: crate::Message::caused_by
    pub(crate) fn set_cause<U>(&mut self, cause: &Envelope<U>) {
        self.causation_id = Some(cause.id);
        self.correlation_id = cause.correlation_id;
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
