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

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::BoxError;
use crate::{Bus, Message, Topic, TopicError};

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

/// When a breaker opens, and how it recovers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Open after this many failures in a row (0 = off).
    pub consecutive_failures: u32,
    /// Open when the failure rate over `rate_window` reaches this (0.0..=1.0;
    /// `None` = off).
    pub failure_rate: Option<f64>,
    /// The window the failure rate is measured over.
    pub rate_window: Duration,
    /// The rate is only judged once the window holds this many calls.
    pub min_calls: u32,
    /// How long it stays open before letting trials through.
    pub cool_down: Duration,
    /// Trial calls let through at once when half-open, and successes needed to close (≥ 1).
    pub half_open_trials: u32,
}

impl Default for BreakerConfig {
    /// 5 failures in a row, or 50% of at least 20 calls in 60 s; 30 s cool-down; 1 trial.
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate: Some(0.5),
            rate_window: Duration::from_secs(60),
            min_calls: 20,
            cool_down: Duration::from_secs(30),
            half_open_trials: 1,
        }
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

struct Core {
    state: BreakerState,
    consecutive: u32,
    outcomes: VecDeque<(Instant, bool)>,
    opened_at: Instant,
    trials_in_flight: u32,
    trial_successes: u32,
    /// Bumped on every transition so late outcomes from an older state are ignored.
    epoch: u64,
}

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

#[derive(Clone, Copy)]
enum Permit {
    Closed(u64),
    Trial(u64),
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
                core: Mutex::new(Core {
                    state: BreakerState::Closed,
                    consecutive: 0,
                    outcomes: VecDeque::new(),
                    opened_at: Instant::now(),
                    trials_in_flight: 0,
                    trial_successes: 0,
                    epoch: 0,
                }),
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

    /// Publishes every state change on `bus`, on topic
    /// `$sys.breaker.<name>.<state>`, with payload `make(&transition)`, in
    /// the order the changes happened.
    ///
    /// Publishing does not hold up the call that changed the state: if the
    /// event cannot go at once (a lossless subscriber is full, or the topic
    /// is persisted and the store must acknowledge it first), it and every
    /// later change are published in order from a spawned task. Without a
    /// tokio runtime to spawn on, such an event is logged as lost. Fails if
    /// the breaker's name cannot be a topic token (it contains `.`, a space,
    /// `*` or `>`). The bus is held weakly: the hook stops once the bus is
    /// dropped.
    pub fn publish_to<T: Send + Sync + 'static>(
        &self,
        bus: &Bus<T>,
        make: impl Fn(&Transition) -> T + Send + Sync + 'static,
    ) -> Result<(), TopicError> {
        let name = &self.shared.name;
        if name.contains('.') {
            return Err(TopicError {
                input: name.to_string(),
                pattern: false,
                reason: "a breaker name is one topic token and cannot contain `.`".into(),
            });
        }
        Topic::new(&format!("$sys.breaker.{name}.open"))?;
        let weak = bus.downgrade();
        // Changes waiting for the publishing task, oldest first; `Some` while
        // that task runs (later changes queue behind it to keep the order).
        let backlog: Arc<Mutex<Option<VecDeque<Message<T>>>>> = Arc::new(Mutex::new(None));
        self.on_transition(move |t| {
            let Some(bus) = weak.upgrade() else { return };
            let msg = Message::new(make(t))
                .topic(format!("$sys.breaker.{}.{}", t.breaker, t.to))
                .source(format!("breaker.{}", t.breaker));
            let mut queue = backlog.lock();
            if let Some(q) = queue.as_mut() {
                q.push_back(msg);
                return;
            }
            let msg = match bus.try_send(msg) {
                Ok(_) | Err(crate::PublishError::Closed { .. }) => return,
                Err(e) => Message::new(e.into_event())
                    .topic(format!("$sys.breaker.{}.{}", t.breaker, t.to))
                    .source(format!("breaker.{}", t.breaker)),
            };
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                tracing::warn!(breaker = %t.breaker, from = %t.from, to = %t.to, "breaker transition not published: the bus could not take it at once and there is no tokio runtime to wait on");
                return;
            };
            *queue = Some(VecDeque::from([msg]));
            drop(queue);
            let backlog = backlog.clone();
            rt.spawn(async move {
                loop {
                    let next = {
                        let mut queue = backlog.lock();
                        match queue.as_mut().and_then(VecDeque::pop_front) {
                            Some(m) => m,
                            None => {
                                *queue = None;
                                return;
                            }
                        }
                    };
                    match bus.send(next).await {
                        Ok(_) | Err(crate::PublishError::Closed { .. }) => {}
                        Err(e) => tracing::warn!(error = %e, "breaker transition not published"),
                    }
                }
            });
        });
        Ok(())
    }

    /// Wraps `service` (same as `Layer::layer`).
    pub fn layer_service<S>(&self, service: S) -> Breaker<S> {
        self.layer(service)
    }

    fn transition(&self, core: &mut Core, to: BreakerState, reason: String) -> Transition {
        let from = core.state;
        core.state = to;
        core.epoch += 1;
        core.consecutive = 0;
        core.outcomes.clear();
        core.trials_in_flight = 0;
        core.trial_successes = 0;
        if to == BreakerState::Open {
            core.opened_at = Instant::now();
        }
        Transition {
            breaker: self.shared.name.clone(),
            from,
            to,
            reason,
            at: SystemTime::now(),
        }
    }

    fn announce(&self, t: Option<Transition>) {
        let Some(t) = t else { return };
        self.shared.tx.send_replace(t.to);
        let hooks: Vec<Hook> = self.shared.hooks.lock().clone();
        for h in hooks {
            h(&t);
        }
    }

    fn acquire(&self) -> Result<Permit, BreakerOpen> {
        let cfg = &self.shared.config;
        let mut changed = None;
        let result = {
            let mut core = self.shared.core.lock();
            if core.state == BreakerState::Open {
                let since = core.opened_at.elapsed();
                if since >= cfg.cool_down {
                    changed = Some(self.transition(
                        &mut core,
                        BreakerState::HalfOpen,
                        format!("cool-down of {:?} elapsed", cfg.cool_down),
                    ));
                } else {
                    return Err(BreakerOpen {
                        name: self.shared.name.clone(),
                        state: BreakerState::Open,
                        retry_in: Some(cfg.cool_down - since),
                    });
                }
            }
            match core.state {
                BreakerState::Closed => Ok(Permit::Closed(core.epoch)),
                _ if core.trials_in_flight < cfg.half_open_trials => {
                    core.trials_in_flight += 1;
                    Ok(Permit::Trial(core.epoch))
                }
                _ => Err(BreakerOpen {
                    name: self.shared.name.clone(),
                    state: BreakerState::HalfOpen,
                    retry_in: None,
                }),
            }
        };
        self.announce(changed);
        result
    }

    /// `ok = None`: the call was cancelled (its future dropped).
    fn record(&self, permit: Permit, ok: Option<bool>) {
        let cfg = &self.shared.config;
        let changed = {
            let mut core = self.shared.core.lock();
            match permit {
                Permit::Closed(epoch) if epoch == core.epoch => {
                    let Some(ok) = ok else { return };
                    let now = Instant::now();
                    core.outcomes.push_back((now, ok));
                    while let Some((t, _)) = core.outcomes.front() {
                        if now.saturating_duration_since(*t) >= cfg.rate_window {
                            core.outcomes.pop_front();
                        } else {
                            break;
                        }
                    }
                    core.consecutive = if ok { 0 } else { core.consecutive + 1 };
                    let calls = core.outcomes.len();
                    let failed = core.outcomes.iter().filter(|(_, ok)| !ok).count();
                    if !ok
                        && cfg.consecutive_failures > 0
                        && core.consecutive >= cfg.consecutive_failures
                    {
                        let n = core.consecutive;
                        Some(self.transition(
                            &mut core,
                            BreakerState::Open,
                            format!("{n} consecutive failures"),
                        ))
                    } else if let Some(rate) = cfg.failure_rate.filter(|_| !ok) {
                        let observed = failed as f64 / calls as f64;
                        (calls >= cfg.min_calls as usize && observed >= rate).then(|| {
                            self.transition(
                                &mut core,
                                BreakerState::Open,
                                format!(
                                    "failure rate {:.0}% ({failed} of {calls} calls in {:?})",
                                    observed * 100.0,
                                    cfg.rate_window
                                ),
                            )
                        })
                    } else {
                        None
                    }
                }
                Permit::Trial(epoch) if epoch == core.epoch => {
                    core.trials_in_flight = core.trials_in_flight.saturating_sub(1);
                    match ok {
                        None => None,
                        Some(true) => {
                            core.trial_successes += 1;
                            (core.trial_successes >= cfg.half_open_trials).then(|| {
                                let n = core.trial_successes;
                                self.transition(
                                    &mut core,
                                    BreakerState::Closed,
                                    format!("{n} trial call(s) succeeded"),
                                )
                            })
                        }
                        Some(false) => Some(self.transition(
                            &mut core,
                            BreakerState::Open,
                            "a trial call failed".into(),
                        )),
                    }
                }
                _ => None, // from an earlier state: not counted
            }
        };
        self.announce(changed);
    }
}

impl<S> Layer<S> for CircuitBreaker {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Breaker<S> {
        Breaker {
            inner,
            breaker: self.clone(),
        }
    }
}

/// The service made by [`CircuitBreaker`]'s layer.
#[derive(Clone, Debug)]
pub struct Breaker<S> {
    inner: S,
    breaker: CircuitBreaker,
}

/// Records a cancelled call if the future is dropped before it finished.
struct Outcome {
    breaker: CircuitBreaker,
    permit: Option<Permit>,
}

impl Outcome {
    fn finish(mut self, ok: bool) {
        if let Some(p) = self.permit.take() {
            self.breaker.record(p, Some(ok));
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            self.breaker.record(p, None);
        }
    }
}

impl<S, R> Service<R> for Breaker<S>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let permit = match self.breaker.acquire() {
            Ok(p) => p,
            Err(open) => return Box::pin(async move { Err(Box::new(open) as BoxError) }),
        };
        let outcome = Outcome {
            breaker: self.breaker.clone(),
            permit: Some(permit),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await.map_err(Into::into);
            outcome.finish(result.is_ok());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;
    use tower::ServiceExt;

    fn handler(
    ) -> impl Service<bool, Response = (), Error = BoxError, Future = impl Send + 'static> + Clone
    {
        tower::service_fn(|ok: bool| async move {
            if ok {
                Ok(())
            } else {
                Err::<(), BoxError>("boom".into())
            }
        })
    }

    async fn call<S: Service<bool, Error = BoxError>>(
        svc: &mut S,
        ok: bool,
    ) -> Result<S::Response, BoxError> {
        svc.ready().await?.call(ok).await
    }

    fn config() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_rate: None,
            cool_down: Duration::from_secs(10),
            half_open_trials: 1,
            ..BreakerConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_fails_fast() {
        let b = CircuitBreaker::new("db", config());
        let mut svc = b.layer(handler());
        call(&mut svc, false).await.unwrap_err();
        call(&mut svc, false).await.unwrap_err();
        call(&mut svc, true).await.unwrap(); // resets the run
        for _ in 0..2 {
            call(&mut svc, false).await.unwrap_err();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        call(&mut svc, false).await.unwrap_err();
        assert_eq!(b.state(), BreakerState::Open);
        advance(Duration::from_secs(4)).await;
        let err = call(&mut svc, true).await.unwrap_err();
        let open = err
            .downcast_ref::<BreakerOpen>()
            .expect("fails fast with BreakerOpen");
        assert_eq!(open.state, BreakerState::Open);
        assert_eq!(open.retry_in, Some(Duration::from_secs(6)));
        assert_eq!(
            err.to_string(),
            "circuit breaker `db` is open: call rejected without running the handler (trials resume in 6s)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_trial_fails_and_reopens_then_recovers() {
        let b = CircuitBreaker::new("api", config());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        b.on_transition(move |t| s.lock().push((t.from, t.to)));
        let mut w = b.watch();
        let mut svc = b.layer(handler());
        for _ in 0..3 {
            call(&mut svc, false).await.unwrap_err();
        }
        assert!(w.has_changed().unwrap());
        assert_eq!(*w.borrow_and_update(), BreakerState::Open);

        advance(Duration::from_secs(10)).await; // exactly the cool-down
        call(&mut svc, false).await.unwrap_err(); // trial fails
        assert_eq!(b.state(), BreakerState::Open);
        // A fresh cool-down starts from the failed trial.
        advance(Duration::from_secs(9)).await;
        assert!(call(&mut svc, true).await.unwrap_err().is::<BreakerOpen>());
        advance(Duration::from_secs(1)).await;
        call(&mut svc, true).await.unwrap();
        assert_eq!(b.state(), BreakerState::Closed);
        use BreakerState::*;
        assert_eq!(
            *seen.lock(),
            vec![
                (Closed, Open),
                (Open, HalfOpen),
                (HalfOpen, Open),
                (Open, HalfOpen),
                (HalfOpen, Closed)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_limits_concurrent_trials() {
        let b = CircuitBreaker::new(
            "slow",
            BreakerConfig {
                half_open_trials: 2,
                ..config()
            },
        );
        let slow = tower::service_fn(|ok: bool| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if ok {
                Ok(())
            } else {
                Err::<(), BoxError>("boom".into())
            }
        });
        let mut svc = b.layer(slow);
        for _ in 0..3 {
            call(&mut svc, false).await.unwrap_err();
        }
        advance(Duration::from_secs(10)).await;
        let t1 = svc.call(true);
        let t2 = svc.call(true);
        let err = svc.call(true).await.unwrap_err(); // a third trial is refused
        assert_eq!(
            err.downcast_ref::<BreakerOpen>().unwrap().state,
            BreakerState::HalfOpen
        );
        t1.await.unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen); // needs 2 successes
        t2.await.unwrap();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_failure_rate_over_the_window() {
        let b = CircuitBreaker::new(
            "rate",
            BreakerConfig {
                consecutive_failures: 0,
                failure_rate: Some(0.5),
                rate_window: Duration::from_secs(10),
                min_calls: 4,
                ..config()
            },
        );
        let mut svc = b.layer(handler());
        // ✓ ✗ ✓ ✗ : 50% of 4 calls -> opens on the 4th.
        call(&mut svc, true).await.unwrap();
        call(&mut svc, false).await.unwrap_err();
        call(&mut svc, true).await.unwrap();
        assert_eq!(b.state(), BreakerState::Closed);
        call(&mut svc, false).await.unwrap_err();
        assert_eq!(b.state(), BreakerState::Open);

        // Old outcomes leave the window: failures spread out never trip it.
        let b = CircuitBreaker::new(
            "rate2",
            BreakerConfig {
                min_calls: 2,
                ..b.shared.config
            },
        );
        let mut svc = b.layer(handler());
        for _ in 0..5 {
            call(&mut svc, false).await.unwrap_err(); // 1 of 1 calls in the window: below min_calls
            advance(Duration::from_secs(10)).await;
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_trial_frees_its_slot() {
        let b = CircuitBreaker::new("c", config());
        let pending = tower::service_fn(|fail: bool| async move {
            if fail {
                return Err::<(), BoxError>("boom".into());
            }
            futures::future::pending::<()>().await;
            Ok(())
        });
        let mut svc = b.layer(pending);
        for _ in 0..3 {
            call(&mut svc, true).await.unwrap_err();
        }
        advance(Duration::from_secs(10)).await;
        drop(svc.call(false)); // a trial, cancelled
        let err = call(&mut svc, true).await.unwrap_err(); // the slot is free: the trial runs and fails
        assert!(!err.is::<BreakerOpen>());
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn publish_to_rejects_names_that_are_not_one_token() {
        let bus = Bus::<u8>::new();
        let b = CircuitBreaker::new("a.b", BreakerConfig::default());
        assert!(b
            .publish_to(&bus, |_| 0)
            .unwrap_err()
            .to_string()
            .contains("cannot contain `.`"));
        let b = CircuitBreaker::new("a b", BreakerConfig::default());
        assert!(b.publish_to(&bus, |_| 0).is_err());
    }
}
