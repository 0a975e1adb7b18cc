//! The context a module runs in: its name, publisher, subscriptions, shutdown signal.
//!
//! A [`Context`] is handed to [`Module::run`](crate::Module::run). Everything a
//! module publishes through it is stamped with the module's name as its
//! `source`; everything it receives through a context subscription
//! ([`Context::subscribe`], [`Context::subscriber`]) is remembered as the event
//! being handled, so what the module publishes next carries that event's
//! lineage without any code in the module.
//!
//! # Lineage
//!
//! When a module publishes while handling an event it received through a
//! context subscription, the new event's `causation_id` is the handled
//! event's id and its `correlation_id` is the handled event's correlation id
//! (as [`Message::caused_by`] would set them). An event counts as "being
//! handled" from the moment a context subscription returns it until the
//! module next waits on (polls) any of its context subscriptions, or calls
//! [`Context::end_handling`]. A message that already names a causation or
//! correlation id keeps its own.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use busline::{Bus, Context};
//! let bus: Bus<&'static str> = Bus::new();
//! let ctx = Context::detached("enricher", bus.clone());
//! let mut raw = ctx.subscribe("raw")?;
//! let mut out = bus.subscribe("enriched")?;
//!
//! let first = bus.publish_to("raw", "reading").await?;
//! let handled = raw.recv().await?;                 // now handling `first`
//! ctx.publish_to("enriched", "reading+").await?;   // no lineage code
//! let ev = out.recv().await?;
//! assert_eq!(ev.causation_id, Some(first.id));
//! assert_eq!(ev.correlation_id, handled.correlation_id);
//! assert_eq!(ev.source.as_deref(), Some("enricher"));
//! # Ok(()) }
//! ```
//!
//! Clones of a context share the "being handled" cell. A module that hands
//! events to helper tasks should give lineage explicitly there
//! ([`Context::send`] with [`Message::caused_by`]).
//!
//! # Own events
//!
//! By default a context subscription does not receive events the module
//! published itself (those whose `source` is the module's name); the filter
//! runs on the publisher's side, so they take no room in the queue and are
//! counted as `filtered`. Opt in with
//! [`include_own`](ModuleSubscriptionBuilder::include_own). Queue group
//! subscriptions are the exception: a group's queue is shared by its members,
//! which may be other modules, so it is never filtered on one module's name.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use busline::{Bus, Context};
//! let bus: Bus<u32> = Bus::new();
//! let ctx = Context::detached("echo", bus.clone());
//! let mut others = ctx.subscribe("n")?;
//! let mut all = ctx.subscriber("n").include_own(true).subscribe()?;
//! ctx.publish_to("n", 1).await?;   // from the module itself
//! bus.publish_to("n", 2).await?;   // from someone else
//! assert_eq!(others.recv().await?.payload, 2);
//! assert_eq!(all.recv().await?.payload, 1);
//! assert_eq!(all.recv().await?.payload, 2);
//! # Ok(()) }
//! ```
//!
//! # Requests
//!
//! A module answers requests like an actor: it subscribes to a topic, keeps
//! its state private, and answers each request event with [`Context::reply`].
//! See `examples/actor.rs`.

use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use parking_lot::Mutex;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::envelope::{Envelope, Event, EventId, Message};
use crate::error::{PublishError, RecvError, ReplyError, RequestError, SubscribeError};
use crate::runtime::module::Name;
use crate::runtime::SystemEvent;
use crate::stats::SubscriberStats;
use crate::subscription::{Policy, Subscription, SubscriptionBuilder};
use crate::topic::Pattern;
use crate::{Bus, Receipt};

/// The event a module is handling: what its next publish is caused by.
#[derive(Debug, Clone, Copy)]
struct Cause {
    id: EventId,
    correlation: EventId,
}

type CauseCell = Arc<Mutex<Option<Cause>>>;

/// What a module gets to run with. See the [module docs](self).
pub struct Context<T> {
    name: Name,
    bus: Bus<T>,
    system: Bus<SystemEvent>,
    shutdown: CancellationToken,
    cause: CauseCell,
    discarded: Arc<AtomicU64>,
}

impl<T> Clone for Context<T> {
    fn clone(&self) -> Self {
        Context {
            name: self.name.clone(),
            bus: self.bus.clone(),
            system: self.system.clone(),
            shutdown: self.shutdown.clone(),
            cause: self.cause.clone(),
            discarded: self.discarded.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Context<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("name", &self.name)
            .field("shutting_down", &self.shutdown.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Context<T> {
    pub(crate) fn new(
        name: Name,
        bus: Bus<T>,
        system: Bus<SystemEvent>,
        shutdown: CancellationToken,
        discarded: Arc<AtomicU64>,
    ) -> Self {
        Context {
            name,
            bus,
            system,
            shutdown,
            cause: Arc::new(Mutex::new(None)),
            discarded,
        }
    }

    /// A context outside any runtime (for tests and doc examples): its own
    /// system bus, a shutdown signal only [`shutdown_token`](Self::shutdown_token)
    /// can trigger.
    pub fn detached(name: &str, bus: Bus<T>) -> Self {
        Self::new(
            name.into(),
            bus,
            Bus::new(),
            CancellationToken::new(),
            Arc::new(AtomicU64::new(0)),
        )
    }

    /// The module's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The application's bus, unwrapped: what is published on it directly is
    /// not stamped with the module's name or lineage.
    pub fn bus(&self) -> &Bus<T> {
        &self.bus
    }

    /// The runtime's system bus (`$sys.` topics; see [`SystemEvent`]).
    pub fn system(&self) -> &Bus<SystemEvent> {
        &self.system
    }

    // ----- shutdown ----------------------------------------------------------

    /// Completes when the runtime tells this module to stop; `select!` on it.
    pub fn shutdown_requested(&self) -> WaitForCancellationFuture<'_> {
        self.shutdown.cancelled()
    }

    /// Whether the module was told to stop.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// The shutdown signal as a token, for helper tasks the module spawns.
    /// It is cancelled when the runtime shuts down and also when this
    /// instance of the module ends (returns, fails or panics), so helpers of
    /// an instance that was restarted do not outlive it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    // ----- lineage -----------------------------------------------------------

    /// The id of the event being handled (see [Lineage](self#lineage)), if any.
    pub fn handling(&self) -> Option<EventId> {
        self.cause.lock().map(|c| c.id)
    }

    /// Ends the handling of the current event: what is published next starts
    /// a new conversation.
    pub fn end_handling(&self) {
        *self.cause.lock() = None;
    }

    /// Stamps `msg` with the module's name (unless it names a source) and the
    /// lineage of the event being handled (unless it names its own).
    fn stamp(&self, mut msg: Message<T>) -> Message<T> {
        if msg.source.is_none() {
            msg.source = Some(self.name.clone());
        }
        if msg.causation_id.is_none() && msg.correlation_id.is_none() {
            if let Some(c) = *self.cause.lock() {
                msg.causation_id = Some(c.id);
                msg.correlation_id = Some(c.correlation);
            }
        }
        msg
    }

    // ----- publishing --------------------------------------------------------

    /// Publishes `event` on its own topic, stamped (see [`Bus::publish`]).
    pub async fn publish(&self, event: T) -> Result<Receipt, PublishError<T>>
    where
        T: Event,
    {
        let topic = event.topic().into_owned();
        self.send(Message::new(event).topic(topic)).await
    }

    /// Publishes `event` on `topic`, stamped (see [`Bus::publish_to`]).
    pub async fn publish_to(&self, topic: &str, event: T) -> Result<Receipt, PublishError<T>> {
        self.send(Message::new(event).topic(topic)).await
    }

    /// Publishes a [`Message`], stamped (see [`Bus::send`]).
    pub async fn send(&self, msg: Message<T>) -> Result<Receipt, PublishError<T>> {
        self.bus.send(self.stamp(msg)).await
    }

    /// Publishes without waiting, stamped (see [`Bus::try_publish`]).
    pub fn try_publish(&self, event: T) -> Result<Receipt, PublishError<T>>
    where
        T: Event,
    {
        let topic = event.topic().into_owned();
        self.try_send(Message::new(event).topic(topic))
    }

    /// [`try_publish`](Self::try_publish) on `topic`.
    pub fn try_publish_to(&self, topic: &str, event: T) -> Result<Receipt, PublishError<T>> {
        self.try_send(Message::new(event).topic(topic))
    }

    /// [`try_publish`](Self::try_publish) for a [`Message`].
    pub fn try_send(&self, msg: Message<T>) -> Result<Receipt, PublishError<T>> {
        self.bus.try_send(self.stamp(msg))
    }

    // ----- request/reply -----------------------------------------------------

    /// Sends a request, stamped, and waits up to `timeout` for the reply (see [`Bus::request`]).
    pub async fn request(
        &self,
        topic: &str,
        event: T,
        timeout: Duration,
    ) -> Result<Arc<Envelope<T>>, RequestError> {
        self.bus
            .request_msg(self.stamp(Message::new(event).topic(topic)), timeout)
            .await
    }

    /// Answers `request` with `event`; the reply's source is this module and
    /// its causation id the request's id (see [`Bus::reply`]).
    pub async fn reply(&self, request: &Envelope<T>, event: T) -> Result<(), ReplyError> {
        let msg = Message::new(event).source(self.name.clone());
        self.bus.reply_msg(request, msg).await
    }

    // ----- subscribing -------------------------------------------------------

    /// Subscribes to `pattern` (lossless, default capacity), without the
    /// module's own events. See [`subscriber`](Self::subscriber) for options.
    pub fn subscribe(&self, pattern: &str) -> Result<ModuleSubscription<T>, SubscribeError> {
        self.subscriber(pattern).subscribe()
    }

    /// Starts building a subscription with any delivery policy; it is named
    /// after the module unless [`name`](ModuleSubscriptionBuilder::name) says otherwise.
    pub fn subscriber(&self, pattern: &str) -> ModuleSubscriptionBuilder<'_, T> {
        ModuleSubscriptionBuilder {
            ctx: self,
            inner: self.bus.subscriber(pattern),
            include_own: false,
        }
    }
}

/// Options for a module's subscription; made by [`Context::subscriber`]. The
/// options are those of [`SubscriptionBuilder`], plus [`include_own`](Self::include_own).
#[must_use = "call .subscribe() to subscribe"]
pub struct ModuleSubscriptionBuilder<'a, T> {
    ctx: &'a Context<T>,
    inner: SubscriptionBuilder<'a, T>,
    include_own: bool,
}

impl<T: Send + Sync + 'static> ModuleSubscriptionBuilder<'_, T> {
    /// Lossless delivery (the default) with a queue of `capacity` events.
    pub fn lossless(mut self, capacity: usize) -> Self {
        self.inner = self.inner.lossless(capacity);
        self
    }

    /// Lossy delivery: drop the oldest when `capacity` is reached.
    pub fn lossy(mut self, capacity: usize) -> Self {
        self.inner = self.inner.lossy(capacity);
        self
    }

    /// Only the newest event per topic.
    pub fn latest(mut self) -> Self {
        self.inner = self.inner.latest();
        self
    }

    /// Competing consumers in `group`.
    pub fn queue(mut self, group: impl Into<String>) -> Self {
        self.inner = self.inner.queue(group);
        self
    }

    /// A keyed queue group: each key's events go to one member, in order
    /// (see [`SubscriptionBuilder::key`]).
    pub fn key<K: std::hash::Hash>(
        mut self,
        key: impl Fn(&Envelope<T>) -> K + Send + Sync + 'static,
    ) -> Self {
        self.inner = self.inner.key(key);
        self
    }

    /// Sets the policy.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.inner = self.inner.policy(policy);
        self
    }

    /// Sets the queue capacity.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.inner = self.inner.capacity(capacity);
        self
    }

    /// Names the subscriber (in stats and errors); the module's name by default.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.inner = self.inner.name(name);
        self
    }

    /// Adds a predicate, run on the publisher's side.
    pub fn filter(mut self, f: impl Fn(&Envelope<T>) -> bool + Send + Sync + 'static) -> Self {
        self.inner = self.inner.filter(f);
        self
    }

    /// Sets the high and low watermarks of a lossless queue.
    pub fn watermarks(mut self, high: usize, low: usize) -> Self {
        self.inner = self.inner.watermarks(high, low);
        self
    }

    /// Starts in the past: replays the durable store from `start`, then goes
    /// on live (see [`store`](crate::store)).
    pub fn from(mut self, start: crate::store::StartAt) -> Self {
        self.inner = self.inner.from(start);
        self
    }

    /// Makes this a named consumer whose position the store keeps.
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        self.inner = self.inner.consumer(name);
        self
    }

    /// The store to replay from (default: the first store the bus persists to).
    pub fn store(mut self, store: Arc<dyn crate::store::EventStore<T>>) -> Self {
        self.inner = self.inner.store(store);
        self
    }

    /// Whether to receive the module's own events too (default: no; queue
    /// group members always do, see [Own events](self#own-events)).
    pub fn include_own(mut self, yes: bool) -> Self {
        self.include_own = yes;
        self
    }

    /// Subscribes.
    pub fn subscribe(mut self) -> Result<ModuleSubscription<T>, SubscribeError> {
        let ctx = self.ctx;
        if self.inner.name.is_none() {
            self.inner.name = Some(ctx.name.to_string());
        }
        // A queue group's filter is shared by all its members (possibly other
        // modules), so it gets no per-module filter.
        let group = matches!(self.inner.policy, Policy::Queue(_));
        if !self.include_own && !group {
            let me = ctx.name.clone();
            let user = self.inner.filter.take();
            self.inner.filter = Some(Arc::new(move |env: &Envelope<T>| {
                env.source.as_deref() != Some(&*me) && user.as_ref().is_none_or(|f| f(env))
            }));
        }
        let mut inner = self.inner.subscribe()?;
        inner.discard_counter = Some(ctx.discarded.clone());
        Ok(ModuleSubscription {
            inner,
            cause: ctx.cause.clone(),
        })
    }
}

/// A module's subscription: a [`Subscription`] that records each event it
/// returns as the one being handled (see [Lineage](self#lineage)).
///
/// Dropping it (when the module stops) discards what is still queued; the
/// count goes to the module's `discarded` in the runtime's status and report.
pub struct ModuleSubscription<T> {
    /// Counts what it discards into the module's `discarded` when dropped.
    inner: Subscription<T>,
    cause: CauseCell,
}

impl<T> std::fmt::Debug for ModuleSubscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl<T: Send + Sync + 'static> ModuleSubscription<T> {
    /// Receives the next event and marks it as being handled. Cancel safe,
    /// as [`Subscription::recv`] (in a queue group a wake-up it got for an
    /// event it did not take goes to another waiting member).
    pub async fn recv(&mut self) -> Result<Arc<Envelope<T>>, RecvError> {
        // Waiting ends the handling of the previous event.
        *self.cause.lock() = None;
        let r = self.inner.recv().await;
        self.note(&r.as_ref().map(Some));
        r
    }

    /// Receives an event if one is ready (`Ok(None)` if none), marking it as being handled.
    pub fn try_recv(&mut self) -> Result<Option<Arc<Envelope<T>>>, RecvError> {
        let r = self.inner.try_recv();
        self.note(&r.as_ref().map(|o| o.as_ref()));
        r
    }

    /// Polls for the next event (the building block of `recv` and `Stream`).
    /// Waiting ends the handling of the previous event.
    pub fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<Arc<Envelope<T>>, RecvError>> {
        match self.inner.poll_recv(cx) {
            Poll::Ready(r) => {
                self.note(&r.as_ref().map(Some));
                Poll::Ready(r)
            }
            Poll::Pending => {
                *self.cause.lock() = None;
                Poll::Pending
            }
        }
    }

    fn note(&self, r: &Result<Option<&Arc<Envelope<T>>>, &RecvError>) {
        *self.cause.lock() = match r {
            Ok(Some(env)) => Some(Cause {
                id: env.id,
                correlation: env.correlation_id,
            }),
            _ => None,
        };
    }

    /// Records `env` as processed by this named consumer (see [`Subscription::commit`]).
    pub fn commit(
        &self,
        env: &Envelope<T>,
    ) -> impl std::future::Future<Output = Result<(), crate::store::StoreError>> + Send + 'static
    {
        self.inner.commit(env)
    }

    /// Takes every event already queued (without waiting), e.g. to finish
    /// them during shutdown. Stops at the first error (lag or close).
    pub fn drain(&mut self) -> Vec<Arc<Envelope<T>>> {
        let mut out = Vec::new();
        while let Ok(Some(e)) = self.try_recv() {
            out.push(e);
        }
        out
    }

    /// The subscriber's name.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// The pattern subscribed to.
    pub fn pattern(&self) -> &Pattern {
        self.inner.pattern()
    }

    /// The delivery policy.
    pub fn policy(&self) -> &Policy {
        self.inner.policy()
    }

    /// Events waiting for this subscriber.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// This subscriber's counters.
    pub fn stats(&self) -> SubscriberStats {
        self.inner.stats()
    }
}

impl<T: Send + Sync + 'static> futures::Stream for ModuleSubscription<T> {
    /// `Err` is [`RecvError::Lagged`], or [`RecvError::Store`] when a replay
    /// failed (the stream goes on live after it); the stream ends when the
    /// bus closes.
    type Item = Result<Arc<Envelope<T>>, RecvError>;

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        match self.get_mut().poll_recv(cx) {
            Poll::Ready(Err(RecvError::Closed)) => Poll::Ready(None),
            Poll::Ready(r) => Poll::Ready(Some(r)),
            Poll::Pending => Poll::Pending,
        }
    }
}
