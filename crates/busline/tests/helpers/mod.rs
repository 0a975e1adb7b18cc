//! Shared test support for the busline integration tests.
#![allow(dead_code)]

use std::time::SystemTime;

use busline::{Envelope, EventStore, StoreError};
use busline::{MemoryStore, StoredEvents};
use futures::future::BoxFuture;

/// A memory store whose replays yield the first `good` stored events, then
/// fail (a bad sector, say).
pub struct FlakyReplay {
    pub inner: MemoryStore<u32>,
    pub good: usize,
}

impl FlakyReplay {
    pub fn new(good: usize) -> Self {
        FlakyReplay {
            inner: MemoryStore::new(),
            good,
        }
    }
}

impl EventStore<u32> for FlakyReplay {
    fn append<'a>(&'a self, env: &'a Envelope<u32>) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.inner.append(env)
    }
    fn end(&self) -> u64 {
        self.inner.end()
    }
    fn read(&self, from: u64, to: u64) -> Result<StoredEvents<u32>, StoreError> {
        let first = self.inner.read(from, to)?.take(self.good);
        Ok(Box::new(first.chain(std::iter::once(Err(
            StoreError::new("read", "bad sector"),
        )))))
    }
    fn offset_for_time(&self, at: SystemTime) -> Result<u64, StoreError> {
        self.inner.offset_for_time(at)
    }
    fn commit_offset<'a>(
        &'a self,
        name: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.commit_offset(name, offset)
    }
    fn committed_offset(&self, name: &str) -> Result<Option<u64>, StoreError> {
        self.inner.committed_offset(name)
    }
}
