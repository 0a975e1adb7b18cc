//! Subscription options and counters: a replay reads the store its topics
//! are persisted to, a queue group's options are its first member's,
//! counters add up, a weak bus does not outlive closing.

use std::sync::Arc;
use std::time::Duration;

use busline::{Bus, Envelope, PublishError, RequestError, StartAt, StoreError, SubscribeError};
use busline::{EventStore, MemoryStore, StoredEvents};
use futures::future::BoxFuture;

/// With two stores, a subscriber starting in the past on topics persisted
/// to the second one replays that store and gets the live events after it
/// (it replayed the first store and skipped live events whose offsets, of
/// the other store, were below the first store's end).
#[tokio::test]
async fn replay_uses_the_store_its_topics_are_persisted_to() {
    let bus = Bus::<u32>::new();
    let orders: Arc<MemoryStore<u32>> = Arc::new(MemoryStore::new());
    let audit: Arc<MemoryStore<u32>> = Arc::new(MemoryStore::new());
    bus.persist("orders.>", orders.clone()).unwrap();
    bus.persist("audit.>", audit.clone()).unwrap();
    for i in 0..5 {
        bus.publish_to("orders.new", i).await.unwrap();
    }
    bus.publish_to("audit.login", 99).await.unwrap();
    let mut sub = bus
        .subscriber("audit.>")
        .from(StartAt::Beginning)
        .subscribe()
        .unwrap();
    for i in 0..3 {
        let r = bus.publish_to("audit.login", 100 + i).await.unwrap();
        assert_eq!(r.subscribers, 1);
    }
    let mut got = Vec::new();
    while let Some(e) = sub.try_recv().unwrap() {
        got.push(e.payload);
    }
    assert_eq!(got, vec![99, 100, 101, 102]);

    // A pattern whose topics go to two stores cannot be replayed from one.
    let err = bus
        .subscriber(">")
        .from(StartAt::Beginning)
        .subscribe()
        .unwrap_err();
    assert!(
        matches!(&err, SubscribeError::Options { reason, .. } if reason.contains("not all persisted by one rule")),
        "{err}"
    );
    // Nor from a store other than its topics'.
    let err = bus
        .subscriber("audit.>")
        .from(StartAt::Beginning)
        .store(orders.clone())
        .subscribe()
        .unwrap_err();
    assert!(err.to_string().contains("another store"), "{err}");
}

#[test]
fn pattern_overlap_and_cover() {
    use busline::Pattern;
    let p = |s: &str| Pattern::new(s).unwrap();
    assert!(p("a.>").covers(&p("a.b.*")));
    assert!(p("a.*").covers(&p("a.b")));
    assert!(!p("a.*").covers(&p("a.>")));
    assert!(!p("a.b").covers(&p("a.*")));
    assert!(p(">").covers(&p("x.y")));
    assert!(!p("a.>").covers(&p("a")));
    assert!(p("a.>").overlaps(&p("*.b")));
    assert!(!p("a.>").overlaps(&p("a")));
    assert!(!p("a.b").overlaps(&p("a.c")));
    assert!(p("*.*").overlaps(&p("a.>")));
    assert!(!p("*").overlaps(&p("a.>")));
}

/// A queue group has one filter, its first member's: a member joining with
/// a filter of its own is refused (its filter used to be ignored).
#[tokio::test]
async fn a_queue_group_member_cannot_bring_its_own_filter_or_capacity() {
    let bus = Bus::<u32>::new();
    let _first = bus.subscriber("jobs").queue("w").subscribe().unwrap();
    let err = bus
        .subscriber("jobs")
        .queue("w")
        .filter(|e| e.payload < 10)
        .subscribe()
        .unwrap_err();
    assert!(err.to_string().contains("cannot have a filter"), "{err}");
    let err = bus
        .subscriber("jobs")
        .queue("w")
        .capacity(7)
        .subscribe()
        .unwrap_err();
    assert!(err.to_string().contains("cannot change them"), "{err}");
    // The same settings are fine.
    bus.subscriber("jobs")
        .queue("w")
        .capacity(busline::DEFAULT_CAPACITY)
        .subscribe()
        .unwrap();
}

struct FailingStore;

impl EventStore<u32> for FailingStore {
    fn append<'a>(&'a self, _env: &'a Envelope<u32>) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async { Err(StoreError::new("append", "disk full")) })
    }
    fn end(&self) -> u64 {
        0
    }
    fn read(&self, _f: u64, _t: u64) -> Result<StoredEvents<u32>, StoreError> {
        Ok(Box::new(std::iter::empty()))
    }
    fn offset_for_time(&self, _a: std::time::SystemTime) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn commit_offset<'a>(&'a self, _n: &'a str, _o: u64) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
    fn committed_offset(&self, _n: &str) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
}

/// A request whose store fails says so (it said the bus was closed).
#[tokio::test]
async fn a_request_refused_by_its_store_says_so() {
    let bus = Bus::<u32>::new();
    bus.persist("svc.>", Arc::new(FailingStore)).unwrap();
    let _resp = bus.subscribe("svc.x").unwrap();
    let err = bus
        .request("svc.x", 1, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RequestError::Store { reason, .. } if reason.contains("disk full")),
        "{err}"
    );
}

/// `delivered == received + dropped + superseded + queued` for `latest`.
#[tokio::test]
async fn latest_counters_add_up() {
    let bus = Bus::<u32>::new();
    let mut cfg = bus.subscriber("c.*").latest().subscribe().unwrap();
    bus.publish_to("c.a", 1).await.unwrap();
    bus.publish_to("c.a", 2).await.unwrap();
    bus.publish_to("c.b", 3).await.unwrap();
    cfg.recv().await.unwrap();
    let s = cfg.stats();
    assert_eq!(
        (s.delivered, s.superseded, s.received, s.queued),
        (3, 1, 1, 1)
    );
    assert_eq!(
        s.delivered,
        s.received + s.dropped + s.superseded + s.queued as u64,
        "{s:?}"
    );
}

/// Two queue groups of one name on different patterns export two series
/// (one used to overwrite the other).
#[cfg(feature = "metrics")]
#[test]
fn per_subscriber_metrics_are_told_apart_by_pattern() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let bus = Bus::<u32>::new();
            let _a = bus.subscriber("a").queue("workers").subscribe().unwrap();
            let _b = bus.subscriber("b").queue("workers").subscribe().unwrap();
            for i in 0..3 {
                bus.publish_to("a", i).await.unwrap();
            }
            bus.publish_to("b", 9).await.unwrap();
            bus.stats().export();
        });
    });
    let mut v: Vec<u64> = snap
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, _, _, _)| k.key().name() == "busline_subscriber_delivered_total")
        .map(|(_, _, _, v)| match v {
            DebugValue::Counter(c) => c,
            other => panic!("{other:?}"),
        })
        .collect();
    v.sort();
    assert_eq!(v, vec![1, 3]);
}

/// `filtered` counts an event once, when it is delivered to the others: a
/// `try_publish` refused as `Full` and tried again is not counted each time.
#[tokio::test]
async fn filtered_counts_delivered_events_only() {
    let bus = Bus::<u32>::new();
    let _full = bus
        .subscriber("t")
        .name("full")
        .lossless(1)
        .subscribe()
        .unwrap();
    let picky = bus
        .subscriber("t")
        .name("picky")
        .filter(|e| e.payload == 0)
        .subscribe()
        .unwrap();
    bus.try_publish_to("t", 0).unwrap();
    for _ in 0..3 {
        assert!(bus.try_publish_to("t", 1).is_err(), "`full` has no room");
    }
    assert_eq!(picky.stats().filtered, 0, "not delivered, not counted");
    drop(_full);
    bus.try_publish_to("t", 1).unwrap();
    assert_eq!(picky.stats().filtered, 1);
}

/// `WeakBus::upgrade` gives the bus only while it is open: after `close`
/// as after dropping the last handle (it gave a closed bus).
#[tokio::test]
async fn a_weak_bus_does_not_upgrade_to_a_closed_bus() {
    let bus = Bus::<u32>::new();
    let weak = bus.downgrade();
    assert!(weak.upgrade().is_some());
    bus.close();
    assert!(weak.upgrade().is_none());
}

/// A queue group is named after the group in stats and `Full` errors, not
/// after its first member (which may have left).
#[tokio::test]
async fn a_queue_group_is_named_after_the_group() {
    let bus = Bus::<u32>::new();
    let w1 = bus
        .subscriber("jobs")
        .queue("workers")
        .capacity(1)
        .name("w1")
        .subscribe()
        .unwrap();
    let w2 = bus
        .subscriber("jobs")
        .queue("workers")
        .name("w2")
        .subscribe()
        .unwrap();
    assert_eq!((w1.name(), w2.name()), ("w1", "w2")); // members keep theirs
    drop(w1);
    assert_eq!(bus.stats().subscribers[0].name, "workers");
    bus.try_publish_to("jobs", 1).unwrap();
    match bus.try_publish_to("jobs", 2) {
        Err(PublishError::Full { subscriber, .. }) => assert_eq!(&*subscriber, "workers"),
        other => panic!("{other:?}"),
    }
}
