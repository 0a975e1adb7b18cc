//! Ctrl-C and SIGTERM, which start the shutdown.

/// Waits for Ctrl-C or (on Unix) SIGTERM. If a handler cannot be installed,
/// that signal is simply not waited for.
pub(super) async fn wait_for_signal() -> &'static str {
    let ctrl_c = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "SIGINT",
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = async {
            match signal(SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                    "SIGTERM"
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            s = ctrl_c => s,
            s = term => s,
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c.await
    }
}
