//! The breaker's state machine: the counts it keeps ([`Core`]), the permit a
//! call holds, and the moves between closed, open and half-open as calls
//! are let through and their outcomes recorded.

use std::collections::VecDeque;
use std::time::SystemTime;

use tokio::time::Instant;

use super::{BreakerOpen, BreakerState, CircuitBreaker, Hook, Transition};

/// The state and counts of one breaker, under its lock.
pub(super) struct Core {
    /// Read by [`CircuitBreaker::state`].
    pub(super) state: BreakerState,
    consecutive: u32,
    outcomes: VecDeque<(Instant, bool)>,
    opened_at: Instant,
    trials_in_flight: u32,
    trial_successes: u32,
    /// Bumped on every transition so late outcomes from an older state are ignored.
    epoch: u64,
}

impl Core {
    /// A closed breaker with nothing counted.
    pub(super) fn closed() -> Core {
        Core {
            state: BreakerState::Closed,
            consecutive: 0,
            outcomes: VecDeque::new(),
            opened_at: Instant::now(),
            trials_in_flight: 0,
            trial_successes: 0,
            epoch: 0,
        }
    }
}

/// What lets a call through: the state it started in and that state's
/// epoch (an outcome from an older epoch is not counted).
#[derive(Clone, Copy)]
pub(super) enum Permit {
    Closed(u64),
    Trial(u64),
}

impl CircuitBreaker {
    /// Moves to `to`, starting its counts afresh.
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

    /// Tells the watchers and hooks about a transition, outside the lock.
    fn announce(&self, t: Option<Transition>) {
        let Some(t) = t else { return };
        self.shared.tx.send_replace(t.to);
        let hooks: Vec<Hook> = self.shared.hooks.lock().clone();
        for h in hooks {
            h(&t);
        }
    }

    /// Lets a call through, or rejects it while open (or half-open with
    /// every trial slot taken). Moves an open breaker whose cool-down has
    /// passed to half-open.
    pub(super) fn acquire(&self) -> Result<Permit, BreakerOpen> {
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

    /// Counts the outcome of a call let through with `permit`, and opens or
    /// closes the breaker when it should. `ok = None`: the call was
    /// cancelled (its future dropped).
    pub(super) fn record(&self, permit: Permit, ok: Option<bool>) {
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
