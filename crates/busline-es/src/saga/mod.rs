//! Sagas (process managers): long-running processes that react to events,
//! issue commands, wait with timeouts and compensate on failure.
//!
//! A [`Saga`] type declares which bus topics it listens to, which messages
//! start an instance and which continue one ([`Saga::route`], keyed by a
//! correlation id taken from the message), and how an instance handles a
//! message or a timeout: the returned [`Decision`] may change its state
//! (event-sourced: [`Saga::apply`]), emit commands or events, schedule or
//! cancel timeouts, and finish it. A [`SagaManager`] runs every instance of
//! one saga type as a busline [`Module`](busline::Module), so the
//! [`Runtime`](busline::Runtime) supervises it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use busline::{Bus, Context, Module};
//! use busline_es::saga::{doc_support::Ping, SagaManager};
//! # let tmp = tempfile::tempdir()?;
//! let log = busline_log::Log::open(tmp.path(), Default::default())?;
//! let bus: Bus<String> = Bus::new();
//! let mut replies = bus.subscribe("ping.reply")?;
//! let manager = SagaManager::<Ping>::open(log)?;
//! let ctx = Context::detached("ping", bus.clone());
//! let stop = ctx.shutdown_token();
//! let task = tokio::spawn({ let mut m = manager.clone(); async move { m.run(ctx).await } });
//! manager.ready().await;
//! bus.publish_to("ping.in", "start p1".to_owned()).await?;  // starts saga p1, which replies
//! assert_eq!(replies.recv().await?.payload, "pong p1 1");
//! // It scheduled a timeout of 10 s: on paused time it fires once the clock gets there.
//! assert_eq!(replies.recv().await?.payload, "timed out p1");
//! stop.cancel(); // a step in progress (here: marking the reply published) completes first
//! task.await?.map_err(|e| e.to_string())?;
//! let status = manager.inspect("p1")?.unwrap();
//! assert!(status.finished);
//! assert_eq!((status.timeouts_fired, status.emitted, status.unpublished), (1, 2, 0));
//! # Ok(()) }
//! ```
//!
//! # Storage: one record per step
//!
//! An instance is stored as a stream of the crate's [`AggregateStore`](crate::AggregateStore)
//! (aggregate type [`Saga::NAME`], id = correlation id) in a
//! [`busline_log::Log`], which may be shared with other aggregate types.
//! Run one manager per saga type and log (like the event store, a second
//! writer of the same streams would not see the first one's records).
//! Each handled input is **one** log record holding the input's id (a
//! message's event id or a timeout's number), the saga's state events, its
//! emits, the timeouts it schedules and cancels, and whether it finished.
//! The log checks each record as a unit on recovery, so after a crash a step
//! is either entirely there or entirely absent. A restarted manager rebuilds
//! every instance by replaying its records (finished ones too: keep the
//! number of sagas per log reasonable, or give a new log to new sagas).
//! Each instance keeps the ids of the messages it handled, so its state
//! grows with its inputs: sagas are meant for processes of tens or
//! hundreds of steps, not for endless streams.
//!
//! # Ordering per correlation id
//!
//! A manager handles one input at a time, on one task, for all its
//! instances: an input's step is durable, and its emits are handed to the
//! bus, before the next input is looked at. So the inputs of one
//! correlation id are handled in the order the manager receives them (for
//! messages from one publisher on one topic pattern, publish order; across
//! publishers the bus gives no order), and each instance's emits are
//! published in the order it decided them, also when re-published after a
//! restart (recovery publishes before anything new is handled). A message
//! id an instance has handled is recorded with the step, and the same id
//! again is ignored:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use busline::{Bus, Context, EventId, Message, Module};
//! # use busline_es::saga::{doc_support::Ping, SagaManager};
//! # let tmp = tempfile::tempdir()?;
//! # let log = busline_log::Log::open(tmp.path(), Default::default())?;
//! # let bus: Bus<String> = Bus::new();
//! # let manager = SagaManager::<Ping>::open(log)?;
//! # let ctx = Context::detached("ping", bus.clone());
//! # let stop = ctx.shutdown_token();
//! # let task = tokio::spawn({ let mut m = manager.clone(); async move { m.run(ctx).await } });
//! # manager.ready().await;
//! let mut replies = bus.subscribe("ping.reply")?;
//! bus.publish_to("ping.in", "start p1".to_owned()).await?;
//! for _ in 0..3 {
//!     bus.publish_to("ping.in", "ping p1".to_owned()).await?;
//! }
//! let again = Message::new("ping p1".to_owned()).topic("ping.in").id(EventId::from_u128(7));
//! bus.send(again.clone()).await?;
//! bus.send(again).await?; // a repeat: ignored
//! for n in 1..=5 {
//!     assert_eq!(replies.recv().await?.payload, format!("pong p1 {n}"));
//! }
//! # stop.cancel();
//! # task.await?.map_err(|e| e.to_string())?;
//! assert_eq!(manager.inspect("p1")?.unwrap().handled, 5);
//! # Ok(()) }
//! ```
//!
//! # What the outbox promises
//!
//! - An emit is stored if and only if the step that decided it is stored:
//!   the saga cannot change state without its emits, nor emit without the
//!   change.
//! - A stored emit is handed to the bus at least once, as long as a
//!   manager of its saga type runs on the log: the dispatcher publishes the
//!   step's emits right after the step, then appends a `Published` mark;
//!   a manager that restarts (after a crash, a panic, a shutdown) first
//!   publishes every emit without a mark.
//! - Every publication of an emit carries the same [`EventId`](busline::EventId)
//!   ([`emit_id`]: saga type, correlation id, emit number) and the
//!   [`EMIT_HEADER`] header, so receivers drop repeats by id.
//! - An emit is decided once: a message already handled (its id is in the
//!   instance's state, stored with the step) or a timeout already fired is
//!   ignored when it comes again, so no step is ever re-run to make a second
//!   emit with a new id.
//!
//! What it does **not** promise:
//!
//! - Exactly-once delivery. A crash between a publish and its mark sends
//!   the emit again; handlers de-duplicate by id ([`Dedup`] does it
//!   durably).
//! - Delivery beyond the bus. "Published" means handed to the bus: an emit
//!   sitting in an in-memory subscriber's queue when the process dies is
//!   gone. When receivers must get every emit, persist the emit topics on
//!   the bus ([`Bus::persist`](busline::Bus::persist) with busline-log's
//!   `LogStore`: a publish returns once the event is in the log) and make
//!   the handlers named consumers that commit after handling
//!   (`consumer(..).from(StartAt::Committed)`): an emit published just
//!   before a crash is then handled after the restart, and with [`Dedup`]
//!   its effect happens exactly once. The crate's kill -9 test
//!   (`tests/saga_survives_kill9.rs`) runs that set-up. Or let the saga's
//!   own timeouts ask again.
//! - Durable inputs, unless asked for. By default inputs come from the
//!   bus live: a message published while no manager is subscribed (before
//!   [`SagaManager::ready`], during a restart after a panic) or still queued
//!   when the process dies is not stored, and the message whose handling
//!   panicked is not handled again. A publisher that retries with the same
//!   event id is safe: a handled id is ignored. With
//!   [`SagaManager::durable_inputs`] on a bus that persists the saga's
//!   topics, the manager reads them as named consumers of the store and
//!   commits each input after its step: nothing published is missed, and
//!   an input handled but not committed comes again and is ignored. A
//!   message whose handling panics then comes again after each restart,
//!   until the runtime's restart policy gives up on the module.
//! - Atomicity across instances: each step touches one saga.
//!
//! # Timeouts
//!
//! A timeout is scheduled in the record of the step that decided it, due at
//! a wall-clock time, and unscheduled by the record of the step that handles
//! it ([`Saga::on_timeout`]), so it fires at most once; a running manager
//! re-arms every pending timeout on recovery (one that fell due while the
//! process was down fires at once), so it fires at least once unless the
//! saga cancels it or finishes. The clock is tokio's, anchored to the wall
//! clock when the manager starts, so `tokio::time::pause` and
//! `start_paused` drive timeouts in tests (see [`timeout`]). A timeout
//! never fires before it is due; how late it fires depends on what else the
//! manager is handling (one input at a time).
//!
//! # Supervision
//!
//! [`SagaManager`] is a [`Module`](busline::Module) over the application's
//! bus: a handler that panics fails the module; the runtime restarts a
//! fresh clone (per its restart policy), which rebuilds every instance from
//! the log. Nothing of the failed step was stored.

mod decision;
mod dedup;
mod instance;
mod manager;
mod outbox;
pub mod timeout;

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use decision::Decision;
pub use dedup::Dedup;
pub use manager::{SagaManager, SagaStatus};
pub use outbox::{emit_id, EMIT_HEADER};

/// What a message means to a saga type ([`Saga::route`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Starts the saga with this correlation id (or continues it if it exists).
    Start(String),
    /// Continues the saga with this correlation id; ignored if there is none.
    Handle(String),
    /// Not for this saga type.
    Ignore,
}

/// A process manager: state per correlation id, event-sourced, driven by
/// bus messages and timeouts. See the [module docs](self).
///
/// `handle` and `on_timeout` decide; `apply` evolves the state by one of
/// the saga's own events and must not fail. The state is rebuilt by
/// applying the stored events again, so `handle` and `on_timeout` should
/// only look at the state and the input (no clocks, no randomness: put
/// such values into the events).
pub trait Saga:
    Default + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The saga type's name: the aggregate type of its streams in the log.
    const NAME: &'static str;
    /// The application's bus event type.
    type Message: Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The saga's own state changes.
    type Event: Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What a timeout carries back to [`on_timeout`](Saga::on_timeout).
    type Timeout: Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The topic patterns the manager subscribes to.
    fn topics() -> Vec<String>;

    /// Whether `message` starts or continues an instance, and which.
    fn route(message: &Self::Message) -> Route;

    /// Handles a message routed to this instance.
    fn handle(&self, message: &Self::Message) -> Decision<Self>;

    /// Handles one of this instance's timeouts coming due.
    fn on_timeout(&self, timeout: &Self::Timeout) -> Decision<Self>;

    /// Applies one of the saga's events to its state.
    fn apply(&mut self, event: &Self::Event);
}

#[doc(hidden)]
pub mod doc_support {
    //! A tiny saga for the doctests.
    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    use super::{Decision, Route, Saga};

    /// Replies to pings on `ping.reply`; gives up 10 s after its last ping.
    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Ping {
        /// Its correlation id.
        pub id: String,
        /// Pings received.
        pub pings: u32,
    }

    impl Saga for Ping {
        const NAME: &'static str = "ping";
        type Message = String;
        type Event = String;
        type Timeout = ();

        fn topics() -> Vec<String> {
            vec!["ping.in".into()]
        }

        fn route(message: &String) -> Route {
            match message.split_once(' ') {
                Some(("start", id)) => Route::Start(id.into()),
                Some(("ping", id)) => Route::Handle(id.into()),
                _ => Route::Ignore,
            }
        }

        fn handle(&self, message: &String) -> Decision<Self> {
            let id = message.split_once(' ').map_or("", |(_, id)| id);
            Decision::new()
                .apply(id.to_owned())
                .emit("ping.reply", format!("pong {id} {}", self.pings + 1))
                .schedule("give-up", Duration::from_secs(10), ())
        }

        fn on_timeout(&self, _: &()) -> Decision<Self> {
            Decision::new()
                .emit("ping.reply", format!("timed out {}", self.id))
                .finish()
        }

        fn apply(&mut self, id: &String) {
            self.id = id.clone();
            self.pings += 1;
        }
    }
}
