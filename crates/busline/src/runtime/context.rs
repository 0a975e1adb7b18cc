//! The context a module runs in: its name, its handle on the bus, its
//! shutdown signal.
//!
//! The semantics are on [`Context`].

use std::ops::Deref;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::event_id::EventId;
use crate::runtime::SystemEvent;
use crate::Bus;

/// What a module gets to run with: the bus, stamped for the module (it
/// derefs to it), and its shutdown signal.
///
/// A [`Context`] is handed to [`Module::run`](crate::Module::run). It derefs
/// to the application's [`Bus`], stamped for the module: the whole bus API
/// (publish, request/reply, subscribe with every option) works on it, and
/// everything the module publishes through it carries the module's name as
/// its `source`; everything it receives through a subscription made on it
/// is remembered as the event being handled, so what the module publishes
/// next carries that event's lineage without any code in the module.
///
/// # Lineage
///
/// When a module publishes while handling an event it received through a
/// context subscription, the new event's `causation_id` is the handled
/// event's id and its `correlation_id` is the handled event's correlation id
/// (as [`Message::caused_by`](crate::Message::caused_by) would set them). An
/// event counts as "being handled" from the moment a context subscription
/// returns it until the module next waits on (polls) any of its context
/// subscriptions, or calls [`Context::end_handling`]. A message that already names a causation or
/// correlation id keeps its own.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use busline::{Bus, Context};
/// let bus: Bus<&'static str> = Bus::new();
/// let ctx = Context::detached("enricher", bus.clone());
/// let mut raw = ctx.subscribe("raw")?;
/// let mut out = bus.subscribe("enriched")?;
///
/// let first = bus.publish_to("raw", "reading").await?;
/// let handled = raw.recv().await?;                 // now handling `first`
/// ctx.publish_to("enriched", "reading+").await?;   // no lineage code
/// let ev = out.recv().await?;
/// assert_eq!(ev.causation_id(), Some(first.id));
/// assert_eq!(ev.correlation_id, handled.correlation_id);
/// assert_eq!(ev.source.as_deref(), Some("enricher"));
/// # Ok(()) }
/// ```
///
/// Clones of a context share the "being handled" cell. A module that hands
/// events to helper tasks should give lineage explicitly there
/// ([`Bus::send`] with [`Message::caused_by`](crate::Message::caused_by)).
///
/// # Own events
///
/// By default a context subscription does not receive events the module
/// published itself (those whose `source` is the module's name); the filter
/// runs on the publisher's side, so they take no room in the queue and are
/// counted as `filtered`. Opt in with
/// [`include_own`](crate::SubscriptionBuilder::include_own). Queue group
/// subscriptions are the exception: a group's queue is shared by its members,
/// which may be other modules, so it is never filtered on one module's name.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use busline::{Bus, Context};
/// let bus: Bus<u32> = Bus::new();
/// let ctx = Context::detached("echo", bus.clone());
/// let mut others = ctx.subscribe("n")?;
/// let mut all = ctx.subscriber("n").include_own(true).subscribe()?;
/// ctx.publish_to("n", 1).await?;   // from the module itself
/// bus.publish_to("n", 2).await?;   // from someone else
/// assert_eq!(others.recv().await?.payload, 2);
/// assert_eq!(all.recv().await?.payload, 1);
/// assert_eq!(all.recv().await?.payload, 2);
/// # Ok(()) }
/// ```
///
/// # Requests
///
/// A module answers requests like an actor: it subscribes to a topic, keeps
/// its state private, and answers each request event with [`Bus::reply`]
/// on its context.
/// See `examples/actor.rs`.
pub struct Context<T> {
    /// Stamped with the module's name and the event it is handling.
    stamped: Bus<T>,
    plain: Bus<T>,
    system: Bus<SystemEvent>,
    shutdown: CancellationToken,
}

impl<T> Clone for Context<T> {
    fn clone(&self) -> Self {
        Context {
            stamped: self.stamped.clone(),
            plain: self.plain.clone(),
            system: self.system.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Context<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("name", &self.name())
            .field("shutting_down", &self.shutdown.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl<T> Deref for Context<T> {
    type Target = Bus<T>;

    /// The bus, stamped for this module.
    fn deref(&self) -> &Bus<T> {
        &self.stamped
    }
}

impl<T: Send + Sync + 'static> Context<T> {
    pub(crate) fn new(
        name: Arc<str>,
        bus: Bus<T>,
        system: Bus<SystemEvent>,
        shutdown: CancellationToken,
        discarded: Arc<AtomicU64>,
    ) -> Self {
        Context {
            stamped: bus.stamped(name, discarded),
            plain: bus.unstamped(),
            system,
            shutdown,
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
}

impl<T> Context<T> {
    fn stamp(&self) -> &crate::bus::Stamp {
        self.stamped.stamp().expect("a context's bus is stamped")
    }

    /// The module's name.
    pub fn name(&self) -> &str {
        &self.stamp().name
    }

    /// The application's bus, unstamped: what is published on it directly
    /// does not carry the module's name or lineage, and its subscriptions
    /// are not the module's.
    pub fn bus(&self) -> &Bus<T> {
        &self.plain
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

    /// The id of the event being handled (see [Lineage](Context#lineage)), if any.
    pub fn handling(&self) -> Option<EventId> {
        self.stamp().handling.get().map(|c| c.id)
    }

    /// Ends the handling of the current event: what is published next starts
    /// a new conversation.
    pub fn end_handling(&self) {
        self.stamp().handling.set::<T>(None);
    }
}
