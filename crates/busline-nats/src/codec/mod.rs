//! Codec: how an envelope becomes a NATS message and back.
//!
//! The payload is encoded with a [`Codec`] (JSON by default, [postcard] as a
//! compact binary option); the envelope's metadata travels in NATS headers, so
//! it survives the trip intact, and the payload stays exactly the event:
//!
//! | header | value |
//! | --- | --- |
//! | `Nats-Msg-Id` | the event id, 32 hex digits (JetStream de-duplicates on it); JetStream only |
//! | `Busline` | the rest of the envelope, `;`-separated `key=value` pairs (below) |
//! | `Busline-H-<name>` | each free-form header of the envelope |
//!
//! | key | value |
//! | --- | --- |
//! | `v` | envelope format version, `1` |
//! | `id` | the event id (core NATS, where there is no `Nats-Msg-Id`) |
//! | `ts` | publish time, nanoseconds since the Unix epoch (an event timed before 1970 or after 2554 is refused: the exporter counts it as `rejected`) |
//! | `ct` | payload codec: `json` or `postcard` |
//! | `ty` | the Rust type name of the payload |
//! | `src` | the publishing module, if any |
//! | `corr` | the correlation id, unless it is the event's own id |
//! | `cause` | the causation id, if any |
//! | `reply` | the reply topic, if any |
//! | `hk` | the free-form headers' names in their order, `,`-separated (when there are two or more) |
//!
//! Values are percent-escaped for `%`, `;`, `=`, `,`, CR and LF, a space or
//! tab at either end (NATS trims them), and the `N` of `Nats-Msg-Id` (the
//! server finds a message's id by the first place that text appears in its
//! headers). Free-form headers travel as they are; one that cannot (a line
//! break, a space at either end, or `Nats-Msg-Id` in a JetStream message)
//! is refused with an error naming it.
//!
//! Why one header and not one per field: in `async-nats` every header costs allocations per
//! message on the publishing side (map entry, value list, value) and more
//! bytes for the connection task to serialize and copy, and at a million
//! messages a second that is a large part of the cost of a core NATS
//! publish (`busline bench nats` measures it, see the crate docs). The
//! exporter builds the header value in one pre-sized string, without `fmt`.
//! The topic is the subject: they map 1:1.
//!
//! ## Decoding picks the sender's codec
//!
//! A receiver decodes by the message's `ct`, so processes that chose
//! different codecs still understand each other. A message without a
//! `Busline` header (e.g. from a plain NATS client) is decoded with the
//! receiver's own codec and stamped with the time it arrived. Its id comes
//! from its `Nats-Msg-Id`: the id itself if it is 32 hex digits, otherwise
//! one made from that string (the same each time, so de-duplication still
//! works). Without one, a JetStream import gives it an id made from its
//! stream, the time the server stored it and its sequence, the same at every
//! redelivery; a core NATS message gets a fresh id.
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
//! let wire = encode(&env, Codec::Postcard, true).unwrap();
//! let msg_id = wire.headers.get(async_nats::header::NATS_MESSAGE_ID).unwrap();
//! assert_eq!(msg_id.as_str(), env.id.to_string());
//! let meta = wire.headers.get("Busline").unwrap().as_str();
//! assert!(meta.starts_with("v=1;ts=") && meta.contains(";ct=postcard;ty=alloc::vec::Vec<u32>;src=sensor"), "{meta}");
//! assert_eq!(wire.subject, "a.b");
//! let back = decode::<Vec<u32>>("a.b", Some(&wire.headers), &wire.payload, Codec::Json).unwrap();
//! assert_eq!(back.payload, vec![1, 2, 3]);       // decoded by its `ct`, not by Json
//! assert_eq!(back.id, env.id);
//! assert_eq!(back.source.as_deref(), Some("sensor"));
//! assert_eq!(back.timestamp(), env.timestamp());
//! assert_eq!(back.headers(), vec![("unit".into(), "ms".into())]);
//! # }
//! ```

mod decode;
mod encoder;
mod escape;
#[cfg(test)]
mod tests;

use async_nats::header::HeaderMap;
use busline::{Envelope, EventId};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::NatsError;

pub use self::decode::decode;
pub(crate) use self::encoder::Encoder;

/// Header names.
pub mod header {
    /// The envelope metadata header.
    pub const BUSLINE: &str = "Busline";
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
    /// The name written as `ct`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::Postcard => "postcard",
        }
    }

    /// The codec named `ct`, if known.
    pub fn from_name(ct: &str) -> Option<Codec> {
        match ct {
            "json" => Some(Codec::Json),
            "postcard" => Some(Codec::Postcard),
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

    /// Encodes a payload at the end of `out`.
    pub(crate) fn encode_into<T: Serialize>(
        self,
        payload: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        match self {
            Codec::Json => serde_json::to_writer(&mut *out, payload).map_err(|e| e.to_string()),
            Codec::Postcard => postcard::to_io(payload, &mut *out)
                .map(|_| ())
                .map_err(|e| e.to_string()),
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
    /// The subject (= the topic). Hand it to `async-nats` as
    /// `Subject::from(wire.subject)`, which takes the string over; a
    /// `String` passed as it is gets copied.
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
        self.payload.len() + header_bytes(&self.headers)
    }
}

/// Bytes a header block takes in a message, as the server counts them
/// against `max_payload` (with the payload): 0 without headers.
pub(crate) fn header_bytes(h: &HeaderMap) -> usize {
    let lines: usize = h
        .iter()
        .map(|(k, vs)| {
            vs.iter()
                .map(|v| AsRef::<str>::as_ref(k).len() + v.as_str().len() + 4)
                .sum::<usize>()
        })
        .sum();
    if lines > 0 {
        lines + 12
    } else {
        0
    }
}

/// Encodes an envelope: payload with `codec`, metadata into headers.
/// `msg_id` puts the id in `Nats-Msg-Id` (for JetStream) instead of `Busline`.
pub fn encode<T: Serialize>(
    env: &Envelope<T>,
    codec: Codec,
    msg_id: bool,
) -> Result<Wire, NatsError> {
    Encoder::new::<T>(codec, msg_id).encode(env)
}
