//! busline's own events on the runtime's system bus (see the module docs
//! of [`module`](super::module) on the typed bus).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::status::ModuleStatus;

/// busline's own events, published by the runtime on its system bus under
/// `$sys.` topics (see [`SystemEvent::topic`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SystemEvent {
    /// An instance of the module started (`$sys.module.<name>.started`).
    Started {
        /// The module.
        module: String,
        /// Restarts before this start (0 for the first start).
        restarts: u32,
    },
    /// The module stopped and will not run again (`$sys.module.<name>.stopped`).
    Stopped {
        /// The module.
        module: String,
        /// Whether it had to be aborted at its shutdown deadline.
        aborted: bool,
    },
    /// An instance failed: returned an error or panicked (`$sys.module.<name>.failed`).
    Failed {
        /// The module.
        module: String,
        /// The error or panic message.
        error: String,
        /// Whether it panicked.
        panicked: bool,
        /// Whether the runtime will restart it.
        will_restart: bool,
    },
    /// A new instance will start after `delay` (`$sys.module.<name>.restarting`).
    Restarting {
        /// The module.
        module: String,
        /// Which restart this is (1 for the first).
        restart: u32,
        /// The backoff delay before it starts.
        delay: Duration,
    },
    /// The runtime began its graceful shutdown (`$sys.runtime.shutdown`).
    ShuttingDown {
        /// Why.
        reason: String,
    },
    /// A request for the runtime's status (send it to [`STATUS_TOPIC`] with
    /// `request`; the answer is [`SystemEvent::Status`]).
    StatusRequest,
    /// The runtime's answer to a [`SystemEvent::StatusRequest`]: every
    /// module, in the order they were added.
    Status {
        /// One line per module.
        modules: Vec<ModuleStatus>,
    },
}

/// The topic the runtime answers status requests on.
pub const STATUS_TOPIC: &str = "$sys.runtime.status";

/// The topic of [`SystemEvent::ShuttingDown`].
pub const SHUTDOWN_TOPIC: &str = "$sys.runtime.shutdown";

impl SystemEvent {
    /// The `$sys.` topic this event is published on.
    pub fn topic(&self) -> String {
        match self {
            SystemEvent::Started { module, .. } => format!("$sys.module.{module}.started"),
            SystemEvent::Stopped { module, .. } => format!("$sys.module.{module}.stopped"),
            SystemEvent::Failed { module, .. } => format!("$sys.module.{module}.failed"),
            SystemEvent::Restarting { module, .. } => format!("$sys.module.{module}.restarting"),
            SystemEvent::ShuttingDown { .. } => SHUTDOWN_TOPIC.to_string(),
            SystemEvent::StatusRequest | SystemEvent::Status { .. } => STATUS_TOPIC.to_string(),
        }
    }

    /// The module this event is about, if any.
    pub fn module(&self) -> Option<&str> {
        match self {
            SystemEvent::Started { module, .. }
            | SystemEvent::Stopped { module, .. }
            | SystemEvent::Failed { module, .. }
            | SystemEvent::Restarting { module, .. } => Some(module),
            _ => None,
        }
    }
}

impl crate::Event for SystemEvent {
    fn topic(&self) -> std::borrow::Cow<'_, str> {
        SystemEvent::topic(self).into()
    }
}
