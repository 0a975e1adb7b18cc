//! Events as stored: the envelope around a domain event in the log.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::upcast::Upcasters;

/// A domain event: a serde enum in serde's default (externally tagged)
/// representation, whose variant names are the event type names.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum AccountEvent {
///     Opened { owner: String },
///     Deposited { amount: u64 },
///     Closed,
/// }
///
/// impl busline_es::DomainEvent for AccountEvent {
///     const TYPES: &'static [&'static str] = &["Opened", "Deposited", "Closed"];
/// }
/// ```
pub trait DomainEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Every type name (variant name) this enum knows. A stored event of
    /// another type is [`Error::UnknownEventType`].
    const TYPES: &'static [&'static str];

    /// The current schema version of `event_type` (default 1). Stored events
    /// of older versions are converted by [`Upcasters`] on load.
    fn schema_version(event_type: &str) -> u32 {
        let _ = event_type;
        1
    }
}

/// Metadata stored with every event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The id tying together everything caused by one original request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The id of the message (command, event) that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// Free-form key/values (user, source, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    pub fn causation_id(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }
}

/// An event read back from the log, with where and when it was stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded<E> {
    /// Its offset in the log.
    pub offset: u64,
    /// The aggregate type ([`Aggregate::TYPE`](crate::Aggregate::TYPE)).
    pub aggregate_type: String,
    /// The aggregate id.
    pub aggregate_id: String,
    /// Its version in the aggregate's stream: the first event is version 1.
    pub version: u64,
    /// Its type name.
    pub event_type: String,
    /// The schema version it was written with (before any upcasting).
    pub schema_version: u32,
    /// When it was appended, unix milliseconds.
    pub timestamp_ms: u64,
    /// Its metadata.
    pub metadata: Metadata,
    /// The event, upcast to the current schema.
    pub event: E,
}

impl<E> Recorded<E> {
    /// When it was appended.
    pub fn timestamp(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.timestamp_ms)
    }
}

/// The JSON envelope of one log record.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Stored {
    #[serde(rename = "at")]
    pub aggregate_type: String,
    #[serde(rename = "id")]
    pub aggregate_id: String,
    #[serde(rename = "v")]
    pub version: u64,
    #[serde(rename = "t")]
    pub event_type: String,
    #[serde(rename = "sv")]
    pub schema_version: u32,
    #[serde(rename = "ts")]
    pub timestamp_ms: u64,
    #[serde(rename = "m", default)]
    pub metadata: Metadata,
    #[serde(rename = "p", default)]
    pub payload: Value,
}

impl Stored {
    pub(crate) fn parse(offset: u64, bytes: &[u8]) -> Result<Stored> {
        serde_json::from_slice(bytes).map_err(|source| Error::BadRecord { offset, source })
    }
}

/// Splits a serialized externally tagged enum into (type name, payload).
pub(crate) fn split<E: DomainEvent>(event: &E) -> Result<(String, Value)> {
    let value = serde_json::to_value(event).map_err(|source| Error::Encode {
        what: "event",
        source,
    })?;
    match value {
        Value::String(name) => Ok((name, Value::Null)),
        Value::Object(map) if map.len() == 1 => Ok(map.into_iter().next().expect("one entry")),
        _ => Err(Error::Encode {
            what: "event",
            source: serde::ser::Error::custom(
                "an event must serialize as an externally tagged enum variant",
            ),
        }),
    }
}

/// Decodes a stored event: checks its type, upcasts it, deserializes it.
pub(crate) fn decode<E: DomainEvent>(
    offset: u64,
    stored: Stored,
    upcasters: &Upcasters,
) -> Result<Recorded<E>> {
    let Stored {
        aggregate_type,
        aggregate_id,
        version,
        event_type,
        schema_version,
        timestamp_ms,
        metadata,
        mut payload,
    } = stored;
    if !E::TYPES.contains(&event_type.as_str()) {
        return Err(Error::UnknownEventType {
            event_type,
            schema_version,
            aggregate: aggregate_id,
            version,
            offset,
        });
    }
    let current = E::schema_version(&event_type);
    if schema_version > current {
        return Err(Error::FutureSchema {
            event_type,
            found: schema_version,
            current,
            aggregate: aggregate_id,
            version,
            offset,
        });
    }
    let mut v = schema_version;
    while v < current {
        payload = match upcasters.apply(&event_type, v, payload) {
            None => {
                return Err(Error::MissingUpcaster {
                    event_type,
                    from_version: v,
                    current,
                    aggregate: aggregate_id,
                    version,
                    offset,
                })
            }
            Some(Err(message)) => {
                return Err(Error::Upcast {
                    event_type,
                    from_version: v,
                    aggregate: aggregate_id,
                    version,
                    offset,
                    message,
                })
            }
            Some(Ok(p)) => p,
        };
        v += 1;
    }
    let tagged = Value::Object(
        [(event_type.clone(), payload.clone())]
            .into_iter()
            .collect(),
    );
    let mut result = serde_json::from_value::<E>(tagged);
    if result.is_err() && payload.is_null() {
        if let Ok(e) = serde_json::from_value::<E>(Value::String(event_type.clone())) {
            result = Ok(e);
        }
    }
    let event = result.map_err(|source| Error::DecodeEvent {
        event_type: event_type.clone(),
        aggregate: aggregate_id.clone(),
        version,
        offset,
        source,
    })?;
    Ok(Recorded {
        offset,
        aggregate_type,
        aggregate_id,
        version,
        event_type,
        schema_version,
        timestamp_ms,
        metadata,
        event,
    })
}
