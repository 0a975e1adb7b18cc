//! [`Runtime`]: modules added and configured before the run.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "config")]
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "config")]
use super::config::{ConfigError, ModuleSettings};
use super::handle::RuntimeHandle;
use super::module::{check_name, Module, Name};
use super::report::{Report, RuntimeError};
use super::running::Running;
use super::slot::Slot;
use super::spec::ModuleSpec;
use super::status::ModuleState;
use super::supervisor::{Intensity, Supervision};
use super::system::{SystemEvent, STATUS_TOPIC};
#[cfg(feature = "config")]
use super::Resolver;
use super::{Config, Spawner};
use crate::{Bus, Context};

/// Starts modules, supervises them, and shuts them down.
///
/// ```
/// use std::time::Duration;
/// use busline::{BoxError, Bus, Context, Module, Runtime, StopReason};
///
/// #[derive(Clone)]
/// struct Ticker;
/// impl Module<u32> for Ticker {
///     fn name(&self) -> &str { "ticker" }
///     async fn run(&mut self, ctx: Context<u32>) -> Result<(), BoxError> {
///         for i in 0..3 { ctx.publish_to("ticks", i).await?; }
///         Ok(()) // done: a normal stop
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let bus = Bus::new();
/// let mut ticks = bus.subscribe("ticks").unwrap();
/// let mut rt = Runtime::new(bus);
/// rt.add(Ticker);
/// let report = rt.run().await.unwrap();
/// assert_eq!(report.reason, StopReason::Finished);
/// assert_eq!(ticks.recv().await.unwrap().source.as_deref(), Some("ticker"));
/// # }
/// ```
///
/// # Start order
///
/// Modules start in the order they were added, and each starts only once the
/// one before it has reached its first `.await` in `run` (or ended). So a
/// module that subscribes at the top of `run` is subscribed before any module
/// added after it publishes anything: add consumers first. Restarted
/// instances start on their own, without waiting for anyone. (A module that
/// blocks its thread before its first `.await` therefore holds up the start
/// of the modules after it; a shutdown request still ends the run.)
///
/// # How a run ends
///
/// [`Runtime::run`] returns when
/// - every module has finished (`Ok` with [`StopReason::Finished`](crate::StopReason::Finished)),
/// - a [`RuntimeHandle::shutdown`] was called ([`StopReason::Requested`](crate::StopReason::Requested)),
/// - the process got Ctrl-C or SIGTERM ([`StopReason::Signal`](crate::StopReason::Signal); turn this off
///   with [`Runtime::handle_signals`]), or
/// - a module failed for good (`Err`: [`RuntimeError::ModuleFailed`] under
///   [`Restart::Never`](crate::Restart::Never), [`RuntimeError::RestartLimit`] past its restart limit).
///
/// In every case the other modules are then shut down gracefully, and the
/// [`Report`] (inside the error, too) says what happened to each.
///
/// # Shutdown
///
/// 1. **Pending restarts are cancelled**: a module waiting for its backoff is
///    marked stopped and never starts again.
/// 2. **Modules are told to stop in reverse start order** (the order they were
///    added): the last added stops first. Add consumers (loggers, sinks) before
///    producers, so producers stop first and consumers still drain what the
///    producers published last.
/// 3. **Each gets its deadline** ([`Supervision::shutdown_timeout`]) to return
///    from `run`, one after the other. While it drains it can still publish
///    and receive: the bus stays open. A module that returns in time is
///    `stopped`.
/// 4. **Past its deadline it is aborted**: its task is cancelled at its next
///    `.await`, and it is listed in [`Report::aborted`]. A publish it was
///    waiting on (a full lossless subscriber) is cancelled: no subscriber got
///    that event (the bus counts it as `cancelled`).
///
/// ## Events in flight
///
/// - Events still queued in a module's subscriptions when it stops (returned
///   or aborted) are discarded with the subscription: they are counted in the
///   module's [`ModuleStatus::discarded`](crate::ModuleStatus::discarded) and in the bus's `discarded` stats,
///   never dropped silently. A module that must finish them takes them with
///   [`Subscription::drain`](crate::Subscription::drain) once
///   [`Context::shutdown_requested`] fires.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// use busline::{BoxError, Bus, Context, Module, Runtime};
///
/// #[derive(Clone)]
/// struct Sink { careful: bool }
/// impl Module<u32> for Sink {
///     fn name(&self) -> &str { if self.careful { "careful" } else { "hasty" } }
///     async fn run(&mut self, ctx: Context<u32>) -> Result<(), BoxError> {
///         let mut jobs = ctx.subscribe("jobs")?;
///         ctx.shutdown_requested().await; // reads nothing before shutdown
///         if self.careful {
///             assert_eq!(jobs.drain().len(), 3); // finishes what is queued
///         }
///         Ok(())
///     }
/// }
///
/// let bus = Bus::new();
/// let mut rt = Runtime::new(bus.clone()).handle_signals(false);
/// rt.add(Sink { careful: true });
/// rt.add(Sink { careful: false });
/// let handle = rt.handle();
/// let run = tokio::spawn(rt.run());
/// tokio::time::sleep(Duration::from_millis(1)).await; // both are subscribed
/// for job in 0..3 { bus.publish_to("jobs", job).await.unwrap(); }
/// handle.shutdown();
/// let report = run.await.unwrap().unwrap();
/// assert_eq!(report.module("careful").unwrap().discarded, 0);
/// assert_eq!(report.module("hasty").unwrap().discarded, 3); // counted, not silent
/// assert_eq!(bus.stats().discarded, 3);
/// # }
/// ```
///
/// - Events a stopped module would have received later are not queued for it
///   (its subscription is gone); other subscribers are unaffected.
/// - A queue group member that stops leaves its group's queue to the other members.
/// - The runtime does not close the application's bus: it belongs to the caller.
///
/// ## The deadline
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// use busline::{BoxError, Bus, Context, Module, ModuleState, Runtime};
///
/// #[derive(Clone)]
/// struct Deaf;
/// impl Module<u32> for Deaf {
///     fn name(&self) -> &str { "deaf" }
///     async fn run(&mut self, _ctx: Context<u32>) -> Result<(), BoxError> {
///         loop { tokio::time::sleep(Duration::from_secs(1)).await } // ignores shutdown
///     }
/// }
///
/// let mut rt = Runtime::new(Bus::new()).handle_signals(false);
/// rt.add(Deaf).shutdown_timeout(Duration::from_secs(3));
/// let handle = rt.handle();
/// let run = tokio::spawn(rt.run());
/// tokio::time::sleep(Duration::from_secs(1)).await;
/// let asked = tokio::time::Instant::now();
/// handle.shutdown();
/// let report = run.await.unwrap().unwrap();
/// assert_eq!(asked.elapsed(), Duration::from_secs(3)); // waited for its deadline
/// assert_eq!(report.aborted, ["deaf"]);
/// assert_eq!(report.module("deaf").unwrap().state, ModuleState::Aborted);
/// # }
/// ```
///
/// ## Code that never yields
///
/// Aborting a tokio task only takes effect at an `.await`. A module stuck in
/// a loop that awaits but ignores the shutdown signal is aborted at the
/// deadline. A module blocked *without* awaiting (a busy loop, a blocking
/// call on the async thread) cannot be aborted by anyone: after aborting it
/// the runtime waits [`Runtime::abort_grace`] for its task to end, then gives
/// up, lists it in [`Report::abandoned`] and returns; that thread stays
/// blocked (and may keep the process's tokio runtime from shutting down).
/// Blocking work belongs in `spawn_blocking`: then the module's `.await` on it
/// is cancelled at the deadline as usual, while the blocking closure itself
/// runs on to its end in the background.
///
/// # System events and status
///
/// Every lifecycle change is published on the runtime's system bus
/// ([`Runtime::system_bus`]) under `$sys.module.<name>.<started|stopped|failed|restarting>`,
/// and `$sys.runtime.shutdown` when shutdown begins. The runtime answers a
/// [`SystemEvent::StatusRequest`] sent to [`STATUS_TOPIC`] (or
/// [`RuntimeHandle::status`]) with every module's state, restart count and uptime.
/// The runtime never waits for a system subscriber: one that is full (lossless)
/// misses the event, which is counted in [`Report::system_events_refused`];
/// subscribe to `$sys.>` with a `lossy` policy to never be refused.
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
            #[cfg(feature = "config")]
            config: Config::new(),
            #[cfg(not(feature = "config"))]
            config: (),
            token: CancellationToken::new(),
            signals: true,
            abort_grace: Duration::from_secs(1),
        }
    }

    /// Uses `config` to enable, disable and configure modules (see [`Config`](crate::Config)).
    #[cfg(feature = "config")]
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
    #[cfg(feature = "config")]
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

    /// Runs every module until the run ends (see [how a run ends](Runtime#how-a-run-ends)).
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
        #[cfg(feature = "config")]
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
            #[cfg(feature = "config")]
            let enabled = {
                let settings: ModuleSettings = self.config.settings(&spec.name)?;
                settings.apply(&mut spec.supervision);
                if !spec.configured {
                    self.config.check_no_keys(&spec.name)?;
                }
                settings.enabled
            };
            #[cfg(not(feature = "config"))]
            let enabled = true;
            let resolver = spec.resolver.take().expect("resolved once");
            let spawner = if enabled {
                Some(resolver(&self.config)?)
            } else {
                None
            };
            slots.push(Slot {
                name: spec.name,
                supervision: spec.supervision,
                state: if enabled {
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
