//! Event schema evolution: upcasters turn an old payload into the next
//! schema version when events are loaded.
//!
//! Every stored event carries its type name and the schema version it was
//! written with. When it is read and its version is older than
//! [`DomainEvent::schema_version`](crate::DomainEvent::schema_version), the upcaster
//! registered for `(type, version)` converts the JSON payload to
//! `version + 1`, and so on up to the current version. The log is never
//! rewritten: old records stay as they were written.
//!
//! ## A missing upcaster is an error
//!
//! An old event with no upcaster for its version is
//! [`Error::MissingUpcaster`](crate::Error::MissingUpcaster), naming the
//! type, the version, the aggregate and the log offset; it is never decoded
//! by guessing.
//!
//! ```
//! use busline_es::Upcasters;
//! use serde_json::json;
//!
//! // v1 had `name`; v2 splits it into `first` and `last`.
//! let up = Upcasters::new().register("Registered", 1, |mut v| {
//!     let name = v["name"].as_str().ok_or("missing name")?.to_owned();
//!     let (first, last) = name.split_once(' ').unwrap_or((&name, ""));
//!     v["first"] = json!(first);
//!     v["last"] = json!(last);
//!     Ok::<_, &str>(v)
//! });
//! let v2 = up.apply("Registered", 1, json!({"name": "Ada Lovelace"})).unwrap().unwrap();
//! assert_eq!(v2["last"], "Lovelace");
//! assert!(up.apply("Registered", 2, json!({})).is_none()); // none registered from v2
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

type UpcastFn = dyn Fn(Value) -> Result<Value, String> + Send + Sync;

/// A set of upcasters, one per `(event type, from schema version)`.
#[derive(Clone, Default)]
pub struct Upcasters {
    map: HashMap<(String, u32), Arc<UpcastFn>>,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<_> = self.map.keys().collect();
        keys.sort();
        f.debug_struct("Upcasters").field("from", &keys).finish()
    }
}

impl Upcasters {
    /// No upcasters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `f` to convert the payload of `event_type` from schema
    /// version `from_version` to `from_version + 1`. `f` returns a message
    /// when the payload cannot be converted.
    pub fn register<F, M>(mut self, event_type: &str, from_version: u32, f: F) -> Self
    where
        F: Fn(Value) -> Result<Value, M> + Send + Sync + 'static,
        M: Into<String>,
    {
        self.map.insert(
            (event_type.to_owned(), from_version),
            Arc::new(move |v| f(v).map_err(Into::into)),
        );
        self
    }

    /// Runs the upcaster of `(event_type, from_version)`; `None` if there is none.
    pub fn apply(
        &self,
        event_type: &str,
        from_version: u32,
        payload: Value,
    ) -> Option<Result<Value, String>> {
        self.map
            .get(&(event_type.to_owned(), from_version))
            .map(|f| f(payload))
    }
}
