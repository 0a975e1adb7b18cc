//! De-duplication of commands by id, for the handlers of what sagas emit.
//!
//! The outbox publishes an emit at least once; a handler that must act once
//! per command keeps the ids it has acted on. [`Dedup`] does so durably: it
//! stores the command id together with the handler's record of its effect
//! in one log record, so "acted" and "remembered" cannot come apart.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use busline_es::saga::Dedup;
//! # let tmp = tempfile::tempdir()?;
//! let log = busline_log::Log::open(tmp.path(), Default::default())?;
//! let dedup = Dedup::open(log.clone())?;
//! assert!(dedup.once("cmd-1", &"reserved 2 units").await?);
//! assert!(!dedup.once("cmd-1", &"reserved 2 units").await?); // a redelivery
//! drop(dedup);
//! let dedup = Dedup::open(log)?; // after a restart it still knows
//! assert!(!dedup.once("cmd-1", &"reserved 2 units").await?);
//! assert_eq!(dedup.effects::<String>()?, vec![("cmd-1".to_owned(), "reserved 2 units".to_owned())]);
//! # Ok(()) }
//! ```
//!
//! What it promises: an id is recorded at most once, and `once` returns
//! `true` for the call that recorded it. When the effect is the record
//! itself (or is derived from the records, as a read model), it happens
//! exactly once. When the effect is outside (a payment provider's API),
//! the handler decides the order: act then record (a crash in between acts
//! again: at least once) or record then act (at most once); the external
//! system's own idempotency key (the command id) closes the gap.

use std::collections::HashSet;

use busline_log::Log;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

#[derive(Serialize, Deserialize)]
struct Entry {
    #[serde(rename = "dedup")]
    id: String,
    effect: Value,
}

/// A durable set of handled command ids, each stored with its effect. Cheap to clone.
#[derive(Clone)]
pub struct Dedup {
    log: Log,
    /// Ids recorded; the lock is held across an append, so two calls with
    /// the same id cannot both record it.
    seen: std::sync::Arc<tokio::sync::Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for Dedup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedup")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

impl Dedup {
    /// Opens the set stored in `log` (a log of its own: every record must
    /// be one of this type's), reading it once.
    pub fn open(log: Log) -> Result<Self> {
        let mut seen = HashSet::new();
        let mut reader = log.read_from(log.first_offset())?;
        while let Some(rec) = reader.try_next()? {
            let e: Entry =
                serde_json::from_slice(&rec.payload).map_err(|source| Error::BadRecord {
                    offset: rec.offset,
                    source,
                })?;
            seen.insert(e.id);
        }
        Ok(Dedup {
            log,
            seen: std::sync::Arc::new(tokio::sync::Mutex::new(seen)),
        })
    }

    /// Records `effect` under `id` unless `id` is recorded already.
    /// Returns whether it recorded it (`false`: a duplicate). Resolves after
    /// the log acknowledged the record (until then a concurrent call with
    /// the same id already returns `false`).
    pub async fn once<E: Serialize + ?Sized>(
        &self,
        id: impl std::fmt::Display,
        effect: &E,
    ) -> Result<bool> {
        let id = id.to_string();
        let mut seen = self.seen.lock().await;
        if seen.contains(&id) {
            return Ok(false);
        }
        let effect = serde_json::to_value(effect).map_err(|source| Error::Encode {
            what: "effect",
            source,
        })?;
        let entry = Entry { id, effect };
        let bytes = serde_json::to_vec(&entry).map_err(|source| Error::Encode {
            what: "dedup entry",
            source,
        })?;
        let ticket = self
            .log
            .submit_batch(busline_log::now_millis(), [bytes])
            .await?;
        // Queued now: it gets written even if this future is dropped, so
        // it counts as seen from here (a second call cannot record it again).
        seen.insert(entry.id);
        drop(seen);
        ticket.acknowledged().await?;
        Ok(true)
    }

    /// Whether `id` is recorded.
    pub async fn contains(&self, id: impl std::fmt::Display) -> bool {
        self.seen.lock().await.contains(&id.to_string())
    }

    /// Every recorded `(id, effect)`, in the order recorded.
    pub fn effects<E: DeserializeOwned>(&self) -> Result<Vec<(String, E)>> {
        let mut out = Vec::new();
        let mut reader = self.log.read_from(self.log.first_offset())?;
        while let Some(rec) = reader.try_next()? {
            let bad = |source| Error::BadRecord {
                offset: rec.offset,
                source,
            };
            let e: Entry = serde_json::from_slice(&rec.payload).map_err(bad)?;
            out.push((e.id, serde_json::from_value(e.effect).map_err(bad)?));
        }
        Ok(out)
    }
}
