//! Circuit breaker: stop calling a handler that keeps failing, and try again
//! carefully after a cool-down.
//!
//! ```text
//!             failures ≥ threshold                   cool-down elapsed,
//!             (consecutive, or rate over a window)   on the next call
//!   ┌────────┐ ───────────────────────────▶ ┌──────┐ ──────────────────▶ ┌───────────┐
//!   │ closed │                              │ open │                     │ half_open │
//!   └────────┘ ◀─────────────┐              └──────┘ ◀────────────────── └───────────┘
//!       ▲                    │                 calls fail fast            │  any trial fails
//!       └────────────────────┴─────────────────────────────────────────────┘
//!              `half_open_trials` trial calls succeeded
//!
//!  time ─────────────────────────────────────────────────────────────────────────────▶
//!  calls   ✓ ✗ ✗ ✗ │ ⊘ ⊘ ⊘ (BreakerOpen)          │ ✗                │ ⊘ …  │ ✓ │ ✓ ✓
//!  state   closed  │ open ── cool_down ──────────▶ │ half_open → open │ ...  │ half_open → closed
//! ```
//!
//! * **Closed**: calls go through. Each outcome is counted; the breaker opens
//!   when `consecutive_failures` calls in a row failed, or when the failure
//!   rate over the last `rate_window` reaches `failure_rate` (once at least
//!   `min_calls` calls were made in that window). Either trigger can be
//!   turned off ([`BreakerConfig`]).
//! * **Open**: calls fail at once with [`BreakerOpen`], without running the
//!   handler; the error says which breaker, in which state, and how long
//!   until it will try again.
//! * **Half-open**: after `cool_down`, the next call moves the breaker to
//!   half-open (the move is lazy: it happens on a call, not on a timer).
//!   Up to `half_open_trials` trial calls run at once; further calls fail
//!   fast. When `half_open_trials` trials have succeeded it closes; if any
//!   trial fails it opens again for another `cool_down`.
//!
//! Every error of the inner service counts as a failure. Outcomes of calls
//! that started in an earlier state (a slow call that finishes after the
//! breaker opened) are not counted.
//!
//! ## State changes are events
//!
//! Every transition is published three ways; pick what fits:
//! * [`CircuitBreaker::watch`]: a `tokio::sync::watch` of the current state;
//! * [`CircuitBreaker::on_transition`]: a callback with a [`Transition`];
//! * [`CircuitBreaker::publish_to`]: publish on a [`Bus`] on topic
//!   `$sys.breaker.<name>.<state>` (`closed`, `open`, `half_open`), with a
//!   payload you make from the transition (the bus's `T` is yours, so the
//!   breaker cannot invent one).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! use std::time::Duration;
//! use tower::{Service, ServiceExt};
//! use busline::middleware::{BoxError, BreakerConfig, BreakerOpen, BreakerState, CircuitBreaker};
//!
//! let breaker = CircuitBreaker::new("webhook", BreakerConfig {
//!     consecutive_failures: 2,
//!     cool_down: Duration::from_secs(30),
//!     ..BreakerConfig::default()
//! });
//! let bus = busline::Bus::<String>::new();
//! let mut changes = bus.subscribe("$sys.breaker.webhook.>").unwrap();
//! breaker.publish_to(&bus, |t| format!("{} -> {}", t.from, t.to)).unwrap();
//!
//! let mut svc = breaker.layer_service(tower::service_fn(|ok: bool| async move {
//!     if ok { Ok(()) } else { Err::<(), BoxError>("500".into()) }
//! }));
//! for _ in 0..2 { assert!(svc.ready().await.unwrap().call(false).await.is_err()); }
//! assert_eq!(breaker.state(), BreakerState::Open);
//! let err = svc.ready().await.unwrap().call(true).await.unwrap_err(); // fails fast
//! assert!(err.is::<BreakerOpen>());
//! assert_eq!(changes.recv().await.unwrap().topic.as_str(), "$sys.breaker.webhook.open");
//!
//! tokio::time::advance(Duration::from_secs(30)).await;
//! svc.ready().await.unwrap().call(true).await.unwrap(); // the trial succeeds
//! assert_eq!(breaker.state(), BreakerState::Closed);
//! assert_eq!(changes.recv().await.unwrap().payload, "open -> half_open");
//! assert_eq!(changes.recv().await.unwrap().payload, "half_open -> closed");
//! # }
//! ```
//!
//! The breaker's handle and the types it reports are here; its state
//! machine, its tower service, its configuration and its publishing on a
//! bus each live in a file of that name.

mod config;
mod publish;
mod service;
mod state_machine;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::sync::watch;
use tower::Layer;

#[cfg(doc)]
use crate::Bus;

use self::state_machine::Core;

pub use self::config::BreakerConfig;
pub use self::service::Breaker;

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail fast.
    Open,
    /// A limited number of trial calls go through.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open` (also the last token of its topic).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A call rejected without running the handler, because the breaker is open
/// (or half-open with all its trial slots taken).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker `{name}` is {state}: call rejected without running the handler{}",
    match .retry_in { Some(d) => format!(" (trials resume in {d:?})"), None => String::new() })]
#[non_exhaustive]
pub struct BreakerOpen {
    /// The breaker's name.
    pub name: Arc<str>,
    /// Its state (`Open`, or `HalfOpen` with every trial slot in use).
    pub state: BreakerState,
    /// Time left in the cool-down, when open.
    pub retry_in: Option<Duration>,
}

/// One state change of a breaker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Transition {
    /// The breaker's name.
    pub breaker: Arc<str>,
    /// The state it left.
    pub from: BreakerState,
    /// The state it entered.
    pub to: BreakerState,
    /// Why, in words (e.g. `5 consecutive failures`).
    pub reason: String,
    /// When (wall clock).
    pub at: SystemTime,
}

type Hook = Arc<dyn Fn(&Transition) + Send + Sync>;

struct Shared {
    name: Arc<str>,
    config: BreakerConfig,
    core: Mutex<Core>,
    tx: watch::Sender<BreakerState>,
    hooks: Mutex<Vec<Hook>>,
}

/// A named circuit breaker: the shared state, and the [`Layer`] that puts it
/// around a service. Clones share the state. See the [module docs](self).
#[derive(Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.shared.name)
            .field("state", &self.state())
            .field("config", &self.shared.config)
            .finish()
    }
}

impl CircuitBreaker {
    /// A closed breaker named `name`.
    pub fn new(name: impl Into<Arc<str>>, config: BreakerConfig) -> Self {
        let config = BreakerConfig {
            half_open_trials: config.half_open_trials.max(1),
            ..config
        };
        CircuitBreaker {
            shared: Arc::new(Shared {
                name: name.into(),
                config,
                core: Mutex::new(Core::closed()),
                tx: watch::Sender::new(BreakerState::Closed),
                hooks: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The current state. An open breaker whose cool-down has passed still
    /// reads `Open` until the next call moves it to half-open.
    pub fn state(&self) -> BreakerState {
        self.shared.core.lock().state
    }

    /// A receiver that sees every state change.
    pub fn watch(&self) -> watch::Receiver<BreakerState> {
        self.shared.tx.subscribe()
    }

    /// Calls `f` on every state change (after the change, outside any lock).
    pub fn on_transition(&self, f: impl Fn(&Transition) + Send + Sync + 'static) {
        self.shared.hooks.lock().push(Arc::new(f));
    }

    /// Wraps `service` (same as `Layer::layer`).
    pub fn layer_service<S>(&self, service: S) -> Breaker<S> {
        self.layer(service)
    }
}

#[cfg(test)]
mod tests;
