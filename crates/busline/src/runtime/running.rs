//! A run: modules started in order, supervised (restarts with backoff,
//! limits), asked for their status, and shut down in reverse order.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::module::BoxError;
use super::report::{Report, RuntimeError, StopReason};
use super::signals::wait_for_signal;
use super::slot::{after, sleep_until_opt, Exit, Fatal, FirstPoll, Outcome, Slot};
use super::status::ModuleState;
use super::supervisor::Restart;
use super::system::SystemEvent;
use crate::{Bus, Context};

/// A runtime that has started.
pub(super) struct Running<T> {
    pub(super) bus: Bus<T>,
    pub(super) system: Bus<SystemEvent>,
    pub(super) status: Option<crate::Subscription<SystemEvent>>,
    pub(super) slots: Vec<Slot<T>>,
    pub(super) token: CancellationToken,
    pub(super) signals: bool,
    pub(super) abort_grace: Duration,
    pub(super) tasks: JoinSet<Result<(), BoxError>>,
    pub(super) ids: HashMap<tokio::task::Id, usize>,
    pub(super) refused: u64,
    pub(super) aborted: Vec<String>,
}

impl<T: Send + Sync + 'static> Running<T> {
    pub(super) async fn run(&mut self) -> Result<Report, RuntimeError> {
        let mut status = self.status.take().expect("run once");
        let outcome = match self.start_all().await {
            Some(early) => early,
            None => self.supervise(&mut status).await,
        };
        let reason = match &outcome {
            Outcome::Stop(r) => r.clone(),
            Outcome::Fatal(Fatal::Failed { module, .. } | Fatal::Limit { module, .. }) => {
                StopReason::ModuleFailed(module.clone())
            }
        };
        self.emit(SystemEvent::ShuttingDown {
            reason: reason.to_string(),
        });
        let abandoned = self.shutdown(&mut status).await;
        self.finish(outcome, reason, abandoned)
    }

    /// Starts the modules in order, each once the one before reached its
    /// first `.await`. Returns the outcome if the run was stopped meanwhile.
    async fn start_all(&mut self) -> Option<Outcome> {
        let token = self.token.clone();
        for i in 0..self.slots.len() {
            if self.slots[i].state != ModuleState::Starting {
                continue;
            }
            if token.is_cancelled() {
                return Some(Outcome::Stop(StopReason::Requested));
            }
            if let Some(first_poll) = self.spawn(i) {
                // The next module starts once this one reached its first
                // `.await` (or ended): its subscriptions are in place.
                tokio::select! {
                    _ = first_poll => {}
                    _ = token.cancelled() => {
                        return Some(Outcome::Stop(StopReason::Requested));
                    }
                }
            }
        }
        None
    }

    /// Supervises the started modules until the run stops: every module
    /// done, a stop request, a signal, or a fatal module end. Meanwhile it
    /// restarts modules when their backoff ends and answers status requests.
    async fn supervise(&mut self, status: &mut crate::Subscription<SystemEvent>) -> Outcome {
        let token = self.token.clone();
        let signals = self.signals;
        let signal = async move {
            if signals {
                wait_for_signal().await
            } else {
                std::future::pending().await
            }
        };
        tokio::pin!(signal);
        loop {
            if self.slots.iter().all(Slot::is_done) {
                break Outcome::Stop(StopReason::Finished);
            }
            let next_restart = self.slots.iter().filter_map(|s| s.restart_at).min();
            tokio::select! {
                biased;
                _ = token.cancelled() => break Outcome::Stop(StopReason::Requested),
                sig = &mut signal => break Outcome::Stop(StopReason::Signal(sig)),
                Some(res) = self.tasks.join_next_with_id() => {
                    if let Some(fatal) = self.on_exit(res, false) {
                        break Outcome::Fatal(fatal);
                    }
                }
                _ = sleep_until_opt(next_restart), if next_restart.is_some() => {
                    self.restart_due();
                }
                Ok(req) = status.recv() => self.answer(&req).await,
            }
        }
    }

    /// Starts a new instance of each module whose backoff has ended.
    fn restart_due(&mut self) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            if self.slots[i].restart_at.is_some_and(|t| t <= now) {
                self.slots[i].restart_at = None;
                self.spawn(i);
            }
        }
    }

    /// The run's report, and the error it is when a module ended it.
    fn finish(
        &mut self,
        outcome: Outcome,
        reason: StopReason,
        abandoned: Vec<String>,
    ) -> Result<Report, RuntimeError> {
        let now = Instant::now();
        let report = Report {
            reason,
            modules: self.slots.iter().map(|s| s.status(now)).collect(),
            aborted: std::mem::take(&mut self.aborted),
            abandoned,
            system_events_refused: self.refused,
        };
        match outcome {
            Outcome::Stop(_) => Ok(report),
            Outcome::Fatal(Fatal::Failed {
                module,
                error,
                restarts,
            }) => Err(RuntimeError::ModuleFailed {
                module,
                error,
                restarts,
                report: Box::new(report),
            }),
            Outcome::Fatal(Fatal::Limit {
                module,
                restarts,
                max_restarts,
                within,
                last_error,
            }) => Err(RuntimeError::RestartLimit {
                module,
                restarts,
                max_restarts,
                within,
                last_error,
                report: Box::new(report),
            }),
        }
    }

    fn emit(&mut self, ev: SystemEvent) {
        // Each subscriber with room gets it; a full one is skipped and counted.
        self.refused += self.system.offer(ev) as u64;
    }

    async fn answer(&mut self, req: &crate::Envelope<SystemEvent>) {
        if req.payload != SystemEvent::StatusRequest {
            return;
        }
        let now = Instant::now();
        let modules = self.slots.iter().map(|s| s.status(now)).collect();
        // The requester may have given up; nothing to do then.
        let _ = self
            .system
            .reply(req, SystemEvent::Status { modules })
            .await;
    }

    /// Starts an instance of module `i`; the receiver completes after the
    /// instance's first poll.
    fn spawn(&mut self, i: usize) -> Option<oneshot::Receiver<()>> {
        let slot = &mut self.slots[i];
        let spawner = slot.spawner.as_mut()?;
        let token = CancellationToken::new();
        let ctx = Context::new(
            slot.name.clone(),
            self.bus.clone(),
            self.system.clone(),
            token.clone(),
            slot.discarded.clone(),
        );
        let (tx, rx) = oneshot::channel();
        let fut = FirstPoll {
            inner: spawner(ctx),
            polled: Some(tx),
        };
        let handle = self.tasks.spawn(fut);
        self.ids.insert(handle.id(), i);
        slot.abort = Some(handle);
        slot.token = Some(token);
        slot.state = ModuleState::Running;
        slot.started_at = Some(Instant::now());
        let ev = SystemEvent::Started {
            module: slot.name.to_string(),
            restarts: slot.restarts,
        };
        self.emit(ev);
        Some(rx)
    }

    /// Records how a module's task ended and decides what comes next.
    /// During shutdown nothing is restarted and nothing is fatal.
    fn on_exit(
        &mut self,
        res: Result<(tokio::task::Id, Result<(), BoxError>), JoinError>,
        shutting_down: bool,
    ) -> Option<Fatal> {
        let (i, exit) = self.ended(res)?;
        if shutting_down {
            let slot = &mut self.slots[i];
            if exit.failed {
                slot.last_error = exit.message.clone();
            }
            slot.state = ModuleState::Stopped;
            let name = slot.name.to_string();
            self.emit(SystemEvent::Stopped {
                module: name,
                aborted: false,
            });
            return None;
        }
        self.supervise_exit(i, exit)
    }

    /// Forgets a task that ended and clears its module's instance. Returns
    /// the module's index and how the task ended, or `None` for a task that
    /// is unknown or was aborted (its end was reported then).
    fn ended(
        &mut self,
        res: Result<(tokio::task::Id, Result<(), BoxError>), JoinError>,
    ) -> Option<(usize, Exit)> {
        let (id, res) = match res {
            Ok((id, r)) => (id, Ok(r)),
            Err(e) => (e.id(), Err(e)),
        };
        let i = self.ids.remove(&id)?;
        let exit = Exit::of(res);
        let slot = &mut self.slots[i];
        let was_aborted = slot.state == ModuleState::Aborted;
        slot.started_at = None;
        // Helper tasks of the instance that ended are told to stop too.
        if let Some(t) = slot.token.take() {
            t.cancel();
        }
        slot.abort = None;
        if was_aborted {
            // Its end was already reported when it was aborted.
            return None;
        }
        Some((i, exit))
    }

    /// Applies module `i`'s restart policy to how its instance ended: it is
    /// stopped, failed (fatal), restarted after a backoff, or over its
    /// restart limit (fatal).
    fn supervise_exit(&mut self, i: usize, exit: Exit) -> Option<Fatal> {
        let slot = &mut self.slots[i];
        let name = slot.name.to_string();
        let restart = match slot.supervision.restart {
            Restart::Never => false,
            Restart::OnFailure => exit.failed,
            Restart::Always => true,
        };
        if exit.failed {
            slot.last_error = exit.message.clone();
        }
        let now = Instant::now();
        let admitted = if restart {
            slot.intensity.admit(now, &slot.supervision)
        } else {
            None
        };
        let message = exit
            .message
            .clone()
            .unwrap_or_else(|| "it returned Ok but its restart policy is `always`".into());
        if exit.failed {
            let ev = SystemEvent::Failed {
                module: name.clone(),
                error: message.clone(),
                panicked: exit.panicked,
                will_restart: admitted.is_some(),
            };
            self.emit(ev);
        }
        let slot = &mut self.slots[i];
        match (restart, admitted) {
            (false, _) if !exit.failed => {
                slot.state = ModuleState::Stopped;
                self.emit(SystemEvent::Stopped {
                    module: name,
                    aborted: false,
                });
                None
            }
            (false, _) => {
                slot.state = ModuleState::Failed;
                Some(Fatal::Failed {
                    module: name,
                    error: message,
                    restarts: slot.restarts,
                })
            }
            (true, Some(n)) => {
                self.schedule_restart(i, n, now);
                None
            }
            (true, None) => Some(self.restart_limit(i, exit.failed, message)),
        }
    }

    /// Schedules module `i`'s restart after the backoff for its `n`th
    /// admitted restart.
    fn schedule_restart(&mut self, i: usize, n: u32, now: Instant) {
        let slot = &mut self.slots[i];
        let name = slot.name.to_string();
        let delay = slot.supervision.backoff.delay(n);
        slot.restarts += 1;
        slot.state = ModuleState::Restarting;
        slot.restart_at = Some(after(now, delay));
        let ev = SystemEvent::Restarting {
            module: name,
            restart: slot.restarts,
            delay,
        };
        self.emit(ev);
    }

    /// Module `i` must restart but is over its restart limit: it fails, and
    /// the run with it.
    fn restart_limit(&mut self, i: usize, failed: bool, message: String) -> Fatal {
        let slot = &mut self.slots[i];
        let name = slot.name.to_string();
        slot.state = ModuleState::Failed;
        if !failed {
            // `always` and it returned Ok: its end is still published.
            slot.last_error = Some(message.clone());
            self.emit(SystemEvent::Failed {
                module: name.clone(),
                error: message.clone(),
                panicked: false,
                will_restart: false,
            });
        }
        let slot = &mut self.slots[i];
        Fatal::Limit {
            module: name,
            restarts: slot.restarts,
            max_restarts: slot.supervision.max_restarts,
            within: slot.supervision.within,
            last_error: message,
        }
    }

    /// The graceful shutdown; returns the modules abandoned after abort.
    async fn shutdown(&mut self, status: &mut crate::Subscription<SystemEvent>) -> Vec<String> {
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if slot.state == ModuleState::Starting {
                // Shutdown came before it was started.
                slot.state = ModuleState::Stopped;
            }
            if slot.state == ModuleState::Restarting {
                slot.restart_at = None;
                slot.state = ModuleState::Stopped;
                let ev = SystemEvent::Stopped {
                    module: slot.name.to_string(),
                    aborted: false,
                };
                self.emit(ev);
            }
        }
        for i in (0..self.slots.len()).rev() {
            if self.slots[i].state != ModuleState::Running {
                continue;
            }
            let slot = &mut self.slots[i];
            slot.state = ModuleState::Stopping;
            if let Some(t) = &slot.token {
                t.cancel();
            }
            let deadline = after(Instant::now(), slot.supervision.shutdown_timeout);
            loop {
                if self.slots[i].state != ModuleState::Stopping {
                    break;
                }
                tokio::select! {
                    Some(res) = self.tasks.join_next_with_id() => {
                        self.on_exit(res, true);
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        let slot = &mut self.slots[i];
                        if let Some(a) = &slot.abort {
                            a.abort();
                        }
                        slot.state = ModuleState::Aborted;
                        slot.started_at = None;
                        let name = slot.name.to_string();
                        self.aborted.push(name.clone());
                        self.emit(SystemEvent::Stopped { module: name, aborted: true });
                    }
                    Ok(req) = status.recv() => self.answer(&req).await,
                }
            }
        }
        // Aborted tasks end at their next `.await`; give them a moment.
        let grace = tokio::time::sleep(self.abort_grace);
        tokio::pin!(grace);
        while !self.ids.is_empty() {
            tokio::select! {
                Some(res) = self.tasks.join_next_with_id() => { self.on_exit(res, true); }
                _ = &mut grace => break,
            }
        }
        let mut abandoned: Vec<String> = self
            .ids
            .values()
            .map(|&i| self.slots[i].name.to_string())
            .collect();
        abandoned.sort();
        self.tasks.detach_all();
        abandoned
    }
}
