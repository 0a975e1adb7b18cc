//! [`ModuleStatus`]: where each module is, as status answers, reports and
//! system events tell it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a module is in its [lifecycle](crate::Module#lifecycle).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ModuleState {
    /// Turned off by configuration; never started.
    Disabled,
    /// Registered, not started yet.
    Starting,
    /// Its `run` is executing.
    Running,
    /// It failed (or finished under [`Restart::Always`](crate::Restart::Always))
    /// and waits for its backoff delay before a new instance starts.
    Restarting,
    /// Told to stop; the runtime waits for it up to its shutdown deadline.
    Stopping,
    /// Its `run` returned (or it was stopped) and it will not run again.
    Stopped,
    /// It failed and will not be restarted.
    Failed,
    /// It did not stop by its shutdown deadline and its task was aborted.
    Aborted,
}

impl ModuleState {
    /// The state as a lowercase word (`running`, `restarting`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleState::Disabled => "disabled",
            ModuleState::Starting => "starting",
            ModuleState::Running => "running",
            ModuleState::Restarting => "restarting",
            ModuleState::Stopping => "stopping",
            ModuleState::Stopped => "stopped",
            ModuleState::Failed => "failed",
            ModuleState::Aborted => "aborted",
        }
    }
}

impl std::fmt::Display for ModuleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One module's line in a status answer or a runtime report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ModuleStatus {
    /// The module's name.
    pub name: String,
    /// Its state now.
    pub state: ModuleState,
    /// How many times it was restarted.
    pub restarts: u32,
    /// How long its current instance has been running (`None` unless running).
    pub uptime: Option<Duration>,
    /// The last error or panic message, if it ever failed.
    pub last_error: Option<String>,
    /// Events left in its subscriptions' queues when its instances stopped:
    /// they were discarded (see the runtime docs on shutdown).
    pub discarded: u64,
}
