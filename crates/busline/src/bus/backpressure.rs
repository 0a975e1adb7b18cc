//! The bus-wide backpressure signal (see the crate docs on watermarks).

use tokio::sync::watch;

/// Watches the bus's backpressure signal: high while any lossless subscriber's
/// queue is above its high watermark (and has not drained to its low one).
#[derive(Clone, Debug)]
pub struct Backpressure {
    rx: watch::Receiver<bool>,
}

impl Backpressure {
    pub(crate) fn new(rx: watch::Receiver<bool>) -> Self {
        Backpressure { rx }
    }
}

impl Backpressure {
    /// Whether backpressure is raised now.
    pub fn is_high(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits until the signal changes, and returns the new value.
    pub async fn changed(&mut self) -> bool {
        if self.rx.changed().await.is_err() {
            return false;
        }
        *self.rx.borrow_and_update()
    }

    /// Waits until backpressure is low (returns at once if it is).
    pub async fn wait_low(&mut self) {
        let _ = self.rx.wait_for(|high| !*high).await;
    }
}
