//! Codec: how an envelope becomes a NATS message and back.
//!
//! The payload is encoded with a [`Codec`] (JSON by default, [postcard] as a
//! compact binary option); the envelope's metadata travels in NATS headers, so
//! it survives the trip intact and tools that only read headers (or the
//! server's de-duplication) can use it:
//!
//! | header | value |
//! | --- | --- |
//! | `Nats-Msg-Id` | the event id, 32 hex digits (JetStream de-duplicates on it) |
//! | `Busline-Time` | publish time, nanoseconds since the Unix epoch |
//! | `Busline-Source` | the publishing module, if any |
//! | `Busline-Correlation` | the correlation id, unless it is the event's own id |
//! | `Busline-Causation` | the causation id, if any |
//! | `Busline-Reply-To` | the reply topic, if any |
//! | `Busline-Type` | the Rust type name of the payload |
//! | `Busline-Version` | the envelope format version, `1` |
//! | `Content-Type` | `application/json` or `application/postcard` |
//! | `Busline-H-<name>` | each free-form header of the envelope |
//!
//! The topic is the subject: they map 1:1.
//!
//! ## Decoding picks the sender's codec
//!
//! A receiver decodes by the message's `Content-Type`, so processes that chose
//! different codecs still understand each other. A message without
//! `Content-Type` (e.g. from a plain NATS client) is decoded with the
//! receiver's own codec, and one without `Nats-Msg-Id` gets a fresh id.
//!
//! ```
//! use busline::{Bus, Message};
//! use busline_nats::codec::{decode, encode, Codec};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let bus: Bus<Vec<u32>> = Bus::new();
//! let mut sub = bus.subscribe("a.b").unwrap();
//! bus.send(Message::new(vec![1, 2, 3]).topic("a.b").source("sensor").header("unit", "ms"))
//!     .await.unwrap();
//! let env = sub.recv().await.unwrap();
//!
//! let wire = encode(&env, Codec::Postcard).unwrap();
//! assert_eq!(wire.subject, "a.b");
//! let back = decode::<Vec<u32>>("a.b", Some(&wire.headers), &wire.payload, Codec::Json).unwrap();
//! assert_eq!(back.payload, vec![1, 2, 3]);       // decoded by its Content-Type, not by Json
//! assert_eq!(back.id, env.id);
//! assert_eq!(back.source.as_deref(), Some("sensor"));
//! assert_eq!(back.timestamp, env.timestamp);
//! assert_eq!(back.headers, vec![("unit".into(), "ms".into())]);
//! # }
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use busline::{Envelope, EventId, Headers, Topic};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::NatsError;

/// Header names.
pub mod header {
    /// Publish time in nanoseconds since the Unix epoch.
    pub const TIME: &str = "Busline-Time";
    /// The source module.
    pub const SOURCE: &str = "Busline-Source";
    /// Correlation id.
    pub const CORRELATION: &str = "Busline-Correlation";
    /// Causation id.
    pub const CAUSATION: &str = "Busline-Causation";
    /// Reply topic.
    pub const REPLY_TO: &str = "Busline-Reply-To";
    /// Rust type name of the payload.
    pub const TYPE: &str = "Busline-Type";
    /// Envelope format version.
    pub const VERSION: &str = "Busline-Version";
    /// Payload encoding.
    pub const CONTENT_TYPE: &str = "Content-Type";
    /// Prefix of free-form envelope headers.
    pub const USER_PREFIX: &str = "Busline-H-";
    /// On dead letters: why the message could not be taken.
    pub const DEAD_REASON: &str = "Busline-Dead-Reason";
    /// On dead letters: the subject the message arrived on.
    pub const DEAD_SUBJECT: &str = "Busline-Dead-Subject";
    /// On dead letters: how many times it was delivered.
    pub const DEAD_DELIVERIES: &str = "Busline-Dead-Deliveries";
}

/// The envelope format version written in `Busline-Version`.
pub const FORMAT_VERSION: &str = "1";

/// How payloads are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Codec {
    /// `serde_json`: readable by any NATS tool; the default.
    #[default]
    Json,
    /// `postcard`: compact binary, several times smaller and faster for numeric payloads.
    Postcard,
}

impl Codec {
    /// The `Content-Type` this codec writes.
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Json => "application/json",
            Codec::Postcard => "application/postcard",
        }
    }

    /// The codec for a `Content-Type`, if known.
    pub fn from_content_type(ct: &str) -> Option<Codec> {
        match ct {
            "application/json" => Some(Codec::Json),
            "application/postcard" => Some(Codec::Postcard),
            _ => None,
        }
    }

    /// Encodes a payload.
    pub fn encode<T: Serialize>(self, payload: &T) -> Result<Vec<u8>, String> {
        match self {
            Codec::Json => serde_json::to_vec(payload).map_err(|e| e.to_string()),
            Codec::Postcard => postcard::to_stdvec(payload).map_err(|e| e.to_string()),
        }
    }

    /// Decodes a payload.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, String> {
        match self {
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| format!("json: {e}")),
            Codec::Postcard => postcard::from_bytes(bytes).map_err(|e| format!("postcard: {e}")),
        }
    }
}

/// An envelope ready for NATS.
#[derive(Debug, Clone)]
pub struct Wire {
    /// The subject (= the topic).
    pub subject: String,
    /// Metadata headers.
    pub headers: HeaderMap,
    /// The encoded payload.
    pub payload: Bytes,
    /// The event id.
    pub id: EventId,
}

impl Wire {
    /// Bytes this message takes against the server's `max_payload`: payload plus headers.
    pub fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, vs)| {
                vs.iter()
                    .map(|v| AsRef::<str>::as_ref(k).len() + v.as_str().len() + 4)
                    .sum::<usize>()
            })
            .sum();
        self.payload.len() + if headers > 0 { headers + 12 } else { 0 }
    }
}

fn valid_header_token(s: &str, value: bool) -> bool {
    !s.is_empty()
        && !s.bytes().any(|b| {
            b == b'\r' || b == b'\n' || (!value && (b == b':' || !(33..=126).contains(&b)))
        })
}

/// Encodes an envelope: payload with `codec`, metadata into headers.
pub fn encode<T: Serialize>(env: &Envelope<T>, codec: Codec) -> Result<Wire, NatsError> {
    let subject = env.topic.as_str().to_string();
    let bad = |detail: String| NatsError::Encode {
        subject: subject.clone(),
        id: env.id.to_string(),
        detail,
    };
    let payload = codec.encode(&env.payload).map_err(&bad)?;
    let mut h = HeaderMap::new();
    h.insert(NATS_MESSAGE_ID, env.id.to_string().as_str());
    let nanos = env
        .timestamp
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.insert(header::TIME, nanos.to_string());
    if let Some(s) = &env.source {
        if !valid_header_token(s, true) {
            return Err(bad(format!("source `{s}` holds a line break")));
        }
        h.insert(header::SOURCE, &**s);
    }
    if env.correlation_id != env.id {
        // Omitted when the event starts its own conversation (the decoder's default).
        h.insert(header::CORRELATION, env.correlation_id.to_string());
    }
    if let Some(c) = env.causation_id {
        h.insert(header::CAUSATION, c.to_string());
    }
    if let Some(r) = &env.reply_to {
        h.insert(header::REPLY_TO, r.as_str());
    }
    h.insert(header::TYPE, std::any::type_name::<T>());
    h.insert(header::VERSION, FORMAT_VERSION);
    h.insert(header::CONTENT_TYPE, codec.content_type());
    for (k, v) in &env.headers {
        if !valid_header_token(k, false) || !valid_header_token(v, true) {
            return Err(bad(format!(
                "header `{k}` cannot travel in nats headers (names need printable ascii without `:`, values no line breaks)"
            )));
        }
        h.append(format!("{}{k}", header::USER_PREFIX), &**v);
    }
    Ok(Wire {
        subject,
        headers: h,
        payload: payload.into(),
        id: env.id,
    })
}

/// Decodes a NATS message into an envelope (its `seq` is 0: the local bus
/// assigns one when the envelope is published there).
pub fn decode<T: DeserializeOwned>(
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    default_codec: Codec,
) -> Result<Envelope<T>, NatsError> {
    let bad = |detail: String| NatsError::Decode {
        subject: subject.to_string(),
        detail,
    };
    let topic = Topic::new(subject).map_err(|e| bad(e.to_string()))?;
    let empty = HeaderMap::new();
    let h = headers.unwrap_or(&empty);
    let get = |name: &str| h.get(name).map(|v| v.as_str());
    let codec = match get(header::CONTENT_TYPE) {
        None => default_codec,
        Some(ct) => Codec::from_content_type(ct)
            .ok_or_else(|| bad(format!("unknown content type `{ct}`")))?,
    };
    if let Some(v) = get(header::VERSION) {
        if v != FORMAT_VERSION {
            return Err(bad(format!(
                "unsupported envelope version `{v}` (this build reads `{FORMAT_VERSION}`)"
            )));
        }
    }
    let id_of = |name: &str, s: &str| {
        EventId::parse(s).ok_or_else(|| bad(format!("header {name} `{s}` is not an event id")))
    };
    let id = match h.get(NATS_MESSAGE_ID) {
        Some(v) => id_of("Nats-Msg-Id", v.as_str())?,
        None => fresh_id(),
    };
    let timestamp = match get(header::TIME) {
        Some(t) => {
            let n: u128 = t
                .parse()
                .map_err(|_| bad(format!("header {} `{t}` is not a number", header::TIME)))?;
            UNIX_EPOCH + Duration::new((n / 1_000_000_000) as u64, (n % 1_000_000_000) as u32)
        }
        None => SystemTime::now(),
    };
    let correlation_id = match get(header::CORRELATION) {
        Some(c) => id_of(header::CORRELATION, c)?,
        None => id,
    };
    let causation_id = get(header::CAUSATION)
        .map(|c| id_of(header::CAUSATION, c))
        .transpose()?;
    let reply_to = get(header::REPLY_TO)
        .map(|r| Topic::new(r).map_err(|e| bad(e.to_string())))
        .transpose()?;
    let source = get(header::SOURCE).map(Arc::<str>::from);
    let mut user: Headers = Vec::new();
    for (k, vs) in h.iter() {
        if let Some(name) = AsRef::<str>::as_ref(k).strip_prefix(header::USER_PREFIX) {
            for v in vs {
                user.push((name.into(), v.as_str().into()));
            }
        }
    }
    let payload = codec.decode::<T>(payload).map_err(bad)?;
    Ok(Envelope::from_parts(
        0,
        id,
        topic,
        timestamp,
        source,
        correlation_id,
        causation_id,
        reply_to,
        user,
        payload,
    ))
}

fn fresh_id() -> EventId {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let hi = std::process::id() as u128
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
    EventId((hi << 64) | NEXT.fetch_add(1, Ordering::Relaxed) as u128)
}
