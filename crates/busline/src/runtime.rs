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
//!   [`ModuleSubscription::drain`](crate::ModuleSubscription::drain) once
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

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, ModuleSettings};
use crate::context::Context;
use crate::error::RequestError;
use crate::module::{
    check_name, BoxError, Module, ModuleState, ModuleStatus, Name, SystemEvent, STATUS_TOPIC,
};
use crate::supervisor::{panic_message, Backoff, Intensity, Restart, Supervision};
use crate::Bus;

type RunFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;
type Spawner<T> = Box<dyn FnMut(Context<T>) -> RunFuture + Send>;
type Resolver<T> = Box<dyn FnOnce(&Config) -> Result<Spawner<T>, RuntimeError> + Send>;

/// How a run ended without error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// Every module finished on its own.
    Finished,
    /// [`RuntimeHandle::shutdown`] was called.
    Requested,
    /// The process got a signal (`"SIGINT"` for Ctrl-C, `"SIGTERM"`).
    Signal(&'static str),
    /// A module failed for good (see the error that carries this report).
    ModuleFailed(String),
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Finished => f.write_str("every module finished"),
            StopReason::Requested => f.write_str("shutdown was requested"),
            StopReason::Signal(s) => write!(f, "the process got {s}"),
            StopReason::ModuleFailed(m) => write!(f, "module `{m}` failed for good"),
        }
    }
}

/// What a run did: why it ended and what became of each module.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Report {
    /// Why the run ended.
    pub reason: StopReason,
    /// Every module in the order they were added, in its final state.
    pub modules: Vec<ModuleStatus>,
    /// Modules that did not stop by their shutdown deadline and were aborted.
    pub aborted: Vec<String>,
    /// Aborted modules whose task still had not ended after the abort grace
    /// period (code that never yields; see the module docs).
    pub abandoned: Vec<String>,
    /// System events that a full lossless system subscriber did not get.
    pub system_events_refused: u64,
}

impl Report {
    /// The final status of `module`.
    pub fn module(&self, module: &str) -> Option<&ModuleStatus> {
        self.modules.iter().find(|m| m.name == module)
    }
}

/// Why a run failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A module's name cannot be used (nothing was started).
    #[error("invalid module name `{name}`: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two modules have the same name (nothing was started).
    #[error("two modules are named `{name}`; module names must be unique")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// The configuration is wrong (nothing was started).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A module under [`Restart::Never`] failed.
    #[error("module `{module}` failed and its restart policy is `never`: {error}")]
    ModuleFailed {
        /// The module.
        module: String,
        /// Its error or panic message (`panicked: ...` for a panic).
        error: String,
        /// How many times it had been restarted.
        restarts: u32,
        /// What happened to every module.
        report: Box<Report>,
    },
    /// A module failed more often than its restart limit allows.
    #[error("module `{module}` exceeded its restart limit ({max_restarts} restarts within {within:?}) after {restarts} restarts; last error: {last_error}")]
    RestartLimit {
        /// The module.
        module: String,
        /// How many times it was restarted.
        restarts: u32,
        /// The limit ...
        max_restarts: u32,
        /// ... within this window.
        within: Duration,
        /// Its last error or panic message (`panicked: ...` for a panic).
        last_error: String,
        /// What happened to every module.
        report: Box<Report>,
    },
}

impl RuntimeError {
    /// The report of the run, if modules had started.
    pub fn report(&self) -> Option<&Report> {
        match self {
            RuntimeError::ModuleFailed { report, .. }
            | RuntimeError::RestartLimit { report, .. } => Some(report),
            _ => None,
        }
    }
}

/// Controls a running [`Runtime`] from elsewhere. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RuntimeHandle {
    token: CancellationToken,
    system: Bus<SystemEvent>,
}

impl RuntimeHandle {
    /// Starts the graceful shutdown (the run ends with [`StopReason::Requested`]).
    /// Calling it before `run` makes `run` stop at once.
    pub fn shutdown(&self) {
        self.token.cancel();
    }

    /// Whether shutdown was requested.
    pub fn is_shutdown(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Asks the runtime for every module's status (a request on [`STATUS_TOPIC`]).
    pub async fn status(&self, timeout: Duration) -> Result<Vec<ModuleStatus>, RequestError> {
        let reply = self
            .system
            .request(STATUS_TOPIC, SystemEvent::StatusRequest, timeout)
            .await?;
        match &reply.payload {
            SystemEvent::Status { modules } => Ok(modules.clone()),
            _ => Ok(Vec::new()),
        }
    }
}

/// A module added to a [`Runtime`]; its setters choose how it is supervised.
/// Configuration keys ([`config`](crate::config)) override them.
pub struct ModuleSpec<T> {
    name: Name,
    supervision: Supervision,
    resolver: Option<Resolver<T>>,
    configured: bool,
}

impl<T> std::fmt::Debug for ModuleSpec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleSpec")
            .field("name", &self.name)
            .field("supervision", &self.supervision)
            .finish_non_exhaustive()
    }
}

impl<T> ModuleSpec<T> {
    /// The module's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the restart policy.
    pub fn restart(&mut self, restart: Restart) -> &mut Self {
        self.supervision.restart = restart;
        self
    }

    /// Sets the delay between restarts.
    pub fn backoff(&mut self, backoff: Backoff) -> &mut Self {
        self.supervision.backoff = backoff;
        self
    }

    /// Allows at most `max` restarts within `within`.
    pub fn max_restarts(&mut self, max: u32, within: Duration) -> &mut Self {
        self.supervision.max_restarts = max;
        self.supervision.within = within;
        self
    }

    /// How long the module gets to stop once told to.
    pub fn shutdown_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.supervision.shutdown_timeout = timeout;
        self
    }

    /// Sets all of the above at once.
    pub fn supervision(&mut self, supervision: Supervision) -> &mut Self {
        self.supervision = supervision;
        self
    }
}

/// Starts, supervises and stops [modules](crate::module). See the [module docs](self).
pub struct Runtime<T> {
    bus: Bus<T>,
    system: Bus<SystemEvent>,
    /// Subscribed from the start, so status requests made before `run` wait for it.
    status: crate::Subscription<SystemEvent>,
    specs: Vec<ModuleSpec<T>>,
    config: Config,
    token: CancellationToken,
    signals: bool,
    abort_grace: Duration,
}

impl<T> std::fmt::Debug for Runtime<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("modules", &self.specs)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> Runtime<T> {
    /// A runtime for modules on `bus`, with an empty configuration.
    pub fn new(bus: Bus<T>) -> Self {
        let system = Bus::new();
        let status = system
            .subscriber(STATUS_TOPIC)
            .name("runtime-status")
            .subscribe()
            .expect("a new bus is open and the topic valid");
        Runtime {
            bus,
            system,
            status,
            specs: Vec::new(),
            config: Config::new(),
            token: CancellationToken::new(),
            signals: true,
            abort_grace: Duration::from_secs(1),
        }
    }

    /// Uses `config` to enable, disable and configure modules (see [`config`](crate::config)).
    pub fn with_config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Whether Ctrl-C and SIGTERM start the shutdown (default true). Note that
    /// once tokio has installed its handler for a signal, it stays installed
    /// for the life of the process: after `run` returns, that signal no longer
    /// ends the process by default.
    pub fn handle_signals(mut self, yes: bool) -> Self {
        self.signals = yes;
        self
    }

    /// How long to wait for an aborted module's task to end before giving up
    /// on it (default 1 s; see the docs on code that never yields).
    pub fn abort_grace(mut self, grace: Duration) -> Self {
        self.abort_grace = grace;
        self
    }

    /// The application's bus.
    pub fn bus(&self) -> &Bus<T> {
        &self.bus
    }

    /// The runtime's system bus (`$sys.` topics).
    pub fn system_bus(&self) -> &Bus<SystemEvent> {
        &self.system
    }

    /// A handle to shut the runtime down or ask its status.
    pub fn handle(&self) -> RuntimeHandle {
        RuntimeHandle {
            token: self.token.clone(),
            system: self.system.clone(),
        }
    }

    /// Adds a module; a restart runs a clone of `module` taken before its
    /// first run. Problems (a bad or duplicate name) are reported by [`run`](Self::run).
    pub fn add<M: Module<T> + Clone>(&mut self, module: M) -> &mut ModuleSpec<T> {
        let proto = module.clone();
        self.add_instance(module, move || proto.clone())
    }

    /// Adds a module made by `factory`; the factory is called now for the first
    /// instance and again for every restart.
    pub fn add_factory<M: Module<T>>(
        &mut self,
        factory: impl Fn() -> M + Send + 'static,
    ) -> &mut ModuleSpec<T> {
        let first = factory();
        self.add_instance(first, factory)
    }

    fn add_instance<M: Module<T>>(
        &mut self,
        first: M,
        factory: impl Fn() -> M + Send + 'static,
    ) -> &mut ModuleSpec<T> {
        let name: Name = first.name().into();
        let spawner = spawner(Some(first), factory);
        self.specs.push(ModuleSpec {
            name,
            supervision: Supervision::default(),
            resolver: Some(Box::new(move |_: &Config| Ok(spawner))),
            configured: false,
        });
        self.specs.last_mut().expect("just pushed")
    }

    /// Adds a module configured by the `[modules.<name>]` section of the
    /// configuration: its own keys are deserialized into `C` when the runtime
    /// starts, and `factory` makes an instance from them (again on each
    /// restart). A disabled module's keys are not deserialized. Errors (naming
    /// the module and the key) are returned by [`run`](Self::run).
    pub fn add_configured<C, M>(
        &mut self,
        name: &str,
        factory: impl Fn(C) -> M + Send + 'static,
    ) -> &mut ModuleSpec<T>
    where
        C: DeserializeOwned + Clone + Send + 'static,
        M: Module<T>,
    {
        let expected = name.to_string();
        let resolver: Resolver<T> = Box::new(move |config: &Config| {
            let cfg: C = config.module(&expected)?;
            let first = factory(cfg.clone());
            if first.name() != expected {
                return Err(RuntimeError::InvalidName {
                    name: first.name().to_string(),
                    reason: format!(
                        "the module added for [modules.{expected}] must be named `{expected}`"
                    ),
                });
            }
            Ok(spawner(Some(first), move || factory(cfg.clone())))
        });
        self.specs.push(ModuleSpec {
            name: name.into(),
            supervision: Supervision::default(),
            resolver: Some(resolver),
            configured: true,
        });
        self.specs.last_mut().expect("just pushed")
    }

    /// Runs every module until the run ends (see the [module docs](self)).
    pub async fn run(self) -> Result<Report, RuntimeError> {
        let mut state = self.prepare()?;
        state.run().await
    }

    /// Checks names and configuration, and makes each module's slot.
    fn prepare(self) -> Result<Running<T>, RuntimeError> {
        let mut seen = HashMap::new();
        for s in &self.specs {
            check_name(&s.name).map_err(|reason| RuntimeError::InvalidName {
                name: s.name.to_string(),
                reason,
            })?;
            if seen.insert(s.name.clone(), ()).is_some() {
                return Err(RuntimeError::DuplicateName {
                    name: s.name.to_string(),
                });
            }
        }
        for m in self.config.modules() {
            if !seen.contains_key(m) {
                let known: Vec<&str> = self.specs.iter().map(|s| &*s.name).collect();
                return Err(ConfigError::UnknownModule {
                    module: m.to_string(),
                    known: known.join(", "),
                }
                .into());
            }
        }
        let mut slots = Vec::with_capacity(self.specs.len());
        for mut spec in self.specs {
            let settings: ModuleSettings = self.config.settings(&spec.name)?;
            settings.apply(&mut spec.supervision);
            if !spec.configured {
                self.config.check_no_keys(&spec.name)?;
            }
            let resolver = spec.resolver.take().expect("resolved once");
            let spawner = if settings.enabled {
                Some(resolver(&self.config)?)
            } else {
                None
            };
            slots.push(Slot {
                name: spec.name,
                supervision: spec.supervision,
                state: if settings.enabled {
                    ModuleState::Starting
                } else {
                    ModuleState::Disabled
                },
                spawner,
                restarts: 0,
                intensity: Intensity::default(),
                started_at: None,
                last_error: None,
                token: None,
                abort: None,
                restart_at: None,
                discarded: Arc::new(AtomicU64::new(0)),
            });
        }
        Ok(Running {
            bus: self.bus,
            system: self.system,
            status: Some(self.status),
            slots,
            token: self.token,
            signals: self.signals,
            abort_grace: self.abort_grace,
            tasks: JoinSet::new(),
            ids: HashMap::new(),
            refused: 0,
            aborted: Vec::new(),
        })
    }
}

fn spawner<T, M>(mut first: Option<M>, factory: impl Fn() -> M + Send + 'static) -> Spawner<T>
where
    T: Send + Sync + 'static,
    M: Module<T>,
{
    Box::new(move |ctx: Context<T>| {
        let made = match first.take() {
            Some(m) => Ok(m),
            None => std::panic::catch_unwind(AssertUnwindSafe(&factory)),
        };
        match made {
            Ok(mut m) => Box::pin(async move { m.run(ctx).await }),
            // A factory that panics fails this start like a module that panics.
            Err(payload) => Box::pin(async move { std::panic::resume_unwind(payload) }),
        }
    })
}

struct Slot<T> {
    name: Name,
    supervision: Supervision,
    state: ModuleState,
    spawner: Option<Spawner<T>>,
    restarts: u32,
    intensity: Intensity,
    started_at: Option<Instant>,
    last_error: Option<String>,
    token: Option<CancellationToken>,
    abort: Option<AbortHandle>,
    restart_at: Option<Instant>,
    discarded: Arc<AtomicU64>,
}

impl<T> Slot<T> {
    fn status(&self, now: Instant) -> ModuleStatus {
        ModuleStatus {
            name: self.name.to_string(),
            state: self.state,
            restarts: self.restarts,
            uptime: self.started_at.map(|t| now.duration_since(t)),
            last_error: self.last_error.clone(),
            discarded: self.discarded.load(Ordering::Relaxed),
        }
    }

    fn is_done(&self) -> bool {
        matches!(
            self.state,
            ModuleState::Disabled
                | ModuleState::Stopped
                | ModuleState::Failed
                | ModuleState::Aborted
        )
    }
}

/// How a module's task ended.
struct Exit {
    failed: bool,
    message: Option<String>,
    panicked: bool,
}

impl Exit {
    fn of(res: Result<Result<(), BoxError>, JoinError>) -> Exit {
        match res {
            Ok(Ok(())) => Exit {
                failed: false,
                message: None,
                panicked: false,
            },
            Ok(Err(e)) => Exit {
                failed: true,
                message: Some(error_chain(&*e)),
                panicked: false,
            },
            Err(e) if e.is_panic() => Exit {
                failed: true,
                message: Some(format!("panicked: {}", panic_message(&*e.into_panic()))),
                panicked: true,
            },
            Err(_) => Exit {
                failed: true,
                message: Some("its task was cancelled".into()),
                panicked: false,
            },
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

enum Outcome {
    Stop(StopReason),
    Fatal(Fatal),
}

enum Fatal {
    Failed {
        module: String,
        error: String,
        restarts: u32,
    },
    Limit {
        module: String,
        restarts: u32,
        max_restarts: u32,
        within: Duration,
        last_error: String,
    },
}

/// A runtime that has started.
struct Running<T> {
    bus: Bus<T>,
    system: Bus<SystemEvent>,
    status: Option<crate::Subscription<SystemEvent>>,
    slots: Vec<Slot<T>>,
    token: CancellationToken,
    signals: bool,
    abort_grace: Duration,
    tasks: JoinSet<Result<(), BoxError>>,
    ids: HashMap<tokio::task::Id, usize>,
    refused: u64,
    aborted: Vec<String>,
}

impl<T: Send + Sync + 'static> Running<T> {
    async fn run(&mut self) -> Result<Report, RuntimeError> {
        let mut status = self.status.take().expect("run once");
        let token = self.token.clone();
        let mut early = None;
        for i in 0..self.slots.len() {
            if self.slots[i].state != ModuleState::Starting {
                continue;
            }
            if token.is_cancelled() {
                early = Some(Outcome::Stop(StopReason::Requested));
                break;
            }
            if let Some(first_poll) = self.spawn(i) {
                // The next module starts once this one reached its first
                // `.await` (or ended): its subscriptions are in place.
                tokio::select! {
                    _ = first_poll => {}
                    _ = token.cancelled() => {
                        early = Some(Outcome::Stop(StopReason::Requested));
                        break;
                    }
                }
            }
        }
        let signals = self.signals;
        let signal = async move {
            if signals {
                wait_for_signal().await
            } else {
                std::future::pending().await
            }
        };
        tokio::pin!(signal);
        let outcome = loop {
            if let Some(o) = early.take() {
                break o;
            }
            if self.slots.iter().all(Slot::is_done) {
                break Outcome::Stop(StopReason::Finished);
            }
            let next_restart = self.slots.iter().filter_map(|s| s.restart_at).min();
            tokio::select! {
                biased;
                _ = token.cancelled() => break Outcome::Stop(StopReason::Requested),
                sig = &mut signal => break Outcome::Stop(StopReason::Signal(sig)),
                Some(res) = self.tasks.join_next_with_id() => {
                    if let Some(fatal) = self.on_exit(res, false) {
                        break Outcome::Fatal(fatal);
                    }
                }
                _ = sleep_until_opt(next_restart), if next_restart.is_some() => {
                    let now = Instant::now();
                    for i in 0..self.slots.len() {
                        if self.slots[i].restart_at.is_some_and(|t| t <= now) {
                            self.slots[i].restart_at = None;
                            self.spawn(i);
                        }
                    }
                }
                Ok(req) = status.recv() => self.answer(&req).await,
            }
        };
        let reason = match &outcome {
            Outcome::Stop(r) => r.clone(),
            Outcome::Fatal(Fatal::Failed { module, .. } | Fatal::Limit { module, .. }) => {
                StopReason::ModuleFailed(module.clone())
            }
        };
        self.emit(SystemEvent::ShuttingDown {
            reason: reason.to_string(),
        });
        let abandoned = self.shutdown(&mut status).await;
        let now = Instant::now();
        let report = Report {
            reason,
            modules: self.slots.iter().map(|s| s.status(now)).collect(),
            aborted: std::mem::take(&mut self.aborted),
            abandoned,
            system_events_refused: self.refused,
        };
        match outcome {
            Outcome::Stop(_) => Ok(report),
            Outcome::Fatal(Fatal::Failed {
                module,
                error,
                restarts,
            }) => Err(RuntimeError::ModuleFailed {
                module,
                error,
                restarts,
                report: Box::new(report),
            }),
            Outcome::Fatal(Fatal::Limit {
                module,
                restarts,
                max_restarts,
                within,
                last_error,
            }) => Err(RuntimeError::RestartLimit {
                module,
                restarts,
                max_restarts,
                within,
                last_error,
                report: Box::new(report),
            }),
        }
    }

    fn emit(&mut self, ev: SystemEvent) {
        // Each subscriber with room gets it; a full one is skipped and counted.
        self.refused += self.system.offer(ev) as u64;
    }

    async fn answer(&mut self, req: &crate::Envelope<SystemEvent>) {
        if req.payload != SystemEvent::StatusRequest {
            return;
        }
        let now = Instant::now();
        let modules = self.slots.iter().map(|s| s.status(now)).collect();
        // The requester may have given up; nothing to do then.
        let _ = self
            .system
            .reply(req, SystemEvent::Status { modules })
            .await;
    }

    /// Starts an instance of module `i`; the receiver completes after the
    /// instance's first poll.
    fn spawn(&mut self, i: usize) -> Option<oneshot::Receiver<()>> {
        let slot = &mut self.slots[i];
        let spawner = slot.spawner.as_mut()?;
        let token = CancellationToken::new();
        let ctx = Context::new(
            slot.name.clone(),
            self.bus.clone(),
            self.system.clone(),
            token.clone(),
            slot.discarded.clone(),
        );
        let (tx, rx) = oneshot::channel();
        let fut = FirstPoll {
            inner: spawner(ctx),
            polled: Some(tx),
        };
        let handle = self.tasks.spawn(fut);
        self.ids.insert(handle.id(), i);
        slot.abort = Some(handle);
        slot.token = Some(token);
        slot.state = ModuleState::Running;
        slot.started_at = Some(Instant::now());
        let ev = SystemEvent::Started {
            module: slot.name.to_string(),
            restarts: slot.restarts,
        };
        self.emit(ev);
        Some(rx)
    }

    /// Records how a module's task ended and decides what comes next.
    /// During shutdown nothing is restarted and nothing is fatal.
    fn on_exit(
        &mut self,
        res: Result<(tokio::task::Id, Result<(), BoxError>), JoinError>,
        shutting_down: bool,
    ) -> Option<Fatal> {
        let (id, res) = match res {
            Ok((id, r)) => (id, Ok(r)),
            Err(e) => (e.id(), Err(e)),
        };
        let i = self.ids.remove(&id)?;
        let exit = Exit::of(res);
        let slot = &mut self.slots[i];
        let was_aborted = slot.state == ModuleState::Aborted;
        slot.started_at = None;
        // Helper tasks of the instance that ended are told to stop too.
        if let Some(t) = slot.token.take() {
            t.cancel();
        }
        slot.abort = None;
        let name = slot.name.to_string();
        if was_aborted {
            // Its end was already reported when it was aborted.
            return None;
        }
        if shutting_down {
            if exit.failed {
                slot.last_error = exit.message.clone();
            }
            slot.state = ModuleState::Stopped;
            self.emit(SystemEvent::Stopped {
                module: name,
                aborted: false,
            });
            return None;
        }
        let restart = match slot.supervision.restart {
            Restart::Never => false,
            Restart::OnFailure => exit.failed,
            Restart::Always => true,
        };
        if exit.failed {
            slot.last_error = exit.message.clone();
        }
        let now = Instant::now();
        let admitted = if restart {
            slot.intensity.admit(now, &slot.supervision)
        } else {
            None
        };
        let message = exit
            .message
            .clone()
            .unwrap_or_else(|| "it returned Ok but its restart policy is `always`".into());
        if exit.failed {
            let ev = SystemEvent::Failed {
                module: name.clone(),
                error: message.clone(),
                panicked: exit.panicked,
                will_restart: admitted.is_some(),
            };
            self.emit(ev);
        }
        let slot = &mut self.slots[i];
        match (restart, admitted) {
            (false, _) if !exit.failed => {
                slot.state = ModuleState::Stopped;
                self.emit(SystemEvent::Stopped {
                    module: name,
                    aborted: false,
                });
                None
            }
            (false, _) => {
                slot.state = ModuleState::Failed;
                Some(Fatal::Failed {
                    module: name,
                    error: message,
                    restarts: slot.restarts,
                })
            }
            (true, Some(n)) => {
                let delay = slot.supervision.backoff.delay(n);
                slot.restarts += 1;
                slot.state = ModuleState::Restarting;
                slot.restart_at = Some(after(now, delay));
                let ev = SystemEvent::Restarting {
                    module: name,
                    restart: slot.restarts,
                    delay,
                };
                self.emit(ev);
                None
            }
            (true, None) => {
                slot.state = ModuleState::Failed;
                if !exit.failed {
                    // `always` and it returned Ok: its end is still published.
                    slot.last_error = Some(message.clone());
                    self.emit(SystemEvent::Failed {
                        module: name.clone(),
                        error: message.clone(),
                        panicked: false,
                        will_restart: false,
                    });
                }
                let slot = &mut self.slots[i];
                Some(Fatal::Limit {
                    module: name,
                    restarts: slot.restarts,
                    max_restarts: slot.supervision.max_restarts,
                    within: slot.supervision.within,
                    last_error: message,
                })
            }
        }
    }

    /// The graceful shutdown; returns the modules abandoned after abort.
    async fn shutdown(&mut self, status: &mut crate::Subscription<SystemEvent>) -> Vec<String> {
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if slot.state == ModuleState::Starting {
                // Shutdown came before it was started.
                slot.state = ModuleState::Stopped;
            }
            if slot.state == ModuleState::Restarting {
                slot.restart_at = None;
                slot.state = ModuleState::Stopped;
                let ev = SystemEvent::Stopped {
                    module: slot.name.to_string(),
                    aborted: false,
                };
                self.emit(ev);
            }
        }
        for i in (0..self.slots.len()).rev() {
            if self.slots[i].state != ModuleState::Running {
                continue;
            }
            let slot = &mut self.slots[i];
            slot.state = ModuleState::Stopping;
            if let Some(t) = &slot.token {
                t.cancel();
            }
            let deadline = after(Instant::now(), slot.supervision.shutdown_timeout);
            loop {
                if self.slots[i].state != ModuleState::Stopping {
                    break;
                }
                tokio::select! {
                    Some(res) = self.tasks.join_next_with_id() => {
                        self.on_exit(res, true);
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        let slot = &mut self.slots[i];
                        if let Some(a) = &slot.abort {
                            a.abort();
                        }
                        slot.state = ModuleState::Aborted;
                        slot.started_at = None;
                        let name = slot.name.to_string();
                        self.aborted.push(name.clone());
                        self.emit(SystemEvent::Stopped { module: name, aborted: true });
                    }
                    Ok(req) = status.recv() => self.answer(&req).await,
                }
            }
        }
        // Aborted tasks end at their next `.await`; give them a moment.
        let grace = tokio::time::sleep(self.abort_grace);
        tokio::pin!(grace);
        while !self.ids.is_empty() {
            tokio::select! {
                Some(res) = self.tasks.join_next_with_id() => { self.on_exit(res, true); }
                _ = &mut grace => break,
            }
        }
        let mut abandoned: Vec<String> = self
            .ids
            .values()
            .map(|&i| self.slots[i].name.to_string())
            .collect();
        abandoned.sort();
        self.tasks.detach_all();
        abandoned
    }
}

/// `at + d`, or about 30 years from `at` when `d` is too long to add (a
/// timeout of `Duration::MAX` meaning "never").
fn after(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .unwrap_or_else(|| at + Duration::from_secs(30 * 365 * 86_400))
}

/// Runs a module's future and says when it was first polled.
struct FirstPoll {
    inner: RunFuture,
    polled: Option<oneshot::Sender<()>>,
}

impl Future for FirstPoll {
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let r = self.inner.as_mut().poll(cx);
        if let Some(tx) = self.polled.take() {
            let _ = tx.send(());
        }
        r
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Waits for Ctrl-C or (on Unix) SIGTERM. If a handler cannot be installed,
/// that signal is simply not waited for.
async fn wait_for_signal() -> &'static str {
    let ctrl_c = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "SIGINT",
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = async {
            match signal(SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                    "SIGTERM"
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            s = ctrl_c => s,
            s = term => s,
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c.await
    }
}
