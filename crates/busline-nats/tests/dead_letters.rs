//! Dead letters: a message that cannot be delivered is stored once under
//! the dead-letter prefix, with its reason, and never stops the import;
//! one whose dead letter can never be stored is counted as lost.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use busline::Bus;
use busline_nats::{JetStreamConfig, NatsConfig, NatsTransport};
use common::*;

/// A dead letter that cannot be stored on the message's last delivery is
/// retried in place (the server would not deliver the message again), and
/// stored once the dead-letter stream is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_failing_on_the_last_delivery_is_retried_until_stored() {
    let srv = server();
    let cfg = JetStreamConfig {
        max_deliver: 2,
        ..js("imp")
    };
    let b: Bus<Ev> = Bus::new();
    let _sub = b.subscribe("d.>").unwrap();
    let tb = NatsTransport::connect(&b, NatsConfig::new(srv.url()).import("d.>").jetstream(cfg))
        .await
        .unwrap();
    let raw = jetstream::new(async_nats::connect(srv.url()).await.unwrap());
    let dead_cfg = raw
        .get_stream("BUSLINE_DEAD")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    // The dead-letter stream is briefly unavailable.
    raw.delete_stream("BUSLINE_DEAD").await.unwrap();
    let mut h = async_nats::HeaderMap::new();
    h.insert("Busline", "v=1;ts=1;ct=json");
    raw.publish_with_headers("d.bad", h, "{not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    raw.create_stream(dead_cfg).await.unwrap();
    // Plenty of time for any retry (ack_wait 2 s, nak delay 1 s).
    let mut dead_msgs = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        dead_msgs = stream_messages(&raw, "BUSLINE_DEAD").await;
        if dead_msgs > 0 {
            break;
        }
    }
    let ci = raw
        .get_stream("BUSLINE")
        .await
        .unwrap()
        .consumer_info("imp_d_GT")
        .await
        .unwrap();
    assert!(
        dead_msgs == 1 && tb.stats().dead_lettered == 1,
        "message neither delivered nor dead-lettered: dead stream has {dead_msgs}, stats {:?}, consumer delivered {:?} ack_floor {:?} ack_pending {} redelivered {} pending {}",
        tb.stats(),
        ci.delivered,
        ci.ack_floor,
        ci.num_ack_pending,
        ci.num_redelivered,
        ci.num_pending
    );
}

/// A dead letter that can never be stored (over max_payload with its
/// headers) on the message's last delivery is given up after its attempts,
/// counted as lost; the import goes on with the next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_that_can_never_be_stored_does_not_stop_the_import() {
    let srv = server_with("max_payload: 2048");
    let b: Bus<Ev> = Bus::new();
    let mut sub = b.subscribe("d.>").unwrap();
    let tb = import_with(
        &b,
        &srv.url(),
        "d.>",
        JetStreamConfig {
            max_deliver: 1,
            ..js("imp")
        },
    )
    .await;
    let raw = jetstream::new(async_nats::connect(srv.url()).await.unwrap());
    // An undecodable message just under the limit: its dead letter is over it.
    let mut h = async_nats::HeaderMap::new();
    h.insert("Busline", "v=1;ts=1;ct=json");
    let body = format!("{{not json {}", "x".repeat(1950));
    raw.publish_with_headers("d.bad", h, body.into())
        .await
        .unwrap()
        .await
        .unwrap();
    // Its first delivery fails to dead-letter (NAK, 1 s); its second, the
    // server's last, is retried in place. Then a good event, from another bus.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (a, ta) = exporter(&srv.url(), "d.>").await;
    a.publish_to("d.good", ev(9, 1)).await.unwrap();
    ta.flush().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), sub.recv()).await;
    let s = tb.stats();
    let shut = tokio::time::timeout(Duration::from_secs(10), tb.shutdown()).await;
    assert_eq!(s.dead_letters_lost, 1, "{s:?}");
    assert!(
        got.is_ok(),
        "the good event never reached the bus in 20 s: the import is stuck retrying the dead letter; stats {s:?}; shutdown returned: {}",
        shut.is_ok()
    );
}

/// The same undecodable message dead-lettered a second time by the same
/// consumer (as after a lost ack, or a crash before the ack) leaves one dead
/// letter, not two: the consumer is deleted and made again, which delivers
/// the message again exactly as a lost ack would.
#[tokio::test]
async fn a_message_dead_lettered_twice_leaves_one_dead_letter() {
    let srv = server();
    let raw = jetstream::new(async_nats::connect(srv.url()).await.unwrap());
    let (_b, mut sub, tb) = importer(&srv.url(), "d.>", "imp").await;
    publish_undecodable(&raw, "d.bad").await;
    let (a, ta) = exporter(&srv.url(), "d.>").await;
    a.publish_to("d.good", ev(0, 1)).await.unwrap();
    ta.flush().await.unwrap();
    // In stream order: once the good event is here, the bad one was handled.
    assert_eq!(recv_n(&mut sub, 1).await[0].payload, ev(0, 1));
    assert_eq!(tb.stats().dead_lettered, 1);
    tb.shutdown().await.unwrap();

    raw.get_stream("BUSLINE")
        .await
        .unwrap()
        .delete_consumer("imp_d_GT")
        .await
        .unwrap();
    let (_b2, mut sub2, tb2) = importer(&srv.url(), "d.>", "imp").await;
    assert_eq!(recv_n(&mut sub2, 1).await[0].payload, ev(0, 1));
    let dead = stream_messages(&raw, "BUSLINE_DEAD").await;
    assert_eq!(dead, 1, "the second dead letter of one message was stored");
    assert_eq!(tb2.stats().dead_lettered, 0, "{:?}", tb2.stats());
}

/// max_deliver = 1: the message is delivered to the bus once before it can
/// be dead-lettered.
#[tokio::test]
async fn max_deliver_one_still_delivers_once() {
    let srv = server();
    let b: Bus<Ev> = Bus::new();
    let mut sub = b.subscribe("o.>").unwrap();
    let tb = import_with(
        &b,
        &srv.url(),
        "o.>",
        JetStreamConfig {
            max_deliver: 1,
            ..js("imp")
        },
    )
    .await;
    let (a, ta) = exporter(&srv.url(), "o.>").await;
    a.publish_to("o.x", ev(0, 1)).await.unwrap();
    ta.flush().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await;
    assert!(got.is_ok(), "never delivered; stats {:?}", tb.stats());
}
