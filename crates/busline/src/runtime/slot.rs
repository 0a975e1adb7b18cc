//! One module's place in a run, and how its task ended.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::module::{BoxError, Name};
use super::report::StopReason;
use super::status::{ModuleState, ModuleStatus};
use super::supervisor::{panic_message, Intensity, Supervision};
use super::{RunFuture, Spawner};

pub(super) struct Slot<T> {
    pub(super) name: Name,
    pub(super) supervision: Supervision,
    pub(super) state: ModuleState,
    pub(super) spawner: Option<Spawner<T>>,
    pub(super) restarts: u32,
    pub(super) intensity: Intensity,
    pub(super) started_at: Option<Instant>,
    pub(super) last_error: Option<String>,
    pub(super) token: Option<CancellationToken>,
    pub(super) abort: Option<AbortHandle>,
    pub(super) restart_at: Option<Instant>,
    pub(super) discarded: Arc<AtomicU64>,
}

impl<T> Slot<T> {
    pub(super) fn status(&self, now: Instant) -> ModuleStatus {
        ModuleStatus {
            name: self.name.to_string(),
            state: self.state,
            restarts: self.restarts,
            uptime: self.started_at.map(|t| now.duration_since(t)),
            last_error: self.last_error.clone(),
            discarded: self.discarded.load(Ordering::Relaxed),
        }
    }

    pub(super) fn is_done(&self) -> bool {
        matches!(
            self.state,
            ModuleState::Disabled
                | ModuleState::Stopped
                | ModuleState::Failed
                | ModuleState::Aborted
        )
    }
}

/// How a module's task ended.
pub(super) struct Exit {
    pub(super) failed: bool,
    pub(super) message: Option<String>,
    pub(super) panicked: bool,
}

impl Exit {
    pub(super) fn of(res: Result<Result<(), BoxError>, JoinError>) -> Exit {
        match res {
            Ok(Ok(())) => Exit {
                failed: false,
                message: None,
                panicked: false,
            },
            Ok(Err(e)) => Exit {
                failed: true,
                message: Some(error_chain(&*e)),
                panicked: false,
            },
            Err(e) if e.is_panic() => Exit {
                failed: true,
                message: Some(format!("panicked: {}", panic_message(&*e.into_panic()))),
                panicked: true,
            },
            Err(_) => Exit {
                failed: true,
                message: Some("its task was cancelled".into()),
                panicked: false,
            },
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

pub(super) enum Outcome {
    Stop(StopReason),
    Fatal(Fatal),
}

pub(super) enum Fatal {
    Failed {
        module: String,
        error: String,
        restarts: u32,
    },
    Limit {
        module: String,
        restarts: u32,
        max_restarts: u32,
        within: Duration,
        last_error: String,
    },
}

/// `at + d`, or about 30 years from `at` when `d` is too long to add (a
/// timeout of `Duration::MAX` meaning "never").
pub(super) fn after(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .unwrap_or_else(|| at + Duration::from_secs(30 * 365 * 86_400))
}

/// Runs a module's future and says when it was first polled.
pub(super) struct FirstPoll {
    pub(super) inner: RunFuture,
    pub(super) polled: Option<oneshot::Sender<()>>,
}

impl Future for FirstPoll {
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let r = self.inner.as_mut().poll(cx);
        if let Some(tx) = self.polled.take() {
            let _ = tx.send(());
        }
        r
    }
}

pub(super) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
