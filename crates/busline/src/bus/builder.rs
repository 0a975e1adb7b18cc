//! [`BusBuilder`]: a bus with non-default settings.

use std::sync::Arc;

use ahash::AHashMap;

use super::{Bus, BusInner, Registry};
use crate::queue::Pressure;
use crate::sync::{AtomicBool, AtomicU64, Mutex, RwLock};

/// Builds a [`Bus`] with non-default settings.
#[derive(Debug, Clone)]
pub struct BusBuilder {
    pub(super) capacity: usize,
}

impl BusBuilder {
    /// Queue capacity for subscriptions that don't set one (default 1024).
    pub fn default_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Makes the bus.
    pub fn build<T: Send + Sync + 'static>(self) -> Bus<T> {
        crate::clock::warm_up();
        let node: u64 = rand::random();
        Bus {
            inner: Arc::new(BusInner {
                registry: RwLock::new(Registry::new()),
                epoch: AtomicU64::new(0),
                cache: RwLock::new(AHashMap::new()),
                seq: AtomicU64::new(0),
                node,
                next_id: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                unrouted: AtomicU64::new(0),
                cancelled: AtomicU64::new(0),
                default_capacity: self.capacity,
                pressure: Arc::new(Pressure::new()),
                inbox_head: format!("_INBOX.{}.", base32(node)).into(),
                next_inbox: AtomicU64::new(0),
                pending: Mutex::new(super::pending::Pending::new()),
                stores: RwLock::new(Vec::new()),
            }),
            stamp: None,
        }
    }
}

/// `n` in 13 characters of `0-9a-v`: the bus's part of its reply inboxes,
/// short enough that an inbox with its number fits a topic stored inline.
fn base32(mut n: u64) -> String {
    const DIGITS: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let mut out = [b'0'; 13];
    for d in out.iter_mut().rev() {
        *d = DIGITS[(n % 32) as usize];
        n /= 32;
    }
    out.iter().map(|&b| b as char).collect()
}
