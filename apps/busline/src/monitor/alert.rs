//! An alert: a [`Transition`] of a rule, and the [`AlertRecord`] of it that
//! the alert history keeps, the web page shows and the webhook receives.
//! The [`alerter`](super::alerter) makes them; the
//! [`webhook`](super::webhook) and [`Shared`](super::Shared) only carry
//! them, so they live here, below all three.

use serde::Serialize;

use super::rule::num;

/// A change of alert state.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Transition {
    /// The default rule: the error rate went above the threshold.
    Firing {
        /// Errors in the last minute.
        rate: u64,
        /// The threshold.
        threshold: u64,
    },
    /// The default rule: the error rate came back to the threshold or below.
    Resolved {
        /// Errors in the last minute.
        rate: u64,
        /// The threshold.
        threshold: u64,
    },
    /// A configured rule fired.
    #[serde(rename = "firing")]
    RuleFiring {
        /// The rule's value.
        value: f64,
        /// Its threshold.
        threshold: f64,
    },
    /// A configured rule resolved.
    #[serde(rename = "resolved")]
    RuleResolved {
        /// The rule's value (none: no data in the window).
        value: Option<f64>,
        /// Its threshold.
        threshold: f64,
    },
}

impl Transition {
    /// The default rule's line for it (a configured rule's line names the
    /// rule: see [`line`](super::alerter::line)).
    pub fn text(&self) -> String {
        match self {
            Transition::Firing { rate, threshold } => {
                format!("[ALERT] Error rate: {rate}/min — threshold exceeded! (threshold {threshold}/min)")
            }
            Transition::Resolved { rate, .. } => {
                format!("[ALERT] Error rate back to normal: {rate}/min")
            }
            Transition::RuleFiring { value, .. } => format!("[ALERT] firing: {}", num(*value)),
            Transition::RuleResolved { value, .. } => {
                format!("[ALERT] resolved: {}", value.map_or("no data".into(), num))
            }
        }
    }

    /// Whether it is a firing.
    pub fn is_firing(&self) -> bool {
        matches!(
            self,
            Transition::Firing { .. } | Transition::RuleFiring { .. }
        )
    }
}

/// One line of the alert history (the web page shows them; the webhook
/// gets them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRecord {
    /// When, Unix milliseconds.
    pub at_ms: u64,
    /// The rule's name (`error-rate` for the default rule).
    pub rule: String,
    /// What happened.
    #[serde(flatten)]
    pub transition: Transition,
    /// The rule's condition.
    pub expr: String,
    /// The printed line.
    pub text: String,
}
