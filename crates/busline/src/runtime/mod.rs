//! The runtime: starts modules, supervises them, and shuts them down.
//!
//! The user-facing semantics are on [`Runtime`].
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

#[cfg(feature = "config")]
pub(crate) mod config;
pub(crate) mod context;
mod handle;
pub(crate) mod module;
mod report;
mod running;
mod setup;
mod signals;
mod slot;
mod spec;
pub(crate) mod status;
pub(crate) mod supervisor;
mod system;

pub use handle::RuntimeHandle;
pub use report::{Report, RuntimeError, StopReason};
pub use setup::Runtime;
pub use spec::ModuleSpec;
pub use system::{SystemEvent, SHUTDOWN_TOPIC, STATUS_TOPIC};

use module::BoxError;
#[cfg(doc)]
use status::ModuleStatus;
#[cfg(doc)]
use supervisor::{Restart, Supervision};

pub(crate) type RunFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;
pub(crate) type Spawner<T> = Box<dyn FnMut(Context<T>) -> RunFuture + Send>;
pub(crate) type Resolver<T> = Box<dyn FnOnce(&Config) -> Result<Spawner<T>, RuntimeError> + Send>;

#[cfg(feature = "config")]
pub(crate) use config::Config;
/// Without the `config` feature, modules are resolved with no configuration.
#[cfg(not(feature = "config"))]
pub(crate) type Config = ();
