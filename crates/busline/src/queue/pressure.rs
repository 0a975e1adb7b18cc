//! The count behind the bus-wide backpressure signal: how many queues are
//! above their high watermark.

use tokio::sync::watch;

use crate::sync::Mutex;

/// The bus-wide backpressure signal (see the crate docs on watermarks).
pub(crate) struct Pressure {
    /// Queues above their high watermark (not yet drained to their low one).
    count: Mutex<usize>,
    tx: watch::Sender<bool>,
}

impl Pressure {
    pub(crate) fn new() -> Self {
        let (tx, _) = watch::channel(false);
        Pressure {
            count: Mutex::new(0),
            tx,
        }
    }

    /// A receiver of the signal: `true` while any queue is pressured.
    pub(crate) fn watch(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    pub(crate) fn raise(&self) {
        let mut n = self.count.lock();
        *n += 1;
        if *n == 1 {
            self.tx.send_replace(true);
        }
    }

    pub(crate) fn lower(&self) {
        let mut n = self.count.lock();
        *n -= 1;
        if *n == 0 {
            self.tx.send_replace(false);
        }
    }
}
