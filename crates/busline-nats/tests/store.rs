//! The JetStream store against a real nats-server: replay then live, restarts
//! of the bus and of the server, named consumers, time, removed events.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use busline::EventStore;
use busline::{Bus, StartAt};
use busline_nats::{JetStreamStore, JetStreamStoreConfig};
use common::{ev, recv_n, Ev};

fn cfg(url: &str) -> JetStreamStoreConfig {
    JetStreamStoreConfig::new(url)
        .stream("TEST_STORE")
        .timeout(Duration::from_secs(5))
}

async fn open(url: &str) -> Arc<JetStreamStore<Ev>> {
    Arc::new(JetStreamStore::open(cfg(url)).await.expect("store opens"))
}

fn bus_on(store: &Arc<JetStreamStore<Ev>>) -> Bus<Ev> {
    let bus = Bus::new();
    bus.persist("orders.>", store.clone()).unwrap();
    bus
}

/// The trait's sync methods block on the store's helper runtime, never on the
/// caller's: this runs on a current_thread runtime and must not deadlock.
#[tokio::test(flavor = "current_thread")]
async fn replay_then_live_on_a_current_thread_runtime_without_gap_or_duplicate() {
    let server = common::server();
    let store = open(&server.url()).await;
    let bus = bus_on(&store);
    for n in 0..300 {
        bus.publish_to("orders.new", ev(0, n)).await.unwrap();
    }
    assert_eq!(store.end(), 300);
    // A publisher keeps going while the late subscriber replays.
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for n in 300..600 {
                bus.publish_to("orders.new", ev(0, n)).await.unwrap();
                if n % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut late = bus
        .subscriber("orders.>")
        .lossless(1_000)
        .from(StartAt::Beginning)
        .subscribe()
        .unwrap();
    let got = recv_n(&mut late, 600).await;
    publisher.await.unwrap();
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e.payload.n, i as u64, "event {i}");
        assert_eq!(e.offset(), Some(i as u64), "offset of event {i}");
    }
    assert!(late.try_recv().unwrap().is_none(), "a duplicate arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_bus_and_store_replay_everything_with_its_metadata() {
    let server = common::server();
    let store = open(&server.url()).await;
    let bus = bus_on(&store);
    let r = bus
        .send(
            busline::Message::new(ev(1, 0))
                .topic("orders.meta")
                .source("shop")
                .header("x", "1"),
        )
        .await
        .unwrap();
    for n in 1..20 {
        bus.publish_to("orders.new", ev(1, n)).await.unwrap();
    }
    drop((bus, store));
    let store = open(&server.url()).await;
    assert_eq!(store.end(), 20);
    let bus = bus_on(&store);
    let mut sub = bus
        .subscriber("orders.>")
        .from(StartAt::Offset(0))
        .subscribe()
        .unwrap();
    let got = recv_n(&mut sub, 20).await;
    assert_eq!(got[0].id, r.id);
    assert_eq!(got[0].topic.as_str(), "orders.meta");
    assert_eq!(got[0].source.as_deref(), Some("shop"));
    assert_eq!(got[0].header("x"), Some("1"));
    let ns: Vec<u64> = got.iter().map(|e| e.payload.n).collect();
    assert_eq!(ns, (0..20).collect::<Vec<_>>());
    // Appends go on after the stored end.
    bus.publish_to("orders.new", ev(1, 20)).await.unwrap();
    assert_eq!(recv_n(&mut sub, 1).await[0].offset(), Some(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_a_server_kill() {
    let mut server = common::server();
    let store = open(&server.url()).await;
    let bus = bus_on(&store);
    for n in 0..100 {
        bus.publish_to("orders.new", ev(2, n)).await.unwrap();
    }
    server.kill();
    server.restart().expect("server restarts");
    // The old store reconnects and reads; a new one opens on the same data.
    for store in [store, open(&server.url()).await] {
        let got: Vec<u64> = store
            .read(0, 100)
            .unwrap()
            .map(|e| e.unwrap().payload.n)
            .collect();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }
    // And appends go on after a restart with the next offset.
    let store = open(&server.url()).await;
    let bus = bus_on(&store);
    let mut sub = bus.subscribe("orders.>").unwrap();
    bus.publish_to("orders.new", ev(2, 100)).await.unwrap();
    assert_eq!(recv_n(&mut sub, 1).await[0].offset(), Some(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_consumers_resume_after_their_commit_across_stores() {
    let server = common::server();
    let store = open(&server.url()).await;
    let bus = bus_on(&store);
    for n in 0..10 {
        bus.publish_to("orders.new", ev(3, n)).await.unwrap();
    }
    assert_eq!(store.committed_offset("billing/eu").unwrap(), None);
    let mut c = bus
        .subscriber("orders.>")
        .consumer("billing/eu")
        .from(StartAt::Committed)
        .subscribe()
        .unwrap();
    for e in recv_n(&mut c, 4).await {
        c.commit(&e).await.unwrap();
    }
    drop((c, bus, store));
    let store = open(&server.url()).await;
    let bus = bus_on(&store);
    let committed = store.committed_offset("billing/eu").unwrap();
    assert_eq!(committed, Some(4), "commit stores the offset to go on from");
    let mut c = bus
        .subscriber("orders.>")
        .consumer("billing/eu")
        .from(StartAt::Committed)
        .subscribe()
        .unwrap();
    assert_eq!(recv_n(&mut c, 1).await[0].payload.n, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_at_time_finds_the_first_event_stamped_then() {
    let server = common::server();
    let store = open(&server.url()).await;
    let bus = bus_on(&store);
    for n in 0..5 {
        bus.publish_to("orders.new", ev(4, n)).await.unwrap();
    }
    // Envelope times come from the bus clock; wait until it has moved on.
    let mark = SystemTime::now();
    while SystemTime::now() <= mark {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for n in 5..8 {
        bus.publish_to("orders.new", ev(4, n)).await.unwrap();
    }
    let t = store
        .read(5, 6)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .timestamp();
    assert_eq!(store.offset_for_time(t).unwrap(), 5);
    assert_eq!(store.offset_for_time(SystemTime::UNIX_EPOCH).unwrap(), 0);
    assert_eq!(
        store
            .offset_for_time(SystemTime::now() + Duration::from_secs(3600))
            .unwrap(),
        8
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_events_are_an_error_naming_the_offset_not_other_events() {
    let server = common::server();
    let store = open(&server.url()).await;
    let bus = bus_on(&store);
    for n in 0..10 {
        bus.publish_to("orders.new", ev(5, n)).await.unwrap();
    }
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("TEST_STORE").await.unwrap();
    stream.delete_message(6).await.unwrap(); // offset 5
    stream.purge().sequence(4).await.unwrap(); // offsets 0..3

    let err = store.read(0, 10).err().expect("offset 0 is gone");
    assert!(
        err.to_string().contains("offset 0") && err.to_string().contains("TEST_STORE"),
        "{err}"
    );
    let items: Vec<_> = store.read(3, 10).unwrap().collect();
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap().payload.n, 3);
    assert_eq!(items[1].as_ref().unwrap().payload.n, 4);
    let err = items[2].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("offset 5") && err.contains("no longer"),
        "{err}"
    );
    // A time search that has to look at offset 5 (just after offset 4's time;
    // offset 6 was published after offset 4 was acknowledged) says so too.
    let t4 = items[1].as_ref().unwrap().timestamp();
    let err = store
        .offset_for_time(t4 + Duration::from_nanos(1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("offset 5") && err.contains("no longer") && err.contains("TEST_STORE"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_made_for_another_prefix_is_refused_at_open() {
    let server = common::server();
    drop(open(&server.url()).await);
    let err = JetStreamStore::<Ev>::open(cfg(&server.url()).subject_prefix("elsewhere"))
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("TEST_STORE") && err.to_string().contains("elsewhere.>"),
        "{err}"
    );
}

/// Appends in flight while the server is killed are retried with their
/// `Nats-Msg-Id`: every publish succeeds and the log holds each event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_across_a_server_kill_are_stored_once_each() {
    let mut server = common::server();
    let store = Arc::new(
        JetStreamStore::open(cfg(&server.url()).timeout(Duration::from_secs(30)))
            .await
            .expect("store opens"),
    );
    let bus = bus_on(&store);
    let mut sub = bus
        .subscriber("orders.>")
        .lossless(1_000)
        .subscribe()
        .unwrap();
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for n in 0..300 {
                bus.publish_to("orders.new", ev(6, n))
                    .await
                    .unwrap_or_else(|e| panic!("publish {n}: {e}"));
            }
        })
    };
    let before = recv_n(&mut sub, 100).await;
    tokio::task::block_in_place(|| server.restart()).expect("server restarts");
    publisher.await.unwrap();
    let after = recv_n(&mut sub, 200).await;
    let live: Vec<(u64, Option<u64>)> = before
        .iter()
        .chain(&after)
        .map(|e| (e.payload.n, e.offset()))
        .collect();
    let want: Vec<(u64, Option<u64>)> = (0..300).map(|n| (n, Some(n))).collect();
    assert_eq!(live, want);
    assert_eq!(store.end(), 300);
    let stored: Vec<u64> = store
        .read(0, 300)
        .unwrap()
        .map(|e| e.unwrap().payload.n)
        .collect();
    assert_eq!(stored, (0..300).collect::<Vec<_>>());
}

/// An event over the server's `max_payload` is refused at once with both
/// sizes (not retried until the store's timeout), handed back to the
/// publisher, and stores nothing; the events around it are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_max_payload_is_refused_at_once_and_handed_back() {
    let server = common::server_with("max_payload: 2048");
    // A long timeout: a refusal that went through the retries would take it.
    let store = Arc::new(
        JetStreamStore::<Ev>::open(cfg(&server.url()).timeout(Duration::from_secs(120)))
            .await
            .expect("store opens"),
    );
    let bus = bus_on(&store);
    bus.publish_to("orders.new", ev(1, 0)).await.unwrap();
    let big = Ev {
        publisher: 1,
        n: 1,
        body: "x".repeat(4000),
    };
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        bus.publish_to("orders.new", big.clone()),
    )
    .await
    .expect("refused without the retries")
    .expect_err("over max_payload");
    let text = err.to_string();
    assert!(
        text.contains("max_payload of 2048 bytes") && text.contains("orders.new"),
        "{text}"
    );
    assert_eq!(err.into_event(), big, "the event is handed back");
    bus.publish_to("orders.new", ev(1, 2)).await.unwrap();

    assert_eq!(store.end(), 2);
    let got: Vec<u64> = store
        .read(0, 2)
        .unwrap()
        .map(|e| e.unwrap().payload.n)
        .collect();
    assert_eq!(got, [0, 2]);
}
