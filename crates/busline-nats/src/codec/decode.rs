//! Decoding: a NATS message back into an envelope, by the sender's codec.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use busline::{Envelope, EventId, Headers, Topic};
use serde::de::DeserializeOwned;

use super::escape::unescape;
use super::{header, Codec, FORMAT_VERSION};
use crate::error::NatsError;

/// The envelope fields a `Busline` header carries.
struct Meta {
    id: Option<EventId>,
    codec: Codec,
    timestamp: Option<SystemTime>,
    source: Option<Arc<str>>,
    corr: Option<EventId>,
    cause: Option<EventId>,
    reply: Option<Topic>,
    /// The free-form headers' names in the sender's order (`hk`).
    order: Option<Vec<String>>,
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
    // Any string is a valid `Nats-Msg-Id` (a plain client's own ids): one
    // that is not an event id stands for the id made from it.
    let msg_id = h
        .get(NATS_MESSAGE_ID)
        .map(|v| EventId::parse(v.as_str()).unwrap_or_else(|| id_from(v.as_str())));
    let mut meta = Meta {
        id: msg_id,
        codec: default_codec,
        timestamp: None,
        source: None,
        corr: None,
        cause: None,
        reply: None,
        order: None,
    };
    if let Some(value) = h.get(header::BUSLINE) {
        parse_meta(value.as_str(), &mut meta).map_err(bad)?;
    }
    let id = meta.id.unwrap_or_else(fresh_id);
    let user = user_headers(h, meta.order.as_deref());
    let payload = meta.codec.decode::<T>(payload).map_err(bad)?;
    Ok(Envelope::from_parts(
        0,
        id,
        topic,
        meta.timestamp.unwrap_or_else(SystemTime::now),
        meta.source,
        meta.corr.unwrap_or(id),
        meta.cause,
        meta.reply,
        user,
        payload,
    ))
}

/// Reads the `Busline` header's `key=value` pairs into `m`; the error says
/// which field is wrong.
fn parse_meta(value: &str, m: &mut Meta) -> Result<(), String> {
    let id_of = |name: &str, s: &str| {
        EventId::parse(s).ok_or_else(|| format!("{name} `{s}` is not an event id"))
    };
    // The version first: a message of another version is refused for
    // that, not for a field it writes differently.
    let version = value.split(';').find_map(|pair| pair.strip_prefix("v="));
    match version {
        Some(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(format!(
                "unsupported envelope version `{v}` (this build reads `{FORMAT_VERSION}`)"
            ))
        }
        None => return Err("Busline header without a version".into()),
    }
    for pair in value.split(';') {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("Busline header field `{pair}` is not key=value"))?;
        let badly_escaped = || format!("Busline header field `{pair}` is badly escaped");
        let v = unescape(v).ok_or_else(badly_escaped)?;
        match k {
            "v" => {}
            "id" => m.id = Some(id_of("id", &v)?),
            "ts" => {
                let n: u64 = v.parse().map_err(|_| {
                    format!("ts `{v}` is not a time (nanoseconds since 1970 as a 64-bit number)")
                })?;
                m.timestamp = Some(
                    UNIX_EPOCH
                        .checked_add(Duration::from_nanos(n))
                        .ok_or_else(|| format!("ts `{v}` is past this system's clock"))?,
                );
            }
            "hk" => {
                m.order = Some(
                    pair["hk=".len()..]
                        .split(',')
                        .map(|k| unescape(k).ok_or_else(badly_escaped))
                        .collect::<Result<_, _>>()?,
                )
            }
            "ct" => m.codec = Codec::from_name(&v).ok_or_else(|| format!("unknown codec `{v}`"))?,
            "src" => m.source = Some(Arc::<str>::from(v)),
            "corr" => m.corr = Some(id_of("corr", &v)?),
            "cause" => m.cause = Some(id_of("cause", &v)?),
            "reply" => m.reply = Some(Topic::new(&v).map_err(|e| e.to_string())?),
            _ => {} // added by a newer version within format 1: ignored
        }
    }
    Ok(())
}

/// The free-form headers (`Busline-H-<name>`): each name's values, in
/// order; taken in the sender's order of names (`order`), then whatever
/// that list did not name.
fn user_headers(h: &HeaderMap, order: Option<&[String]>) -> Headers {
    let mut user: Headers = Vec::new();
    let mut by_name: Vec<(&str, std::slice::Iter<'_, async_nats::HeaderValue>)> = h
        .iter()
        .filter_map(|(k, vs)| {
            let name = AsRef::<str>::as_ref(k).strip_prefix(header::USER_PREFIX)?;
            Some((name, vs.iter()))
        })
        .collect();
    for name in order.into_iter().flatten() {
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
    user
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
