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

use super::handle::RuntimeHandle;
use super::module::{check_name, Module, ModuleState, Name};
use super::report::{Report, RuntimeError};
use super::running::Running;
use super::slot::Slot;
use super::spec::ModuleSpec;
use super::supervisor::{Intensity, Supervision};
use super::system::{SystemEvent, STATUS_TOPIC};
use super::{Config, Resolver, Spawner};
#[cfg(feature = "config")]
use crate::config::{ConfigError, ModuleSettings};
use crate::{Bus, Context};

/// Starts, supervises and stops [modules](crate::runtime::module). See the [module docs](super).
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

    /// Uses `config` to enable, disable and configure modules (see [`config`](crate::config)).
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

    /// Runs every module until the run ends (see the [module docs](super)).
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
