//! Encoding: an envelope into a header map and payload ([`Encoder::encode`])
//! or straight into protocol text ([`Encoder::encode_hpub`]), without `fmt`
//! and, once the caller's buffers have grown, without allocating.

use std::time::UNIX_EPOCH;

use async_nats::header::{HeaderMap, NATS_MESSAGE_ID};
use busline::{Envelope, EventId};
use serde::Serialize;

use super::escape::{escape_into, header_problem, MSG_ID_TEXT};
use super::{header, Codec, Wire, FORMAT_VERSION};
use crate::error::NatsError;

/// What [`encode`](super::encode) computes once per payload type and codec: the exporter
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
        for (k, v) in env.headers() {
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
            .headers()
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
        for (k, v) in env.headers() {
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
            + env.reply_to().map_or(0, |r| 7 + r.as_str().len())
    }

    /// Appends the `Busline` header's value to `m`, after checking that the
    /// envelope's time and free-form headers can travel.
    fn meta_into<T>(&self, env: &Envelope<T>, m: &mut String) -> Result<(), NatsError> {
        // Refused, not clamped: a time `ts` cannot hold would arrive as another.
        let nanos = env
            .timestamp()
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_nanos()).ok())
            .ok_or_else(|| {
                encode_error(
                    env,
                    format!(
                        "timestamp {:?} is outside 1970 to 2554 (what `ts` holds)",
                        env.timestamp()
                    ),
                )
            })?;
        for (k, v) in env.headers() {
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
        if let Some(c) = env.causation_id() {
            m.push_str(";cause=");
            push_hex(m, c);
        }
        if let Some(r) = env.reply_to() {
            m.push_str(";reply=");
            escape_into(m, r.as_str());
        }
        if env.headers().len() > 1 {
            // NATS headers come back in no particular order: the names'
            // order goes along, so the decoder can rebuild the list as it was.
            m.push_str(";hk=");
            for (i, (k, _)) in env.headers().iter().enumerate() {
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
pub(super) fn push_hex(out: &mut String, id: EventId) {
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
pub(super) fn push_decimal(out: &mut String, n: u64) {
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
