//! Supervision: what the runtime does when a module stops, fails or panics.
//!
//! The policies are documented on [`Supervision`].

use std::any::Any;
use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::delay::{grown, jittered};

/// When a module whose `run` ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Restart {
    /// Never: a failure stops the runtime with an error.
    Never,
    /// After an error or panic, not after `Ok(())` (the default).
    #[default]
    OnFailure,
    /// Whenever `run` ends, unless the runtime is shutting down.
    Always,
}

/// Delay between restarts: exponential, capped, with jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first restart.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Growth factor per restart (≥ 1).
    pub multiplier: f64,
    /// Up to this fraction (0 to 1) of each delay is taken off at random.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 100 ms, doubling, capped at 30 s, 20 % jitter.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// No delay at all.
    pub const NONE: Backoff = Backoff {
        initial: Duration::ZERO,
        max: Duration::ZERO,
        multiplier: 1.0,
        jitter: 0.0,
    };

    /// A fixed delay without jitter.
    pub fn fixed(delay: Duration) -> Self {
        Backoff {
            initial: delay,
            max: delay,
            multiplier: 1.0,
            jitter: 0.0,
        }
    }

    /// The delay before restart number `n` (1-based) within the window.
    pub fn delay(&self, n: u32) -> Duration {
        let base = grown(
            self.initial,
            self.multiplier.max(1.0),
            n.saturating_sub(1),
            self.max,
        );
        jittered(base, self.jitter)
    }
}

/// How one module is supervised. Set per module with the setters on
/// [`ModuleSpec`](crate::ModuleSpec).
///
/// Each module has its own [`Supervision`]: a [`Restart`] policy, a
/// [`Backoff`] between restarts, a restart intensity limit (at most
/// `max_restarts` restarts within `within`) and a shutdown deadline.
///
/// | `run` ends with | `Never` | `OnFailure` (default) | `Always` |
/// | --- | --- | --- | --- |
/// | `Ok(())` | stopped | stopped | restarted |
/// | `Err(e)` or a panic | the runtime stops with an error | restarted | restarted |
///
/// A panic is caught (the module's task ends with a panicking `JoinError`) and
/// treated like an `Err` carrying the panic message. Other modules keep
/// running while one waits for its restart.
///
/// ## Backoff
///
/// The `n`th restart within the intensity window waits
/// `min(initial × multiplier^(n-1), max)`, shortened by a random fraction of
/// up to `jitter` (so many modules that fail together don't restart in step).
///
/// ```
/// use std::time::Duration;
/// use busline::Backoff;
/// let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1),
///                   multiplier: 2.0, jitter: 0.0 };
/// assert_eq!(b.delay(1), Duration::from_millis(100));
/// assert_eq!(b.delay(3), Duration::from_millis(400));
/// assert_eq!(b.delay(10), Duration::from_secs(1)); // capped
/// let j = Backoff { jitter: 0.5, ..b };
/// let d = j.delay(2);
/// assert!(d <= Duration::from_millis(200) && d >= Duration::from_millis(100));
/// ```
///
/// ## Restart intensity
///
/// When a module would be restarted a `max_restarts + 1`th time within
/// `within`, it is not: it is marked failed and the runtime stops with
/// [`RuntimeError::RestartLimit`](crate::RuntimeError::RestartLimit), naming the
/// module, its restart count and its last error or panic message. Restarts
/// older than `within` no longer count, so a module that fails rarely is
/// restarted forever, and its backoff starts again from `initial`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// use busline::{Backoff, BoxError, Bus, Context, Module, Runtime, RuntimeError};
///
/// #[derive(Clone)]
/// struct Broken;
/// impl Module<u32> for Broken {
///     fn name(&self) -> &str { "broken" }
///     async fn run(&mut self, _ctx: Context<u32>) -> Result<(), BoxError> {
///         Err("disk full".into())
///     }
/// }
///
/// let mut rt = Runtime::new(Bus::new()).handle_signals(false);
/// rt.add(Broken)
///     .backoff(Backoff::fixed(Duration::from_secs(1)))
///     .max_restarts(2, Duration::from_secs(60));
/// let err = rt.run().await.unwrap_err();
/// assert!(matches!(&err, RuntimeError::RestartLimit { restarts: 2, .. }));
/// assert_eq!(
///     err.to_string(),
///     "module `broken` exceeded its restart limit (2 restarts within 60s) \
///      after 2 restarts; last error: disk full"
/// );
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Supervision {
    /// When to restart.
    pub restart: Restart,
    /// Delay between restarts.
    pub backoff: Backoff,
    /// At most this many restarts ...
    pub max_restarts: u32,
    /// ... within this long; one more stops the runtime with an error.
    pub within: Duration,
    /// How long the module gets to stop once told to, before it is aborted.
    pub shutdown_timeout: Duration,
}

impl Default for Supervision {
    /// On failure, default backoff, at most 5 restarts within 60 s, 5 s to shut down.
    fn default() -> Self {
        Supervision {
            restart: Restart::OnFailure,
            backoff: Backoff::default(),
            max_restarts: 5,
            within: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// Counts restarts in a sliding window.
#[derive(Debug, Default)]
pub(crate) struct Intensity {
    recent: VecDeque<Instant>,
}

impl Intensity {
    /// Records a restart at `now` if the limit allows it, returning its number
    /// within the window (1-based); `None` when it would exceed the limit.
    pub(crate) fn admit(&mut self, now: Instant, s: &Supervision) -> Option<u32> {
        while let Some(&t) = self.recent.front() {
            if now.duration_since(t) >= s.within {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() as u32 >= s.max_restarts {
            return None;
        }
        self.recent.push_back(now);
        Some(self.recent.len() as u32)
    }
}

/// The message of a panic payload (`&str` or `String`; anything else is named as such).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intensity_window_slides() {
        let s = Supervision {
            max_restarts: 2,
            within: Duration::from_secs(10),
            ..Supervision::default()
        };
        let t0 = Instant::now();
        let mut i = Intensity::default();
        assert_eq!(i.admit(t0, &s), Some(1));
        assert_eq!(i.admit(t0 + Duration::from_secs(1), &s), Some(2));
        assert_eq!(i.admit(t0 + Duration::from_secs(2), &s), None);
        // The first restart leaves the window at t0+10s.
        assert_eq!(i.admit(t0 + Duration::from_secs(10), &s), Some(2));
    }

    #[test]
    fn backoff_is_capped_and_jitter_only_shortens() {
        let b = Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            multiplier: 3.0,
            jitter: 0.0,
        };
        assert_eq!(b.delay(1), Duration::from_millis(10));
        assert_eq!(b.delay(2), Duration::from_millis(30));
        assert_eq!(b.delay(3), Duration::from_millis(50));
        assert_eq!(b.delay(u32::MAX), Duration::from_millis(50));
        let j = Backoff { jitter: 1.0, ..b };
        for n in 1..20 {
            assert!(j.delay(n) <= b.delay(n));
        }
    }

    #[test]
    fn panic_messages() {
        let p: Box<dyn Any + Send> = Box::new("boom");
        assert_eq!(panic_message(&*p), "boom");
        let p: Box<dyn Any + Send> = Box::new(format!("boom {}", 2));
        assert_eq!(panic_message(&*p), "boom 2");
        let p: Box<dyn Any + Send> = Box::new(7u8);
        assert_eq!(panic_message(&*p), "a panic with a non-string payload");
    }
}
