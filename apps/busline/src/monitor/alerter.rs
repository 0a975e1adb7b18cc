//! The alerter: alert rules over every metric.
//!
//! It subscribes to `metrics.>` (lossless: it never misses a sample), turns
//! every metric into samples ([`Metric::samples`]) and feeds each [`Rule`]'s
//! window with the samples its selector matches (see [`rule`](super::rule)
//! for the rules the config file's `[[alert]]` tables give, and
//! [`rule_window`](super::rule_window) for the windows). A rule's value
//! aggregates every matching series together. Rules are evaluated when
//! samples arrive (percentile rules at most every [`PERCENTILE_EVERY`]) and
//! every second, so a rule whose samples stop, or whose `for` runs out, is
//! seen within a second.
//!
//! ## The default rule
//!
//! The seed's rule is always there, named `error-rate`: more than
//! `--alert-threshold` (default 10) error events in the last minute
//! (`count(error [1m]) > 10`, over `error` samples: the seed's `Error`
//! metrics, from any source). It prints the seed's lines:
//!
//! ```text
//! [ALERT] Error rate: 12/min — threshold exceeded! (threshold 10/min)
//! [ALERT] Error rate back to normal: 8/min
//! ```
//!
//! Every other rule prints its name, its expression and its value:
//!
//! ```text
//! [ALERT] slow-api: p99(http.server.duration{route="/api/*"} [1m]) = 312.5 > 250 for 30s — firing
//! [ALERT] slow-api resolved: p99(http.server.duration{route="/api/*"} [1m]) = 180
//! ```
//!
//! ## Once per crossing
//!
//! A rule fires when its condition has held for its `for` (at once without
//! one), and not again while it holds; when it stops holding, one resolved
//! line is printed. So a storm gives exactly two lines, however long it
//! lasts (see [`rule_state`](super::rule_state)).
//!
//! ## Event time
//!
//! A sample counts at the time it happened (its own `at_ms`, else its
//! envelope's `timestamp`), not when the alerter got it: samples replayed
//! from the event log after a restart (see [the monitor](super)) fill the
//! windows as they were, so old errors do not all count as "now" and errors
//! older than a rule's window do not count at all. A timestamp in the future
//! counts as now. With the log the alerter replays the longest window of its
//! rules before it goes live.
//!
//! ## State for the views
//!
//! Every rule's state (`ok`, `pending`, `firing`), value and threshold is
//! kept in the shared state: `rules` in `/api/summary`. The default rule is
//! also `alert` there (the seed's shape); every transition goes into `alerts`.
//!
//! ## Webhook
//!
//! With `--alert-webhook URL` each transition of every rule is also POSTed
//! as JSON (`{"rule", "state", "value" or "rate", "threshold", "text", …}`).
//! The alerter hands it to a queue and moves on: delivery (with retry, and a
//! circuit breaker that stops trying a dead endpoint for a while) happens on
//! its own task, so a slow or dead webhook never delays an alert or the bus.
//! A full queue drops the notification and counts it.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use busline::{BoxError, Context, Envelope, Module, RecvError, StartAt};
use tokio::time::Instant;

use super::alert::{AlertRecord, Transition};
use super::metric::Metric;
use super::rule::{human_duration, num, Rule};
use super::rule_state::{Change, RuleState, RuleStatus, State};
use super::rule_window::{Clock, RuleWindow};
use super::sample::unix_ms;
use super::webhook::Webhook;
use super::Shared;

/// The transition of `rule` for `change`.
pub fn transition(rule: &Rule, change: Change) -> Transition {
    if rule.is_default {
        let threshold = rule.threshold as u64;
        return match change {
            Change::Fired(v) => Transition::Firing {
                rate: v as u64,
                threshold,
            },
            Change::Resolved(v) => Transition::Resolved {
                rate: v.unwrap_or(0.0) as u64,
                threshold,
            },
        };
    }
    match change {
        Change::Fired(value) => Transition::RuleFiring {
            value,
            threshold: rule.threshold,
        },
        Change::Resolved(value) => Transition::RuleResolved {
            value,
            threshold: rule.threshold,
        },
    }
}

/// The line printed for `t`, a transition of `rule`.
pub fn line(rule: &Rule, t: &Transition) -> String {
    match t {
        Transition::RuleFiring { value, .. } => {
            let hold = if rule.hold.is_zero() {
                String::new()
            } else {
                format!(" for {}", human_duration(rule.hold))
            };
            format!(
                "[ALERT] {}: {} = {} {} {}{hold} — firing",
                rule.name,
                rule.lhs(),
                num(*value),
                rule.op,
                num(rule.threshold)
            )
        }
        Transition::RuleResolved { value, .. } => format!(
            "[ALERT] {} resolved: {} = {}",
            rule.name,
            rule.lhs(),
            value.map_or("no data".into(), num)
        ),
        seed => seed.text(),
    }
}

/// The span of the default rule's window: errors per minute.
pub const ALERT_WINDOW: Duration = Duration::from_secs(60);
/// How often a percentile rule is evaluated at most as samples arrive
/// (merging its window's histograms is the costly part).
pub const PERCENTILE_EVERY: Duration = Duration::from_millis(250);

/// A rule with its window and state.
struct Live {
    rule: Rule,
    window: RuleWindow,
    state: RuleState,
    value: Option<f64>,
    /// Got samples since its last evaluation.
    touched: bool,
    evaluated: Option<Instant>,
}

/// The alerter module.
#[derive(Clone)]
pub struct Alerter {
    threshold: u64,
    rules: Vec<Rule>,
    shared: Arc<Shared>,
    webhook: Option<Webhook>,
    warm_up: bool,
}

impl Alerter {
    /// An alerter with the default rule at `threshold` errors per minute.
    pub fn new(threshold: u64, shared: Arc<Shared>, webhook: Option<Webhook>) -> Self {
        Alerter {
            threshold,
            rules: Vec::new(),
            shared,
            webhook,
            warm_up: false,
        }
    }

    /// With the configured rules too (beside the default one).
    pub fn rules(mut self, rules: Vec<Rule>) -> Self {
        self.rules = rules;
        self
    }

    /// Starts with the metrics of the longest window in the bus's event store
    /// (the bus must persist `metrics.>`).
    pub fn warm_up(mut self) -> Self {
        self.warm_up = true;
        self
    }

    fn emit(&self, rule: &Rule, t: Transition) {
        let text = line(rule, &t);
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}").ok();
            out.flush().ok();
        }
        metrics::counter!("busline_monitor_alerts_total",
            "rule" => rule.name.clone(),
            "state" => if t.is_firing() { "firing" } else { "resolved" })
        .increment(1);
        let record = AlertRecord {
            at_ms: unix_ms(SystemTime::now()),
            rule: rule.name.clone(),
            transition: t,
            expr: rule.expr(),
            text,
        };
        if let Some(w) = &self.webhook {
            w.notify(&record);
        }
        self.shared.push_alert(record);
    }

    /// Counts the samples of `env` into the windows of the rules they match.
    fn take(live: &mut [Live], env: &Envelope<Metric>) {
        let source = env.payload.source();
        let clock = Clock::now();
        env.payload.for_each_sample(|s| {
            let mut when = None;
            for l in live.iter_mut() {
                if !l.rule.selector.matches(source, s) {
                    continue;
                }
                let at = *when.get_or_insert_with(|| {
                    clock.instant(match s.at_ms {
                        Some(ms) => UNIX_EPOCH + Duration::from_millis(ms),
                        None => env.timestamp(),
                    })
                });
                let Some(at) = at else {
                    break; // older than any window
                };
                if l.window.record_at(source, s, at, clock.now) {
                    l.touched = true;
                }
            }
        });
    }

    /// Evaluates the rules (all of them, or those that got samples), prints
    /// and sends their transitions, and shows their state.
    fn evaluate(&self, live: &mut [Live], all: bool) {
        let now = Instant::now();
        let now_ms = unix_ms(SystemTime::now());
        let mut changed = Vec::new();
        for (i, l) in live.iter_mut().enumerate() {
            let due = all
                || (l.touched
                    && (l.rule.function.quantile().is_none()
                        || l.evaluated.is_none_or(|t| now - t >= PERCENTILE_EVERY)));
            if !due {
                continue;
            }
            l.touched = false;
            l.evaluated = Some(now);
            l.value = l.window.value();
            if let Some(change) = l.state.step(&l.rule, l.value, now_ms) {
                self.emit(&l.rule, transition(&l.rule, change));
            }
            if l.rule.is_default {
                let firing = l.state.state() == State::Firing;
                self.shared
                    .set_alert_rate(l.value.unwrap_or(0.0) as u64, firing);
            }
            changed.push(i);
        }
        if changed.is_empty() {
            return;
        }
        self.shared.update_rules(|statuses| {
            for i in changed {
                let (Some(s), Some(l)) = (statuses.get_mut(i), live.get(i)) else {
                    continue;
                };
                s.state = l.state.state();
                s.value = l.value;
                s.since_ms = l.state.since_ms();
                s.overflow = l.window.overflow;
            }
        });
    }
}

/// How long a stopping alerter waits for alerts still on their way to the
/// webhook (retries included), within the module's shutdown deadline.
const WEBHOOK_GRACE: Duration = Duration::from_secs(3);

impl Module<Metric> for Alerter {
    fn name(&self) -> &str {
        "alerter"
    }

    /// Watches every metric until shutdown.
    async fn run(&mut self, ctx: Context<Metric>) -> Result<(), BoxError> {
        let now_ms = unix_ms(SystemTime::now());
        let mut live: Vec<Live> = std::iter::once(Rule::default_errors(self.threshold))
            .chain(self.rules.iter().cloned())
            .map(|rule| Live {
                window: RuleWindow::new(&rule),
                state: RuleState::new(now_ms),
                value: None,
                touched: false,
                evaluated: None,
                rule,
            })
            .collect();
        self.shared.update_rules(|s| {
            *s = live
                .iter()
                .map(|l| RuleStatus::new(&l.rule, now_ms))
                .collect()
        });
        let mut builder = ctx.subscriber("metrics.>").lossless(1024);
        if self.warm_up {
            let longest = live
                .iter()
                .map(|l| l.rule.window)
                .max()
                .unwrap_or(ALERT_WINDOW);
            let since = SystemTime::now().checked_sub(longest).unwrap_or(UNIX_EPOCH);
            builder = builder.from(StartAt::Time(since));
        }
        let mut metrics = builder.subscribe()?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let all = tokio::select! {
                biased;
                _ = ctx.shutdown_requested() => {
                    // Alerts on their way to the webhook get a moment to arrive.
                    if let Some(w) = &self.webhook {
                        w.finish(WEBHOOK_GRACE).await;
                    }
                    return Ok(());
                }
                // The tick before the metrics: under a steady backlog the
                // rules still resolve and `for` clocks still run.
                _ = tick.tick() => true,
                r = metrics.recv() => match r {
                    Ok(env) => {
                        Self::take(&mut live, &env);
                        // Everything ready too (a replay after a restart comes
                        // at once): the rules see the whole window, not the
                        // first few of it.
                        // (At most a batch: shutdown and the rules get their turn.)
                        for _ in 0..4096 {
                            let Ok(Some(env)) = metrics.try_recv() else { break };
                            Self::take(&mut live, &env);
                        }
                        false
                    }
                    Err(RecvError::Closed) => return Ok(()),
                    Err(e) => return Err(e.into()),
                },
            };
            self.evaluate(&mut live, all);
        }
    }
}

#[cfg(test)]
mod tests;
