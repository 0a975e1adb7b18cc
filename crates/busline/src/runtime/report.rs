//! How a run ended: [`StopReason`], [`Report`], [`RuntimeError`].

use std::time::Duration;

#[cfg(feature = "config")]
use super::config::ConfigError;
use super::status::ModuleStatus;

/// How a run ended without error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// Every module finished on its own.
    Finished,
    /// [`RuntimeHandle::shutdown`](crate::RuntimeHandle::shutdown) was called.
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
    #[cfg(feature = "config")]
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A module under [`Restart::Never`](crate::Restart::Never) failed.
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
