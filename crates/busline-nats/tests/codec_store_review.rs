//! Cases a review of the codec and the JetStream store found (each failed
//! before its fix): metadata comes back exactly as it went, bad metadata is
//! an error (never a panic), an acknowledged event can always be read back,
//! and a retried append is stored once.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::HeaderMap;
use busline::store::EventStore;
use busline::{Envelope, EventId, Topic};
use busline_nats::codec::{decode, encode, Codec};
use busline_nats::{JetStreamStore, JetStreamStoreConfig};
use common::{ev, Ev};

fn envelope<P>(
    n: u64,
    source: Option<&str>,
    reply: Option<&str>,
    headers: &[(&str, &str)],
    payload: P,
) -> Envelope<P> {
    let id = EventId::from_u128(0xabc0_0000_0000_0000_0000_0000_0000_0000 + n as u128);
    Envelope::from_parts(
        0,
        id,
        Topic::new("orders.new").unwrap(),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        source.map(Into::into),
        id,
        None,
        reply.map(|r| Topic::new(r).unwrap()),
        headers
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        payload,
    )
}

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

// ----- codec ----------------------------------------------------------------------

/// The reply topic was written unescaped and read back unescaped.
#[test]
fn a_reply_topic_with_percent_or_semicolon_round_trips() {
    for reply in ["replies.50%", "replies.a;b", "replies.%41", "replies.a=b,c"] {
        let back = round_trip(&envelope(0, None, Some(reply), &[], 7), true);
        assert_eq!(back.reply_to.as_ref().map(|t| t.as_str()), Some(reply));
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
    assert_eq!(round_trip(&env, true).headers, env.headers);
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

// ----- the JetStream store --------------------------------------------------------

fn cfg(url: &str) -> JetStreamStoreConfig {
    JetStreamStoreConfig::new(url)
        .stream("REVIEW_STORE")
        .timeout(Duration::from_secs(3))
}

async fn open(url: &str) -> Arc<JetStreamStore<Ev>> {
    Arc::new(JetStreamStore::open(cfg(url)).await.expect("store opens"))
}

fn read_all(store: &JetStreamStore<Ev>) -> Vec<Result<Envelope<Ev>, String>> {
    tokio::task::block_in_place(|| {
        store
            .read(0, store.end())
            .unwrap()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    })
}

/// An event the store acknowledged reads back with all its metadata (a `%`
/// in its reply topic made it unreadable for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_event_reads_back_with_its_metadata() {
    let server = common::server();
    let store = open(&server.url()).await;
    let e = envelope(
        0,
        Some("shop "),
        Some("replies.100%"),
        &[("note", "")],
        ev(0, 0),
    );
    assert_eq!(store.append(&e).await.unwrap(), 0);
    let got = read_all(&store);
    let back = got[0].as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        back.reply_to.as_ref().map(|t| t.as_str()),
        Some("replies.100%")
    );
    assert_eq!(back.source.as_deref(), Some("shop "));
    assert_eq!(back.header("note"), Some(""));
}

/// A retried append is stored once even when the event's metadata names
/// `Nats-Msg-Id` (the server saw no id when that text came first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_append_is_stored_once_whatever_its_metadata() {
    let server = common::server();
    let store = open(&server.url()).await;
    // The headers' order varies from message to message: try several.
    for n in 0..16 {
        let e = envelope(n, Some("Nats-Msg-Id"), Some("Nats-Msg-Id.x"), &[], ev(0, n));
        let a = store.append(&e).await.unwrap();
        let b = store.append(&e).await.unwrap();
        assert_eq!(a, b, "event {n} stored twice");
    }
}

/// A deleted event at the end of a read is reported as gone at once, as a
/// deleted event in the middle is, not as a timeout after waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_last_event_is_reported_as_gone() {
    let server = common::server();
    let store = open(&server.url()).await;
    for n in 0..5 {
        store
            .append(&envelope(n, None, None, &[], ev(0, n)))
            .await
            .unwrap();
    }
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.get_stream("REVIEW_STORE")
        .await
        .unwrap()
        .delete_message(5) // offset 4
        .await
        .unwrap();
    let got = read_all(&store);
    assert_eq!(got.len(), 5, "{got:?}");
    let err = got[4].as_ref().unwrap_err();
    assert!(
        err.contains("offset 4") && err.contains("no longer"),
        "{err}"
    );
}

/// A consumer name too long to be a subject token commits and reads back
/// (the server refused the protocol line and dropped the connection), and
/// does not share its commit with another long name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_with_a_long_name_commits() {
    let server = common::server();
    let store = open(&server.url()).await;
    let long = "team/".repeat(1000);
    let other = "team/".repeat(999) + "x";
    store.commit_offset(&long, 5).await.unwrap();
    store.commit_offset(&other, 9).await.unwrap();
    let got = tokio::task::block_in_place(|| {
        (
            store.committed_offset(&long),
            store.committed_offset(&other),
        )
    });
    assert_eq!((got.0.unwrap(), got.1.unwrap()), (Some(5), Some(9)));
}

/// A stream capturing other subjects as well is refused at open: what is
/// published there would be read back as events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_capturing_other_subjects_is_refused() {
    let server = common::server();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "REVIEW_STORE".into(),
        subjects: vec!["busline.store.>".into(), "orders.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let e = JetStreamStore::<Ev>::open(cfg(&server.url()))
        .await
        .expect_err("refused")
        .to_string();
    assert!(e.contains("orders.>") && e.contains("REVIEW_STORE"), "{e}");
}
