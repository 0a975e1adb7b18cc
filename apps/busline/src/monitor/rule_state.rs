//! A rule's state: ok, pending (the condition holds, for less than its
//! `for`), firing; and what the views show of it.
//!
//! ```text
//!            holds, for = 0
//!   ok ─────────────────────────────▶ firing   (prints the firing line)
//!   │ ▲                                │ ▲
//!   │ │ stops holding (no line)        │ │ held for `for`
//!   ▼ │                                │ │
//!   pending ───────────────────────────┘ │
//!                                        │
//!   firing ── stops holding ──▶ ok       (prints the resolved line)
//! ```
//!
//! So a rule fires once per crossing and resolves once; a dip while pending
//! starts the `for` again. `for` is measured on the monitor's clock from the
//! evaluation that first saw the condition hold (after a restart a rule with
//! a `for` waits for it again, even when the replayed window already held).

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::rule::Rule;

/// Where a rule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// The condition does not hold.
    Ok,
    /// It holds, not yet for the rule's `for`.
    Pending,
    /// It held for the rule's `for`: the alert is on.
    Firing,
}

/// A change that is announced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// The rule fired with this value.
    Fired(f64),
    /// It resolved; the value, if there is one.
    Resolved(Option<f64>),
}

/// The state machine of one rule.
#[derive(Debug, Clone)]
pub struct RuleState {
    state: State,
    /// When the condition started holding (pending).
    since: Option<Instant>,
    /// Unix ms of the last state change.
    changed_ms: u64,
}

impl RuleState {
    /// A rule that is ok, since `now_ms`.
    pub fn new(now_ms: u64) -> RuleState {
        RuleState {
            state: State::Ok,
            since: None,
            changed_ms: now_ms,
        }
    }

    /// Where it is.
    pub fn state(&self) -> State {
        self.state
    }

    /// Unix ms of its last state change.
    pub fn since_ms(&self) -> u64 {
        self.changed_ms
    }

    /// Feeds the rule's value now (`now_ms` is the wall clock, for
    /// `since_ms`); returns the change to announce, if any.
    pub fn step(&mut self, rule: &Rule, value: Option<f64>, now_ms: u64) -> Option<Change> {
        let holds = rule.holds(value);
        let now = Instant::now();
        let before = self.state;
        let change = match (self.state, holds) {
            (State::Ok, true) => {
                self.since = Some(now);
                self.state = State::Pending;
                self.fire_if_held(rule.hold, now, value)
            }
            (State::Pending, true) => self.fire_if_held(rule.hold, now, value),
            (State::Pending, false) => {
                self.state = State::Ok;
                self.since = None;
                None
            }
            (State::Firing, false) => {
                self.state = State::Ok;
                self.since = None;
                Some(Change::Resolved(value))
            }
            (State::Ok, false) | (State::Firing, true) => None,
        };
        if self.state != before {
            self.changed_ms = now_ms;
        }
        change
    }

    fn fire_if_held(&mut self, hold: Duration, now: Instant, value: Option<f64>) -> Option<Change> {
        let since = self.since.unwrap_or(now);
        if now.duration_since(since) >= hold {
            self.state = State::Firing;
            return Some(Change::Fired(value.unwrap_or(f64::NAN)));
        }
        None
    }
}

/// A rule as the views show it (`rules` in `/api/summary`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleStatus {
    /// The rule's name.
    pub name: String,
    /// Its condition, as people read it.
    pub expr: String,
    /// Where it is.
    pub state: State,
    /// Its value at the last evaluation (none: no data yet, or no value).
    pub value: Option<f64>,
    /// The threshold.
    pub threshold: f64,
    /// Unix ms of its last state change (or of the start).
    pub since_ms: u64,
    /// `up` rules: series not tracked (past the cap).
    #[serde(skip_serializing_if = "is_zero")]
    pub overflow: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl RuleStatus {
    /// `rule`, ok, with no value yet.
    pub fn new(rule: &Rule, now_ms: u64) -> RuleStatus {
        RuleStatus {
            name: rule.name.clone(),
            expr: rule.expr(),
            state: State::Ok,
            value: None,
            threshold: rule.threshold,
            since_ms: now_ms,
            overflow: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::rule::Rule;

    #[tokio::test(start_paused = true)]
    async fn for_makes_it_pending_first_and_a_dip_starts_over() {
        let mut rule = Rule::default_errors(10);
        rule.hold = Duration::from_secs(5);
        let mut s = RuleState::new(0);
        let sec = || tokio::time::advance(Duration::from_secs(1));
        assert_eq!(s.step(&rule, Some(11.0), 1), None);
        assert_eq!(s.state(), State::Pending);
        assert_eq!(s.since_ms(), 1);
        sec().await;
        sec().await;
        assert_eq!(s.step(&rule, Some(12.0), 2), None);
        // A dip: back to ok, silently.
        sec().await;
        assert_eq!(s.step(&rule, Some(3.0), 3), None);
        assert_eq!(s.state(), State::Ok);
        // Holding again: the 5 s start over.
        sec().await;
        assert_eq!(s.step(&rule, Some(11.0), 4), None);
        for _ in 0..4 {
            sec().await;
            assert_eq!(s.step(&rule, Some(11.0), 5), None);
            assert_eq!(s.state(), State::Pending);
        }
        sec().await;
        assert_eq!(s.step(&rule, Some(13.0), 9), Some(Change::Fired(13.0)));
        assert_eq!((s.state(), s.since_ms()), (State::Firing, 9));
        assert_eq!(s.step(&rule, Some(20.0), 10), None);
        assert_eq!(
            s.step(&rule, Some(10.0), 11),
            Some(Change::Resolved(Some(10.0)))
        );
        assert_eq!(s.state(), State::Ok);
    }

    #[tokio::test(start_paused = true)]
    async fn no_value_resolves() {
        let mut rule = Rule::default_errors(1);
        rule.op = crate::monitor::rule::Op::Lt;
        let mut s = RuleState::new(0);
        assert_eq!(s.step(&rule, None, 0), None);
        assert_eq!(s.step(&rule, Some(0.0), 0), Some(Change::Fired(0.0)));
        assert_eq!(s.step(&rule, None, 0), Some(Change::Resolved(None)));
    }
}
