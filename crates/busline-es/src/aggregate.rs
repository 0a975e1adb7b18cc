//! The aggregate trait: command handling and event application.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::event::DomainEvent;

/// A consistency boundary whose state is the fold of its events.
///
/// `handle` decides: it looks at the current state and a command and returns
/// the events to append, or the aggregate's own typed error. `apply` evolves:
/// it changes the state by one event and must not fail (an event is a fact
/// that already happened). State is `Serialize + DeserializeOwned` so it can
/// be snapshotted.
///
/// ```
/// use busline_es::{Aggregate, DomainEvent};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// enum CounterEvent { Added { n: u64 } }
/// impl DomainEvent for CounterEvent { const TYPES: &'static [&'static str] = &["Added"]; }
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("counter would overflow")]
/// struct Overflow;
///
/// #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
/// struct Counter { total: u64 }
///
/// impl Aggregate for Counter {
///     const TYPE: &'static str = "counter";
///     type Command = u64;
///     type Event = CounterEvent;
///     type Error = Overflow;
///     fn handle(&self, n: u64) -> Result<Vec<CounterEvent>, Overflow> {
///         self.total.checked_add(n).ok_or(Overflow)?;
///         Ok(vec![CounterEvent::Added { n }])
///     }
///     fn apply(&mut self, CounterEvent::Added { n }: &CounterEvent) {
///         self.total += n;
///     }
/// }
///
/// let mut c = Counter::default();
/// for e in c.handle(5).unwrap() { c.apply(&e); }
/// assert_eq!(c.total, 5);
/// assert!(c.handle(u64::MAX).is_err());
/// ```
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The aggregate type's name, stored with every event.
    const TYPE: &'static str;
    /// What callers ask it to do.
    type Command;
    /// What happened.
    type Event: DomainEvent;
    /// Why a command was rejected.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides which events a command produces, or rejects it.
    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Applies one event to the state.
    fn apply(&mut self, event: &Self::Event);
}
