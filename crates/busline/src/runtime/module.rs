//! Modules: independent parts of an application that talk only through the bus.
//!
//! The lifecycle is documented on [`Module`].

use std::future::Future;
use std::sync::Arc;

use crate::runtime::context::Context;

/// The error a module's `run` returns: any error type works with `?`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A part of an application that runs on its own and talks only through the bus.
///
/// Implement `run` with an `async fn`; its future must be `Send` (it runs on
/// a tokio task).
///
/// A module is a value with a [name](Module::name) and an async
/// [`run`](Module::run) that gets a [`Context`]: its publisher, its
/// subscriptions, its shutdown signal. A network listener, a logger, a UI, an
/// alerter are each a module; the [`Runtime`](crate::Runtime) starts,
/// supervises and stops them.
///
/// ```
/// use busline::{BoxError, Context, Module};
///
/// #[derive(Clone)]
/// struct Logger;
///
/// impl Module<String> for Logger {
///     fn name(&self) -> &str { "logger" }
///
///     async fn run(&mut self, ctx: Context<String>) -> Result<(), BoxError> {
///         let mut events = ctx.subscribe(">")?;
///         loop {
///             tokio::select! {
///                 _ = ctx.shutdown_requested() => return Ok(()),
///                 ev = events.recv() => println!("logger: received event: {}", ev?.payload),
///             }
///         }
///     }
/// }
/// ```
///
/// # Lifecycle
///
/// ```text
/// add() ─► Starting ─► Running ─┬─ run() returns Ok ───────────────────────► Stopped
///   │                    ▲      │  (under Restart::Always: as a failure)
///   │                    │      ├─ run() returns Err, or panics
///   │                    │      │      └─► does the policy restart it, within its limit?
///   │                    │      │             │ yes                        │ no
///   │                    │      │             ▼                            ▼
///   │                    └──────┼── backoff ── Restarting               Failed ─► the run
///   │                           │               │ (shutdown)                     ends with
///   │                           │               └──────────────────► Stopped    an error
///   │                           └─ shutdown ─► Stopping ─┬─ returns by its deadline ─► Stopped
///   │                                                    └─ deadline passes ─► Aborted
///   └─ config `enabled = false` ─► Disabled
/// ```
///
/// Starts, stops, failures and restarts are published as [`SystemEvent`](crate::SystemEvent)s on
/// the runtime's system bus, on `$sys.module.<name>.<started|stopped|failed|restarting>`.
///
/// # Restarts need a fresh instance
///
/// A module that panicked may have left its state half-updated, so a restart
/// never reuses the instance that failed: the runtime makes a new one, either
/// by cloning the value given to [`Runtime::add`](crate::Runtime::add)
/// (`M: Clone`; the clone is taken *before* the first run, so it is the
/// pristine value) or by calling the factory given to
/// [`Runtime::add_factory`](crate::Runtime::add_factory).
///
/// # System events and the typed bus
///
/// The application's bus is typed over its own event type `T`, and busline's
/// lifecycle events are not `T`. Rather than ask every application to add a
/// variant for them (`T: From<SystemEvent>`), the runtime owns a second bus,
/// a `Bus<SystemEvent>` ([`Runtime::system_bus`](crate::Runtime::system_bus),
/// [`Context::system`](crate::Context::system)), on which every topic starts
/// with `$sys.`. User code subscribes to it with the usual patterns and needs
/// no conversion code: `system.subscribe("$sys.module.*.failed")`.
pub trait Module<T: Send + Sync + 'static>: Send + 'static {
    /// The module's name: unique in its runtime, one topic token (no `.`,
    /// whitespace, `*` or `>`). It is the `source` of what the module publishes
    /// and names it in `$sys.module.<name>.*` topics.
    fn name(&self) -> &str;

    /// Runs the module until it is done, fails, or is told to stop
    /// ([`Context::shutdown_requested`]). `Ok(())` is a normal stop, `Err` a
    /// failure (subject to the restart policy), and so is a panic.
    fn run(&mut self, ctx: Context<T>) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Checks that `name` can name a module: one topic token.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>'))
    {
        return Err(format!(
            "it contains {c:?}; a module name is one topic token (no `.`, `*`, `>` or whitespace)"
        ));
    }
    // Its lifecycle events go out on `$sys.module.<name>.restarting` (the
    // longest of them): that topic must be valid too.
    let longest = "$sys.module.".len() + name.len() + ".restarting".len();
    if longest > crate::topic::MAX_LEN {
        return Err(format!(
            "it is {} bytes long: its topic `$sys.module.<name>.restarting` would be {longest} bytes, over the limit of {} (so at most {} bytes)",
            name.len(),
            crate::topic::MAX_LEN,
            crate::topic::MAX_LEN - "$sys.module..restarting".len()
        ));
    }
    Ok(())
}

/// A shared, cheap name.
pub(crate) type Name = Arc<str>;
