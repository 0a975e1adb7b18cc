//! Durable stores: persisting chosen topics before delivery, and subscribers
//! that start in the past.
//!
//! The semantics are on [`EventStore`].

use std::sync::Arc;
use std::time::SystemTime;

use futures::future::BoxFuture;

use crate::envelope::Envelope;
use crate::error::StoreError;

/// Events read back from a store, in offset order.
pub type StoredEvents<T> = Box<dyn Iterator<Item = Result<Envelope<T>, StoreError>> + Send>;

/// A durable, append-only store of envelopes with dense offsets: what
/// persists chosen topics before delivery, and lets subscribers start in
/// the past.
///
/// The core crate does no I/O. A durable store (the embedded log in
/// `busline-log`, for instance) implements [`EventStore`]; the bus is told
/// which topic patterns to persist with [`Bus::persist`](crate::Bus::persist).
///
/// ## Persist, then deliver
///
/// An event on a persisted topic is appended to the store first; only once
/// the store has acknowledged it (for the embedded log: once an fsync covers
/// it) is it delivered to live subscribers, carrying its store offset in
/// [`Envelope::offset`]. If the process dies in between, the event is in the
/// store and named consumers will see it when they resume; live subscribers
/// were in the process that died. `try_publish` cannot wait for a store, so it
/// refuses persisted topics with [`PublishError::Store`](crate::PublishError::Store).
///
/// ## Replay, then live
///
/// A subscription can start [`from`](crate::SubscriptionBuilder::from) the
/// beginning, an offset, a time, or a named consumer's committed offset. It
/// registers for live events first, then notes the store's end `E`, replays
/// `[start, E)` from the store, and then delivers live events, skipping those
/// with an offset below `E` (it replayed them). An event acknowledged after
/// `E` was read is routed after the subscription existed, so it arrives live:
/// no gap and no duplicate at the switch-over, even while publishers keep
/// publishing. While it replays, live events wait in its queue under its
/// policy (a lossless replaying subscriber holds publishers back like any
/// slow subscriber; choose a larger capacity or lossy for long replays).
///
/// ## Named consumers
///
/// A subscription made with [`consumer`](crate::SubscriptionBuilder::consumer)
/// can [`commit`](crate::Subscription::commit) after handling an event; the
/// store keeps the offset crash-safely, and `from(StartAt::Committed)` resumes
/// after it: at-least-once (an event handled but not yet committed when the
/// process dies is delivered again).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::Arc;
/// use busline::{Bus, MemoryStore, StartAt};
///
/// let bus = Bus::<u32>::new();
/// bus.persist("orders.>", Arc::new(MemoryStore::new())).unwrap();
/// for i in 0..3 { bus.publish_to("orders.new", i).await.unwrap(); }
///
/// // A subscriber that joins late starts from the beginning, then goes live.
/// let mut late = bus.subscriber("orders.>").from(StartAt::Beginning).subscribe().unwrap();
/// bus.publish_to("orders.new", 3).await.unwrap();
/// for i in 0..4 {
///     let e = late.recv().await.unwrap();
///     assert_eq!((e.payload, e.offset()), (i, Some(i as u64)));
/// }
///
/// // A named consumer commits after handling, and resumes after a restart.
/// let mut c = bus.subscriber("orders.>").consumer("billing").from(StartAt::Committed).subscribe().unwrap();
/// let first = c.recv().await.unwrap();
/// c.commit(&first).await.unwrap();
/// drop(c);
/// let mut c = bus.subscriber("orders.>").consumer("billing").from(StartAt::Committed).subscribe().unwrap();
/// assert_eq!(c.recv().await.unwrap().payload, 1);
/// # }
/// ```
pub trait EventStore<T>: Send + Sync + 'static {
    /// Appends `env`; resolves with its offset once the store acknowledges it as durable.
    fn append<'a>(&'a self, env: &'a Envelope<T>) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// The offset after the last acknowledged event.
    fn end(&self) -> u64;

    /// Acknowledged events with offsets in `[from, to)`, in order, each with
    /// [`Envelope::offset`] set. Reading may block on disk; it is sequential.
    fn read(&self, from: u64, to: u64) -> Result<StoredEvents<T>, StoreError>;

    /// The first offset whose event was stored at or after `at` (`end()` if none).
    fn offset_for_time(&self, at: SystemTime) -> Result<u64, StoreError>;

    /// Durably records that consumer `name` wants to go on from `offset`.
    fn commit_offset<'a>(
        &'a self,
        name: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The offset consumer `name` committed last, if any.
    fn committed_offset(&self, name: &str) -> Result<Option<u64>, StoreError>;
}

/// Where a subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartAt {
    /// With events published from now on (the default).
    Now,
    /// With the oldest event in the store.
    Beginning,
    /// With the event at this offset.
    Offset(u64),
    /// With the first event stored at or after this time.
    Time(SystemTime),
    /// Where the named consumer committed last (the beginning if it never did).
    Committed,
}

/// What a replaying subscription still has to read from the store.
pub(crate) struct Replay<T> {
    pub(crate) events: StoredEvents<T>,
    /// Live events below this offset were replayed: skip them.
    pub(crate) end: u64,
}

/// The store behind a subscription and its consumer name.
pub(crate) struct Durable<T> {
    pub(crate) store: Arc<dyn EventStore<T>>,
    pub(crate) consumer: Option<String>,
}

/// An [`EventStore`] in memory: for tests, and for replay without a disk.
/// Appends are acknowledged at once; nothing survives the process.
pub struct MemoryStore<T> {
    events: parking_lot::RwLock<Vec<Envelope<T>>>,
    offsets: parking_lot::Mutex<ahash::AHashMap<String, u64>>,
}

impl<T> std::fmt::Debug for MemoryStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("events", &self.events.read().len())
            .field("consumers", &self.offsets.lock().len())
            .finish()
    }
}

impl<T> Default for MemoryStore<T> {
    fn default() -> Self {
        MemoryStore {
            events: parking_lot::RwLock::new(Vec::new()),
            offsets: parking_lot::Mutex::new(ahash::AHashMap::new()),
        }
    }
}

impl<T> MemoryStore<T> {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<T: Clone + Send + Sync + 'static> EventStore<T> for MemoryStore<T> {
    fn append<'a>(&'a self, env: &'a Envelope<T>) -> BoxFuture<'a, Result<u64, StoreError>> {
        let mut events = self.events.write();
        let offset = events.len() as u64;
        events.push(env.clone().with_offset(offset));
        Box::pin(std::future::ready(Ok(offset)))
    }

    fn end(&self) -> u64 {
        self.events.read().len() as u64
    }

    fn read(&self, from: u64, to: u64) -> Result<StoredEvents<T>, StoreError> {
        let events = self.events.read();
        let to = (to as usize).min(events.len());
        let from = (from as usize).min(to);
        let slice: Vec<_> = events[from..to].iter().cloned().map(Ok).collect();
        Ok(Box::new(slice.into_iter()))
    }

    fn offset_for_time(&self, at: SystemTime) -> Result<u64, StoreError> {
        let events = self.events.read();
        Ok(events.partition_point(|e| e.timestamp() < at) as u64)
    }

    fn commit_offset<'a>(
        &'a self,
        name: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.offsets.lock().insert(name.to_string(), offset);
        Box::pin(std::future::ready(Ok(())))
    }

    fn committed_offset(&self, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.offsets.lock().get(name).copied())
    }
}
