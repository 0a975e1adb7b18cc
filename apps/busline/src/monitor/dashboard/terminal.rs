//! The dashboard's terminal: summaries written by a thread of their own, so
//! a slow terminal never blocks the dashboard.

use std::io::Write;

use super::TERMINAL_QUEUE;

/// Writes text to stdout on a thread of its own.
pub(super) struct Terminal {
    tx: Option<std::sync::mpsc::SyncSender<String>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub(super) skipped: u64,
}

impl Terminal {
    pub(super) fn start() -> std::io::Result<Terminal> {
        Terminal::start_with(std::io::stdout())
    }

    pub(super) fn start_with(mut out: impl Write + Send + 'static) -> std::io::Result<Terminal> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(TERMINAL_QUEUE);
        let thread = std::thread::Builder::new()
            .name("dashboard-stdout".into())
            .spawn(move || {
                for text in rx {
                    if out
                        .write_all(text.as_bytes())
                        .and_then(|_| out.flush())
                        .is_err()
                    {
                        break; // stdout is gone (closed pipe): nothing more to show
                    }
                }
            })?;
        Ok(Terminal {
            tx: Some(tx),
            thread: Some(thread),
            skipped: 0,
        })
    }

    /// Queues `text`; never waits.
    pub(super) fn show(&mut self, mut text: String) {
        if self.skipped > 0 {
            text.push_str(&format!(
                "  (the terminal is slow: {} summaries were not shown)\n",
                self.skipped
            ));
        }
        let Some(tx) = &self.tx else { return };
        match tx.try_send(text) {
            Ok(()) => self.skipped = 0,
            Err(_) => self.skipped += 1,
        }
    }

    /// Waits until everything queued is written.
    pub(super) async fn finish(mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}
