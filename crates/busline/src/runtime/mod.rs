//! The runtime: starts modules, supervises them, and shuts them down.
//!
//! ```
//! use std::time::Duration;
//! use busline::{BoxError, Bus, Context, Module, Runtime, StopReason};
//!
//! #[derive(Clone)]
//! struct Ticker;
//! impl Module<u32> for Ticker {
//!     fn name(&self) -> &str { "ticker" }
//!     async fn run(&mut self, ctx: Context<u32>) -> Result<(), BoxError> {
//!         for i in 0..3 { ctx.publish_to("ticks", i).await?; }
//!         Ok(()) // done: a normal stop
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let bus = Bus::new();
//! let mut ticks = bus.subscribe("ticks").unwrap();
//! let mut rt = Runtime::new(bus);
//! rt.add(Ticker);
//! let report = rt.run().await.unwrap();
//! assert_eq!(report.reason, StopReason::Finished);
//! assert_eq!(ticks.recv().await.unwrap().source.as_deref(), Some("ticker"));
//! # }
//! ```
//!
//! # Start order
//!
//! Modules start in the order they were added, and each starts only once the
//! one before it has reached its first `.await` in `run` (or ended). So a
//! module that subscribes at the top of `run` is subscribed before any module
//! added after it publishes anything: add consumers first. Restarted
//! instances start on their own, without waiting for anyone. (A module that
//! blocks its thread before its first `.await` therefore holds up the start
//! of the modules after it; a shutdown request still ends the run.)
//!
//! # How a run ends
//!
//! [`Runtime::run`] returns when
//! - every module has finished (`Ok` with [`StopReason::Finished`]),
//! - a [`RuntimeHandle::shutdown`] was called ([`StopReason::Requested`]),
//! - the process got Ctrl-C or SIGTERM ([`StopReason::Signal`]; turn this off
//!   with [`Runtime::handle_signals`]), or
//! - a module failed for good (`Err`: [`RuntimeError::ModuleFailed`] under
//!   [`Restart::Never`], [`RuntimeError::RestartLimit`] past its restart limit).
//!
//! In every case the other modules are then shut down gracefully, and the
//! [`Report`] (inside the error, too) says what happened to each.
//!
//! # Shutdown
//!
//! 1. **Pending restarts are cancelled**: a module waiting for its backoff is
//!    marked stopped and never starts again.
//! 2. **Modules are told to stop in reverse start order** (the order they were
//!    added): the last added stops first. Add consumers (loggers, sinks) before
//!    producers, so producers stop first and consumers still drain what the
//!    producers published last.
//! 3. **Each gets its deadline** ([`Supervision::shutdown_timeout`]) to return
//!    from `run`, one after the other. While it drains it can still publish
//!    and receive: the bus stays open. A module that returns in time is
//!    `stopped`.
//! 4. **Past its deadline it is aborted**: its task is cancelled at its next
//!    `.await`, and it is listed in [`Report::aborted`]. A publish it was
//!    waiting on (a full lossless subscriber) is cancelled: no subscriber got
//!    that event (the bus counts it as `cancelled`).
//!
//! ## Events in flight
//!
//! - Events still queued in a module's subscriptions when it stops (returned
//!   or aborted) are discarded with the subscription: they are counted in the
//!   module's [`ModuleStatus::discarded`] and in the bus's `discarded` stats,
//!   never dropped silently. A module that must finish them takes them with
//!   [`Subscription::drain`](crate::Subscription::drain) once
//!   [`Context::shutdown_requested`] fires.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::time::Duration;
//! use busline::{BoxError, Bus, Context, Module, Runtime};
//!
//! #[derive(Clone)]
//! struct Sink { careful: bool }
//! impl Module<u32> for Sink {
//!     fn name(&self) -> &str { if self.careful { "careful" } else { "hasty" } }
//!     async fn run(&mut self, ctx: Context<u32>) -> Result<(), BoxError> {
//!         let mut jobs = ctx.subscribe("jobs")?;
//!         ctx.shutdown_requested().await; // reads nothing before shutdown
//!         if self.careful {
//!             assert_eq!(jobs.drain().len(), 3); // finishes what is queued
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let bus = Bus::new();
//! let mut rt = Runtime::new(bus.clone()).handle_signals(false);
//! rt.add(Sink { careful: true });
//! rt.add(Sink { careful: false });
//! let handle = rt.handle();
//! let run = tokio::spawn(rt.run());
//! tokio::time::sleep(Duration::from_millis(1)).await; // both are subscribed
//! for job in 0..3 { bus.publish_to("jobs", job).await.unwrap(); }
//! handle.shutdown();
//! let report = run.await.unwrap().unwrap();
//! assert_eq!(report.module("careful").unwrap().discarded, 0);
//! assert_eq!(report.module("hasty").unwrap().discarded, 3); // counted, not silent
//! assert_eq!(bus.stats().discarded, 3);
//! # }
//! ```
//!
//! - Events a stopped module would have received later are not queued for it
//!   (its subscription is gone); other subscribers are unaffected.
//! - A queue group member that stops leaves its group's queue to the other members.
//! - The runtime does not close the application's bus: it belongs to the caller.
//!
//! ## The deadline
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::time::Duration;
//! use busline::{BoxError, Bus, Context, Module, ModuleState, Runtime};
//!
//! #[derive(Clone)]
//! struct Deaf;
//! impl Module<u32> for Deaf {
//!     fn name(&self) -> &str { "deaf" }
//!     async fn run(&mut self, _ctx: Context<u32>) -> Result<(), BoxError> {
//!         loop { tokio::time::sleep(Duration::from_secs(1)).await } // ignores shutdown
//!     }
//! }
//!
//! let mut rt = Runtime::new(Bus::new()).handle_signals(false);
//! rt.add(Deaf).shutdown_timeout(Duration::from_secs(3));
//! let handle = rt.handle();
//! let run = tokio::spawn(rt.run());
//! tokio::time::sleep(Duration::from_secs(1)).await;
//! let asked = tokio::time::Instant::now();
//! handle.shutdown();
//! let report = run.await.unwrap().unwrap();
//! assert_eq!(asked.elapsed(), Duration::from_secs(3)); // waited for its deadline
//! assert_eq!(report.aborted, ["deaf"]);
//! assert_eq!(report.module("deaf").unwrap().state, ModuleState::Aborted);
//! # }
//! ```
//!
//! ## Code that never yields
//!
//! Aborting a tokio task only takes effect at an `.await`. A module stuck in
//! a loop that awaits but ignores the shutdown signal is aborted at the
//! deadline. A module blocked *without* awaiting (a busy loop, a blocking
//! call on the async thread) cannot be aborted by anyone: after aborting it
//! the runtime waits [`Runtime::abort_grace`] for its task to end, then gives
//! up, lists it in [`Report::abandoned`] and returns; that thread stays
//! blocked (and may keep the process's tokio runtime from shutting down).
//! Blocking work belongs in `spawn_blocking`: then the module's `.await` on it
//! is cancelled at the deadline as usual, while the blocking closure itself
//! runs on to its end in the background.
//!
//! # System events and status
//!
//! Every lifecycle change is published on the runtime's system bus
//! ([`Runtime::system_bus`]) under `$sys.module.<name>.<started|stopped|failed|restarting>`,
//! and `$sys.runtime.shutdown` when shutdown begins. The runtime answers a
//! [`SystemEvent::StatusRequest`] sent to [`STATUS_TOPIC`] (or
//! [`RuntimeHandle::status`]) with every module's state, restart count and uptime.
//! The runtime never waits for a system subscriber: one that is full (lossless)
//! misses the event, which is counted in [`Report::system_events_refused`];
//! subscribe to `$sys.>` with a `lossy` policy to never be refused.
//!
//! # Files
//!
//! - [`module`]: the [`Module`](crate::Module) trait and a module's state;
//! - [`context`]: the [`Context`] a module runs in;
//! - [`supervisor`]: restart policies and backoff;
//! - `system`: the runtime's own events ([`SystemEvent`]);
//! - `setup`: [`Runtime`] and [`ModuleSpec`], before the run;
//! - `running`: the run itself (starting, restarts, shutdown);
//! - `slot`: one module's place in a run;
//! - `report`: how a run ended ([`Report`], [`RuntimeError`]);
//! - `handle`: [`RuntimeHandle`].

use std::future::Future;
use std::pin::Pin;

use crate::Context;

pub mod context;
mod handle;
pub mod module;
mod report;
mod running;
mod setup;
mod signals;
mod slot;
mod spec;
pub mod supervisor;
mod system;

pub use handle::RuntimeHandle;
pub use report::{Report, RuntimeError, StopReason};
pub use setup::Runtime;
pub use spec::ModuleSpec;
pub use system::{SystemEvent, SHUTDOWN_TOPIC, STATUS_TOPIC};

use module::BoxError;
#[cfg(doc)]
use module::ModuleStatus;
#[cfg(doc)]
use supervisor::{Restart, Supervision};

pub(crate) type RunFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;
pub(crate) type Spawner<T> = Box<dyn FnMut(Context<T>) -> RunFuture + Send>;
pub(crate) type Resolver<T> = Box<dyn FnOnce(&Config) -> Result<Spawner<T>, RuntimeError> + Send>;

#[cfg(feature = "config")]
pub(crate) use crate::config::Config;
/// Without the `config` feature, modules are resolved with no configuration.
#[cfg(not(feature = "config"))]
pub(crate) type Config = ();
