//! [`ModuleSpec`]: a module added to a runtime, and how it is supervised.

use std::time::Duration;

use super::module::Name;
use super::supervisor::{Backoff, Restart, Supervision};
use super::Resolver;

/// A module added to a [`Runtime`](crate::Runtime); its setters choose how it is supervised.
/// Configuration keys (the `config` module, with the `config` feature) override them.
pub struct ModuleSpec<T> {
    pub(super) name: Name,
    pub(super) supervision: Supervision,
    pub(super) resolver: Option<Resolver<T>>,
    #[cfg_attr(not(feature = "config"), allow(dead_code))]
    pub(super) configured: bool,
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
