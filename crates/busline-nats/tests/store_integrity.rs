//! The JetStream store keeps what it acknowledged: an acknowledged event
//! reads back with its metadata, a retried append is stored once, a removed
//! event is reported as gone, long consumer names commit, and a stream that
//! captures other subjects is refused.

mod common;

use std::sync::Arc;
use std::time::Duration;

use busline::Envelope;
use busline::EventStore;
use busline_nats::{JetStreamStore, JetStreamStoreConfig};
use common::*;

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

/// An event the store acknowledged reads back with all its metadata, a `%`
/// in its reply topic included.
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
    assert_eq!(back.reply_to().map(|t| t.as_str()), Some("replies.100%"));
    assert_eq!(back.source.as_deref(), Some("shop "));
    assert_eq!(back.header("note"), Some(""));
}

/// A retried append is stored once even when the event's metadata names
/// `Nats-Msg-Id` (the server takes the id from the first place that text
/// appears in the headers, so the metadata escapes it).
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

/// A consumer name too long to be a subject token (the server refuses a
/// protocol line over 4 KiB) commits and reads back, and does not share its
/// commit with another long name.
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
