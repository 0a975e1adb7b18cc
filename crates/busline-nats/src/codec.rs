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

/// Why a free-form header cannot travel as a NATS header, if it cannot.
/// `msg_id`: the message carries `Nats-Msg-Id` (JetStream), which the
/// server finds by the first place its name appears in the header block.
fn header_problem(name: &str, value: &str, msg_id: bool) -> Option<&'static str> {
    if name.is_empty() || name.bytes().any(|b| b == b':' || !(33..=126).contains(&b)) {
        return Some("a name needs printable ascii without `:` or spaces");
    }
    if value.contains(['\r', '\n']) {
        return Some("a value cannot hold a line break");
    }
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return Some("a value cannot start or end with a space or tab (NATS trims them)");
    }
    if msg_id && (name.contains(MSG_ID_TEXT) || value.contains(MSG_ID_TEXT)) {
        return Some("it holds the text `Nats-Msg-Id`, which would hide the message id from JetStream's de-duplication");
    }
    None
}

/// The text the server looks for to find a message's id.
const MSG_ID_TEXT: &str = "Nats-Msg-Id";

/// Appends `v` percent-escaped for a `Busline` header field: `%`, `;`,
/// `=`, `,`, CR, LF; a space or tab at either end (NATS trims them); and
/// the `N` of `Nats-Msg-Id` (the server finds the message id by the first
/// place that text appears in the header block).
fn escape_into(out: &mut String, v: &str) {
    let edge = |c: char| c == ' ' || c == '\t';
    if !v.contains(['%', ';', '=', ',', '\r', '\n'])
        && !v.starts_with(edge)
        && !v.ends_with(edge)
        && !v.contains(MSG_ID_TEXT)
    {
        out.push_str(v);
        return;
    }
    let last = v.char_indices().last().map_or(0, |(i, _)| i);
    for (i, c) in v.char_indices() {
        match c {
            '%' => out.push_str("%25"),
            ';' => out.push_str("%3B"),
            '=' => out.push_str("%3D"),
            ',' => out.push_str("%2C"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            ' ' if i == 0 || i == last => out.push_str("%20"),
            '\t' if i == 0 || i == last => out.push_str("%09"),
            'N' if v[i..].starts_with(MSG_ID_TEXT) => out.push_str("%4E"),
            c => out.push(c),
        }
    }
}

fn unescape(v: &str) -> Option<String> {
    if !v.contains('%') {
        return Some(v.to_string());
    }
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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

/// What [`encode`] computes once per payload type and codec: the exporter
/// keeps one, so the per-message work is the payload, one pre-sized string
/// and the header map.
#[derive(Debug, Clone)]
pub(crate) struct Encoder {
    codec: Codec,
    msg_id: bool,
    /// `;ct=<codec>;ty=<escaped type name>`
    fixed: String,
}

/// Bytes of `;id=` / `;corr=` / `;cause=` plus 32 hex digits, at most.
const ID_FIELD: usize = 7 + 32;

impl Encoder {
    pub(crate) fn new<T>(codec: Codec, msg_id: bool) -> Self {
        let mut fixed = String::with_capacity(64);
        fixed.push_str(";ct=");
        fixed.push_str(codec.name());
        fixed.push_str(";ty=");
        escape_into(&mut fixed, std::any::type_name::<T>());
        Encoder {
            codec,
            msg_id,
            fixed,
        }
    }

    pub(crate) fn encode<T: Serialize>(&self, env: &Envelope<T>) -> Result<Wire, NatsError> {
        let subject = env.topic.as_str().to_string();
        let payload = self
            .codec
            .encode(&env.payload)
            .map_err(|detail| encode_error(env, detail))?;
        // One allocation, sized for everything (escaping aside).
        let mut m = String::with_capacity(self.meta_capacity(env));
        self.meta_into(env, &mut m)?;
        let mut h = HeaderMap::new();
        if self.msg_id {
            let mut id = String::with_capacity(32);
            push_hex(&mut id, env.id);
            h.insert(NATS_MESSAGE_ID, id);
        }
        // A static name: no allocation per message.
        h.insert(BUSLINE_NAME, m);
        for (k, v) in &env.headers {
            let mut name = String::with_capacity(header::USER_PREFIX.len() + k.len());
            name.push_str(header::USER_PREFIX);
            name.push_str(k);
            h.append(name, &**v);
        }
        Ok(Wire {
            subject,
            headers: h,
            payload: payload.into(),
            id: env.id,
        })
    }

    /// Appends the envelope as one core NATS `HPUB` to `out`, the protocol
    /// text the server reads: subject, reply subject `<prefix>.<seq>` if
    /// `reply` is given (a JetStream publish's ack inbox), header block (the
    /// same headers [`encode`](Self::encode) makes), payload. Refused, with
    /// `out` as it was, when it cannot be encoded or is larger than `max`
    /// bytes (the server's `max_payload`; 0: no limit). `scratch` holds the
    /// payload and `meta` the `Busline` value while they are built (kept by
    /// the caller, so a message costs no allocation once they have grown).
    pub(crate) fn encode_hpub<T: Serialize>(
        &self,
        env: &Envelope<T>,
        reply: Option<(&str, u64)>,
        max: usize,
        out: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
        meta: &mut String,
    ) -> Result<(), NatsError> {
        scratch.clear();
        self.codec
            .encode_into(&env.payload, scratch)
            .map_err(|detail| encode_error(env, detail))?;
        meta.clear();
        self.meta_into(env, meta)?;
        const VERSION_LINE: &[u8] = b"NATS/1.0\r\n";
        let id_line = if self.msg_id {
            MSG_ID_TEXT.len() + 2 + 32 + 2
        } else {
            0
        };
        let user: usize = env
            .headers
            .iter()
            .map(|(k, v)| header::USER_PREFIX.len() + k.len() + 2 + v.len() + 2)
            .sum();
        let head =
            VERSION_LINE.len() + id_line + header::BUSLINE.len() + 2 + meta.len() + 2 + user + 2;
        let total = head + scratch.len();
        if max > 0 && total > max {
            return Err(NatsError::PayloadTooLarge {
                subject: env.topic.as_str().to_string(),
                id: env.id.to_string(),
                size: total,
                max,
            });
        }
        // A topic holds no space or line break (`Topic` refuses them), so
        // it is a valid subject and cannot break the protocol line.
        let mut num = [0u8; 20];
        let reply_len = reply.map_or(0, |(p, _)| p.len() + 22);
        out.reserve(5 + env.topic.as_str().len() + reply_len + 44 + total + 2);
        out.extend_from_slice(b"HPUB ");
        out.extend_from_slice(env.topic.as_str().as_bytes());
        out.push(b' ');
        // An inbox prefix the client made: no space or line break either.
        if let Some((prefix, seq)) = reply {
            out.extend_from_slice(prefix.as_bytes());
            out.push(b'.');
            out.extend_from_slice(decimal(seq, &mut num));
            out.push(b' ');
        }
        out.extend_from_slice(decimal(head as u64, &mut num));
        out.push(b' ');
        out.extend_from_slice(decimal(total as u64, &mut num));
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(VERSION_LINE);
        if self.msg_id {
            out.extend_from_slice(MSG_ID_TEXT.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(&hex(env.id));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(header::BUSLINE.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(meta.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (k, v) in &env.headers {
            out.extend_from_slice(header::USER_PREFIX.as_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(scratch);
        out.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// Bytes the `Busline` value of `env` takes, escaping aside.
    fn meta_capacity<T>(&self, env: &Envelope<T>) -> usize {
        "v=1;ts=".len()
            + 20
            + self.fixed.len()
            + 3 * ID_FIELD
            + env.source.as_ref().map_or(0, |s| 5 + s.len())
            + env.reply_to.as_ref().map_or(0, |r| 7 + r.as_str().len())
    }

    /// Appends the `Busline` header's value to `m`, after checking that the
    /// envelope's time and free-form headers can travel.
    fn meta_into<T>(&self, env: &Envelope<T>, m: &mut String) -> Result<(), NatsError> {
        // Refused, not clamped: a time `ts` cannot hold would arrive as another.
        let nanos = env
            .timestamp
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_nanos()).ok())
            .ok_or_else(|| {
                encode_error(
                    env,
                    format!(
                        "timestamp {:?} is outside 1970 to 2554 (what `ts` holds)",
                        env.timestamp
                    ),
                )
            })?;
        for (k, v) in &env.headers {
            if let Some(why) = header_problem(k, v, self.msg_id) {
                return Err(encode_error(
                    env,
                    format!("header `{k}` cannot travel in nats headers: {why}"),
                ));
            }
        }
        m.push_str("v=");
        m.push_str(FORMAT_VERSION);
        m.push_str(";ts=");
        push_decimal(m, nanos);
        m.push_str(&self.fixed);
        if !self.msg_id {
            m.push_str(";id=");
            push_hex(m, env.id);
        }
        if let Some(src) = &env.source {
            m.push_str(";src=");
            escape_into(m, src);
        }
        if env.correlation_id != env.id {
            // Omitted when the event starts its own conversation (the decoder's default).
            m.push_str(";corr=");
            push_hex(m, env.correlation_id);
        }
        if let Some(c) = env.causation_id {
            m.push_str(";cause=");
            push_hex(m, c);
        }
        if let Some(r) = &env.reply_to {
            m.push_str(";reply=");
            escape_into(m, r.as_str());
        }
        if env.headers.len() > 1 {
            // NATS headers come back in no particular order: the names'
            // order goes along, so the decoder can rebuild the list as it was.
            m.push_str(";hk=");
            for (i, (k, _)) in env.headers.iter().enumerate() {
                if i > 0 {
                    m.push(',');
                }
                escape_into(m, k);
            }
        }
        Ok(())
    }
}

fn encode_error<T>(env: &Envelope<T>, detail: String) -> NatsError {
    NatsError::Encode {
        subject: env.topic.as_str().to_string(),
        id: env.id.to_string(),
        detail,
    }
}

const BUSLINE_NAME: async_nats::HeaderName = async_nats::HeaderName::from_static(header::BUSLINE);

/// Appends an id as 32 lowercase hex digits (as its `Display`), without `fmt`.
fn push_hex(out: &mut String, id: EventId) {
    out.push_str(std::str::from_utf8(&hex(id)).unwrap_or_default());
}

/// The id's 32 lowercase hex digits.
fn hex(id: EventId) -> [u8; 32] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let v = id.as_u128();
    let mut buf = [0u8; 32];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = DIGITS[((v >> (124 - 4 * i)) & 0xf) as usize];
    }
    buf
}

/// Appends `n` in decimal, without `fmt`, two digits a step.
fn push_decimal(out: &mut String, n: u64) {
    let mut buf = [0u8; 20];
    out.push_str(std::str::from_utf8(decimal(n, &mut buf)).unwrap_or_default());
}

/// `n` in decimal, in the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut i = buf.len();
    while n >= 100 {
        let d = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    }
    if n >= 10 {
        let d = n as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[d..d + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    &buf[i..]
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
    let id_of = |name: &str, s: &str| {
        EventId::parse(s).ok_or_else(|| bad(format!("{name} `{s}` is not an event id")))
    };
    // Any string is a valid `Nats-Msg-Id` (a plain client's own ids): one
    // that is not an event id stands for the id made from it.
    let mut id = h
        .get(NATS_MESSAGE_ID)
        .map(|v| EventId::parse(v.as_str()).unwrap_or_else(|| id_from(v.as_str())));
    let (mut codec, mut timestamp, mut source, mut corr, mut cause, mut reply) =
        (default_codec, None, None, None, None, None);
    let mut order: Option<Vec<String>> = None;
    if let Some(meta) = h.get(header::BUSLINE) {
        // The version first: a message of another version is refused for
        // that, not for a field it writes differently.
        let version = meta
            .as_str()
            .split(';')
            .find_map(|pair| pair.strip_prefix("v="));
        match version {
            Some(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(bad(format!(
                    "unsupported envelope version `{v}` (this build reads `{FORMAT_VERSION}`)"
                )))
            }
            None => return Err(bad("Busline header without a version".into())),
        }
        for pair in meta.as_str().split(';') {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("Busline header field `{pair}` is not key=value")))?;
            let v = unescape(v)
                .ok_or_else(|| bad(format!("Busline header field `{pair}` is badly escaped")))?;
            match k {
                "v" => {}
                "id" => id = Some(id_of("id", &v)?),
                "ts" => {
                    let n: u64 = v.parse().map_err(|_| {
                        bad(format!(
                            "ts `{v}` is not a time (nanoseconds since 1970 as a 64-bit number)"
                        ))
                    })?;
                    timestamp = Some(
                        UNIX_EPOCH
                            .checked_add(Duration::from_nanos(n))
                            .ok_or_else(|| bad(format!("ts `{v}` is past this system's clock")))?,
                    );
                }
                "hk" => {
                    order = Some(
                        pair["hk=".len()..]
                            .split(',')
                            .map(|k| {
                                unescape(k).ok_or_else(|| {
                                    bad(format!("Busline header field `{pair}` is badly escaped"))
                                })
                            })
                            .collect::<Result<_, _>>()?,
                    )
                }
                "ct" => {
                    codec =
                        Codec::from_name(&v).ok_or_else(|| bad(format!("unknown codec `{v}`")))?
                }
                "src" => source = Some(Arc::<str>::from(v)),
                "corr" => corr = Some(id_of("corr", &v)?),
                "cause" => cause = Some(id_of("cause", &v)?),
                "reply" => reply = Some(Topic::new(&v).map_err(|e| bad(e.to_string()))?),
                _ => {} // added by a newer version within format 1: ignored
            }
        }
    }
    let id = id.unwrap_or_else(fresh_id);
    let mut user: Headers = Vec::new();
    // Each name's values, in order; taken in the sender's order of names
    // (`hk`), then whatever that list did not name.
    let mut by_name: Vec<(&str, std::slice::Iter<'_, async_nats::HeaderValue>)> = h
        .iter()
        .filter_map(|(k, vs)| {
            let name = AsRef::<str>::as_ref(k).strip_prefix(header::USER_PREFIX)?;
            Some((name, vs.iter()))
        })
        .collect();
    for name in order.iter().flatten() {
        if let Some((_, vs)) = by_name.iter_mut().find(|(n, _)| n == name) {
            if let Some(v) = vs.next() {
                user.push((name.as_str().into(), v.as_str().into()));
            }
        }
    }
    for (name, vs) in by_name {
        for v in vs {
            user.push((name.into(), v.as_str().into()));
        }
    }
    let payload = codec.decode::<T>(payload).map_err(bad)?;
    Ok(Envelope::from_parts(
        0,
        id,
        topic,
        timestamp.unwrap_or_else(SystemTime::now),
        source,
        corr.unwrap_or(id),
        cause,
        reply,
        user,
        payload,
    ))
}

/// A 128-bit id made from any string (two FNV-1a hashes).
fn id_from(s: &str) -> EventId {
    let fnv = |seed: u64| {
        let mut h = seed;
        for b in s.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    EventId::from_u128(
        ((fnv(0xcbf2_9ce4_8422_2325) as u128) << 64) | fnv(0x6c62_272e_07bb_0142) as u128,
    )
}

fn fresh_id() -> EventId {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let hi = std::process::id() as u128
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
    EventId::from_u128((hi << 64) | NEXT.fetch_add(1, Ordering::Relaxed) as u128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_formatting_matches_display() {
        for v in [
            0u128,
            1,
            0xdead_beef,
            u128::MAX,
            0x0123_4567_89ab_cdef_0011_2233_4455_6677,
        ] {
            let mut s = String::new();
            push_hex(&mut s, EventId::from_u128(v));
            assert_eq!(s, EventId::from_u128(v).to_string());
        }
        for n in [
            0u64,
            7,
            10,
            99,
            100,
            101,
            1_764_000_000_123_456_789,
            u64::MAX,
        ] {
            let mut s = String::new();
            push_decimal(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }

    /// Parses one `HPUB` as the server would: the sizes on its line must
    /// frame the header block and the payload exactly.
    fn parse_hpub(text: &[u8]) -> (String, Option<String>, HeaderMap, Vec<u8>, usize) {
        let eol = text.windows(2).position(|w| w == b"\r\n").unwrap();
        let line = std::str::from_utf8(&text[..eol]).unwrap();
        let mut parts: Vec<&str> = line.split(' ').collect();
        assert!(parts.len() == 4 || parts.len() == 5, "{line}");
        assert_eq!(parts[0], "HPUB");
        let reply = (parts.len() == 5).then(|| parts.remove(2).to_string());
        let (hlen, total): (usize, usize) = (parts[2].parse().unwrap(), parts[3].parse().unwrap());
        let body = &text[eol + 2..];
        assert_eq!(
            &body[total..total + 2],
            b"\r\n",
            "payload framed by the sizes"
        );
        let head = std::str::from_utf8(&body[..hlen]).unwrap();
        assert!(
            head.starts_with("NATS/1.0\r\n") && head.ends_with("\r\n\r\n"),
            "{head:?}"
        );
        let mut h = HeaderMap::new();
        for l in head["NATS/1.0\r\n".len()..head.len() - 4].split("\r\n") {
            let (k, v) = l.split_once(": ").unwrap();
            // As the client parses them (`Nats-Msg-Id` is a standard name).
            h.append(k.parse::<async_nats::header::HeaderName>().unwrap(), v);
        }
        let used = eol + 2 + total + 2;
        (
            parts[1].to_string(),
            reply,
            h,
            body[hlen..total].to_vec(),
            used,
        )
    }

    fn envelope(headers: Headers) -> Envelope<Vec<String>> {
        Envelope::from_parts(
            1,
            EventId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            busline::Topic::new("a.b.c").unwrap(),
            std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 42),
            Some("src;=%".into()),
            EventId::from_u128(7),
            Some(EventId::from_u128(8)),
            Some(busline::Topic::new("_INBOX.x.1").unwrap()),
            headers,
            vec!["é\r\n".to_string(), String::new()],
        )
    }

    #[test]
    fn hpub_text_carries_what_the_header_map_does() {
        for codec in [Codec::Json, Codec::Postcard] {
            for msg_id in [false, true] {
                let enc = Encoder::new::<Vec<String>>(codec, msg_id);
                let env = envelope(vec![
                    ("unit".into(), "ms".into()),
                    ("k2".into(), "v 2".into()),
                ]);
                let wire = enc.encode(&env).unwrap();
                let (mut out, mut scratch, mut meta) =
                    (b"junk".to_vec(), Vec::new(), String::new());
                enc.encode_hpub(&env, None, 0, &mut out, &mut scratch, &mut meta)
                    .unwrap();
                // Appended after what was there, and then a second one.
                assert_eq!(&out[..4], b"junk");
                let first = out.len();
                enc.encode_hpub(
                    &env,
                    Some(("_INBOX.ab", 42)),
                    0,
                    &mut out,
                    &mut scratch,
                    &mut meta,
                )
                .unwrap();
                let (subject, reply, h, payload, used) = parse_hpub(&out[4..]);
                let second = parse_hpub(&out[first..]);
                assert_eq!(reply, None);
                assert_eq!(second.1.as_deref(), Some("_INBOX.ab.42"));
                assert_eq!((&second.0, &second.3), (&subject, &payload));
                assert_eq!(4 + used, first);
                assert_eq!(first + second.4, out.len());
                assert_eq!(subject, "a.b.c");
                assert_eq!(payload, &wire.payload[..]);
                let mut got: Vec<_> = h
                    .iter()
                    .map(|(k, v)| (k.to_string(), format!("{v:?}")))
                    .collect();
                let mut want: Vec<_> = wire
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), format!("{v:?}")))
                    .collect();
                got.sort();
                want.sort();
                assert_eq!(got, want);
                let back: Envelope<Vec<String>> =
                    decode("a.b.c", Some(&h), &payload, codec).unwrap();
                assert_eq!(back.id, env.id);
                assert_eq!(back.timestamp, env.timestamp);
                assert_eq!(back.source, env.source);
                assert_eq!(back.correlation_id, env.correlation_id);
                assert_eq!(back.causation_id, env.causation_id);
                assert_eq!(back.reply_to, env.reply_to);
                assert_eq!(back.header("unit"), Some("ms"));
                assert_eq!(back.header("k2"), Some("v 2"));
                assert_eq!(back.payload, env.payload);
            }
        }
    }

    #[test]
    fn hpub_refusals_leave_the_buffer_as_it_was() {
        let enc = Encoder::new::<Vec<String>>(Codec::Json, true);
        let (mut out, mut scratch, mut meta) = (b"keep".to_vec(), Vec::new(), String::new());
        let env = envelope(vec![]);
        enc.encode_hpub(&env, None, 0, &mut out, &mut scratch, &mut meta)
            .unwrap();
        // The limit counts header block and payload (the last number on
        // the line), as the server does.
        let line = out[4..].split(|&b| b == b'\r').next().unwrap();
        assert_eq!(parse_hpub(&out[4..]).4 + 4, out.len());
        let size: usize = std::str::from_utf8(line)
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        out.truncate(4);
        let e = enc
            .encode_hpub(&env, None, size - 1, &mut out, &mut scratch, &mut meta)
            .unwrap_err();
        assert!(
            matches!(e, NatsError::PayloadTooLarge { max, .. } if max == size - 1),
            "{e}"
        );
        assert_eq!(out, b"keep");
        enc.encode_hpub(&env, None, size, &mut out, &mut scratch, &mut meta)
            .unwrap();
        out.truncate(4);
        let bad = envelope(vec![("k".into(), "line\r\nbreak".into())]);
        let e = enc
            .encode_hpub(&bad, None, 0, &mut out, &mut scratch, &mut meta)
            .unwrap_err();
        assert!(e.to_string().contains("header `k` cannot travel"), "{e}");
        assert_eq!(out, b"keep");
    }

    #[test]
    fn escaping_round_trips() {
        let mut s = String::new();
        escape_into(&mut s, "a;b=c%d\r\ne");
        assert_eq!(s, "a%3Bb%3Dc%25d%0D%0Ae");
        assert_eq!(unescape(&s).unwrap(), "a;b=c%d\r\ne");
        assert_eq!(unescape("%zz"), None);
    }

    #[test]
    fn bad_metadata_is_a_clear_error() {
        let mut h = HeaderMap::new();
        h.insert(header::BUSLINE, "v=2;ts=1;ct=json");
        let e = decode::<u32>("a", Some(&h), b"1", Codec::Json).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot decode message on `a`: unsupported envelope version `2` (this build reads `1`)"
        );
        let mut h = HeaderMap::new();
        h.insert(header::BUSLINE, "v=1;ts=x");
        let e = decode::<u32>("a", Some(&h), b"1", Codec::Json).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot decode message on `a`: ts `x` is not a time (nanoseconds since 1970 as a 64-bit number)"
        );
        // A plain message without metadata still decodes.
        let env = decode::<u32>("a.b", None, b"7", Codec::Json).unwrap();
        assert_eq!(env.payload, 7);
        assert_eq!(env.correlation_id, env.id);
    }
}
