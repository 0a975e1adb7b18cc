//! Round trips: an envelope's metadata comes back exactly as it went, through
//! the codec and through a server, or is refused with an error naming it
//! (never a panic); a plain NATS message keeps its own id.

mod common;

use std::time::{Duration, UNIX_EPOCH};

use async_nats::HeaderMap;
use busline::{Envelope, EventId, Message};
use busline_nats::codec::{decode, encode, Codec};
use common::*;

fn round_trip(env: &Envelope<u32>, msg_id: bool) -> Envelope<u32> {
    let wire = encode(env, Codec::Json, msg_id).unwrap_or_else(|e| panic!("{e}"));
    decode::<u32>(
        "orders.new",
        Some(&wire.headers),
        &wire.payload,
        Codec::Json,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A reply topic holding `%` or `;` is escaped on the way out and read
/// back as it was.
#[test]
fn a_reply_topic_with_percent_or_semicolon_round_trips() {
    for reply in ["replies.50%", "replies.a;b", "replies.%41", "replies.a=b,c"] {
        let back = round_trip(&envelope(0, None, Some(reply), &[], 7), true);
        assert_eq!(back.reply_to().map(|t| t.as_str()), Some(reply));
    }
}

/// Free-form headers come back in the order they were given (NATS keeps
/// headers in a map).
#[test]
fn free_form_headers_keep_their_order() {
    let hs = [
        ("z", "1"),
        ("a", "2"),
        ("m", "3"),
        ("b", "4"),
        ("y", "5"),
        ("c,d", "6"),
        ("z", "7"),
    ];
    let env = envelope(0, None, None, &hs, 7);
    assert_eq!(round_trip(&env, true).headers(), env.headers());
}

/// An empty header value travels; one NATS would change (a space at either
/// end, which it trims) is refused naming why, as is `Nats-Msg-Id` in a
/// JetStream message (the server finds the id by the first place that text
/// appears in the headers).
#[test]
fn header_values_travel_exactly_or_are_refused() {
    let back = round_trip(&envelope(0, None, None, &[("note", "")], 7), true);
    assert_eq!(back.header("note"), Some(""));
    for (k, v, why) in [
        ("note", " padded", "space or tab"),
        ("note", "padded\t", "space or tab"),
        ("Nats-Msg-Id", "x", "Nats-Msg-Id"),
        ("see", "Nats-Msg-Id", "Nats-Msg-Id"),
    ] {
        let e = encode(&envelope(0, None, None, &[(k, v)], 7), Codec::Json, true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("header `{k}`")) && e.contains(why),
            "{e}"
        );
    }
    // Without a message id (core NATS) the text is harmless.
    let back = round_trip(
        &envelope(0, None, None, &[("see", "Nats-Msg-Id")], 7),
        false,
    );
    assert_eq!(back.header("see"), Some("Nats-Msg-Id"));
}

/// Metadata fields with spaces at their ends, or naming `Nats-Msg-Id`, come
/// back as they were.
#[test]
fn metadata_fields_round_trip_whatever_their_text() {
    for src in [
        "shop ",
        " shop",
        " ",
        "Nats-Msg-Id",
        "a,b;c=d%e",
        "ünï cödé",
    ] {
        let back = round_trip(&envelope(0, Some(src), None, &[], 7), true);
        assert_eq!(back.source.as_deref(), Some(src));
    }
}

/// A garbage `ts` is a decode error, not a panic.
#[test]
fn a_huge_ts_is_an_error_not_a_panic() {
    for ts in [
        "10000000000000000000000000000",
        "18446744073709551616",
        "-1",
    ] {
        let mut h = HeaderMap::new();
        h.insert("Busline", format!("v=1;ts={ts};ct=json").as_str());
        let e = decode::<u32>("a", Some(&h), b"1", Codec::Json).unwrap_err();
        assert!(e.to_string().contains(&format!("ts `{ts}`")), "{e}");
    }
}

/// A message of another envelope version is refused for its version, not
/// for the first field the version-1 rules fail on.
#[test]
fn an_unknown_version_is_named_whatever_its_fields() {
    for meta in ["v=2;ts=1;ct=cbor", "ts=soon;ct=json;v=2"] {
        let mut h = HeaderMap::new();
        h.insert("Busline", meta);
        let e = decode::<u32>("a", Some(&h), b"1", Codec::Json)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unsupported envelope version `2`"),
            "{meta}: {e}"
        );
    }
}

/// Timestamps before 1970 or past 2554 arrive with their own time, or are
/// refused and counted (`rejected`): never silently changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn very_old_and_very_new_timestamps_arrive_intact_or_are_refused() {
    let srv = server();
    let (_b, mut sub, _tb) = importer(&srv.url(), "t.>", "imp").await;
    let (a, ta) = exporter(&srv.url(), "t.>").await;
    let old = UNIX_EPOCH - Duration::from_secs(86_400 * 365 * 20);
    let new = UNIX_EPOCH + Duration::from_secs(86_400 * 365 * 700);
    a.send(Message::new(ev(0, 1)).topic("t.x").timestamp(old))
        .await
        .unwrap();
    a.send(Message::new(ev(0, 2)).topic("t.x").timestamp(new))
        .await
        .unwrap();
    a.publish_to("t.x", ev(0, 3)).await.unwrap(); // marker
    ta.flush().await.unwrap();
    let mut got = Vec::new();
    loop {
        let e = recv_n(&mut sub, 1).await.pop().unwrap();
        if e.payload.n == 3 {
            break;
        }
        got.push((e.payload.n, e.timestamp()));
    }
    for (n, ts) in &got {
        let sent = if *n == 1 { old } else { new };
        assert_eq!(*ts, sent, "event {n} arrived with another time");
    }
    assert_eq!(
        got.len() as u64 + ta.stats().rejected,
        2,
        "{:?}",
        ta.stats()
    );
}

/// Metadata round trip through a real server: unicode source, an empty
/// header value, special characters, repeated names, correlation/causation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_with_odd_values_round_trips() {
    let srv = server();
    let (_b, mut sub, _tb) = importer(&srv.url(), "m.>", "imp").await;
    let (a, ta) = exporter(&srv.url(), "m.>").await;
    let corr = EventId::from_u128(0x1234);
    let cause = EventId::from_u128(u128::MAX);
    let msg = Message::new(ev(0, 1))
        .topic("m.x")
        .source("模块→ß; =,%")
        .correlation_id(corr)
        .causation_id(cause)
        .header("Empty", "")
        .header("x-Mixed", "a;b=c,d%e:f\"g'h\\i ü")
        .header("rep", "1")
        .header("rep", "2");
    let sent = a.send(msg).await.unwrap();
    ta.flush().await.unwrap();
    let e = recv_n(&mut sub, 1).await.pop().unwrap();
    assert_eq!(e.id, sent.id);
    assert_eq!(e.source.as_deref(), Some("模块→ß; =,%"));
    assert_eq!(e.correlation_id, corr);
    assert_eq!(e.causation_id(), Some(cause));
    let user: Vec<(String, String)> = e
        .headers()
        .iter()
        .filter(|(k, _)| &**k != busline_nats::IMPORTED)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let want: Vec<(String, String)> = [
        ("Empty", ""),
        ("x-Mixed", "a;b=c,d%e:f\"g'h\\i ü"),
        ("rep", "1"),
        ("rep", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(user, want);
}

/// A plain JetStream client's message with its own `Nats-Msg-Id` (for
/// JetStream's de-duplication; `order-17`, any string, not 32 hex digits)
/// is imported, with an id made from that string.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_message_with_its_own_msg_id_is_imported() {
    let srv = server();
    let (b, mut sub, tb) = importer(&srv.url(), "q.>", "imp").await;
    let _ = &b;
    let js = jsctx(&srv.url()).await;
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", "order-17");
    js.publish_with_headers("q.x", h, serde_json::to_vec(&ev(0, 1)).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await;
    assert!(got.is_ok(), "not imported; stats {:?}", tb.stats());
}
