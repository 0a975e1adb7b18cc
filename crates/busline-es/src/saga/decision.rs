//! What a saga decides when it handles a message or a timeout.

use std::time::Duration;

use super::Saga;

/// The outcome of one [`Saga::handle`] or [`Saga::on_timeout`]: state
/// changes, messages to emit, timeouts to schedule or cancel, and whether
/// the saga is done. Everything in one decision is stored in one log record
/// (see the [module docs](super)).
///
/// ```
/// # use busline_es::saga::{Decision, doc_support::Ping};
/// # use std::time::Duration;
/// let d = Decision::<Ping>::new()
///     .apply("p1".to_owned())
///     .emit("pong", "hello".to_owned())
///     .schedule("give-up", Duration::from_secs(5), ())
///     .finish();
/// assert!(!d.is_empty());
/// assert!(Decision::<Ping>::new().is_empty());
/// ```
pub struct Decision<S: Saga> {
    pub(crate) events: Vec<S::Event>,
    pub(crate) emits: Vec<(String, S::Message)>,
    pub(crate) schedule: Vec<(String, Duration, S::Timeout)>,
    pub(crate) cancel: Vec<String>,
    pub(crate) finish: bool,
}

impl<S: Saga> Default for Decision<S> {
    fn default() -> Self {
        Decision {
            events: Vec::new(),
            emits: Vec::new(),
            schedule: Vec::new(),
            cancel: Vec::new(),
            finish: false,
        }
    }
}

impl<S: Saga> std::fmt::Debug for Decision<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decision")
            .field("events", &self.events)
            .field("emits", &self.emits)
            .field("schedule", &self.schedule)
            .field("cancel", &self.cancel)
            .field("finish", &self.finish)
            .finish()
    }
}

impl<S: Saga> Decision<S> {
    /// A decision that does nothing (the message is still recorded as handled).
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes the state by `event` ([`Saga::apply`]).
    pub fn apply(mut self, event: S::Event) -> Self {
        self.events.push(event);
        self
    }

    /// Publishes `message` on `topic` through the outbox, with an id that
    /// stays the same across re-publishing.
    pub fn emit(mut self, topic: impl Into<String>, message: S::Message) -> Self {
        self.emits.push((topic.into(), message));
        self
    }

    /// Calls [`Saga::on_timeout`] with `timeout` after `after`, unless the
    /// saga cancels it or finishes first. Scheduling a name that is pending
    /// replaces it.
    pub fn schedule(
        mut self,
        name: impl Into<String>,
        after: Duration,
        timeout: S::Timeout,
    ) -> Self {
        self.schedule.push((name.into(), after, timeout));
        self
    }

    /// Cancels the pending timeout `name` (nothing if there is none).
    pub fn cancel(mut self, name: impl Into<String>) -> Self {
        self.cancel.push(name.into());
        self
    }

    /// Ends the saga: pending timeouts are cancelled and later messages for
    /// its correlation id are ignored. Its emits are still published.
    pub fn finish(mut self) -> Self {
        self.finish = true;
        self
    }

    /// Whether the decision changes, emits, schedules, cancels and finishes nothing.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.emits.is_empty()
            && self.schedule.is_empty()
            && self.cancel.is_empty()
            && !self.finish
    }
}
