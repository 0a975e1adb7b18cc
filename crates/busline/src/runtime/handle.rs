//! [`RuntimeHandle`]: shut a running runtime down, or ask its status.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::status::ModuleStatus;
use super::system::{SystemEvent, STATUS_TOPIC};
use crate::error::RequestError;
use crate::Bus;

/// Controls a running [`Runtime`](crate::Runtime) from elsewhere. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RuntimeHandle {
    pub(super) token: CancellationToken,
    pub(super) system: Bus<SystemEvent>,
}

impl RuntimeHandle {
    /// Starts the graceful shutdown (the run ends with [`StopReason::Requested`](crate::StopReason::Requested)).
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
