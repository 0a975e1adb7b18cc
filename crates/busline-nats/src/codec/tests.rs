//! Round trips of the encoders and the decoder, the `HPUB` framing, and
//! the errors for what cannot travel.

use super::encoder::{push_decimal, push_hex};
use super::escape::{escape_into, unescape};
use super::*;
use busline::Headers;

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
            let (mut out, mut scratch, mut meta) = (b"junk".to_vec(), Vec::new(), String::new());
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
            let back: Envelope<Vec<String>> = decode("a.b.c", Some(&h), &payload, codec).unwrap();
            assert_eq!(back.id, env.id);
            assert_eq!(back.timestamp(), env.timestamp());
            assert_eq!(back.source, env.source);
            assert_eq!(back.correlation_id, env.correlation_id);
            assert_eq!(back.causation_id(), env.causation_id());
            assert_eq!(back.reply_to(), env.reply_to());
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
