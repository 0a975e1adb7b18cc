//! Temporal queries, audit trail, schema evolution, bus publication.

mod helpers;

use std::time::{Duration, UNIX_EPOCH};

use busline::Bus;
use busline_es::{
    AggregateStore, Error, Metadata, ProjectionOptions, ProjectionRunner, StoreOptions, Upcasters,
};
use busline_log::Log;
use helpers::{buffered, open_store, Account, AccountEvent, Balances, Command};

#[tokio::test]
async fn audit_trail_and_state_as_of() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), StoreOptions::default());
    let meta = |i: u32| {
        Metadata::new()
            .correlation_id(format!("req-{i}"))
            .causation_id(format!("cmd-{i}"))
            .header("user", "ops")
    };
    store
        .execute("acct", Command::Open("ada".into()), meta(0))
        .await
        .unwrap();
    for i in 1..=20 {
        store
            .execute("acct", Command::Deposit(i as u64, "x".into()), meta(i))
            .await
            .unwrap();
    }
    store
        .execute("acct", Command::Split(vec![1, 2, 3]), meta(21))
        .await
        .unwrap();
    let history = store.history("acct").unwrap();
    assert_eq!(history.len(), 24);
    for (i, r) in history.iter().enumerate() {
        assert_eq!(r.version, i as u64 + 1);
        assert_eq!(r.aggregate_id, "acct");
        assert_eq!(r.schema_version, 1);
        assert_eq!(r.metadata.headers["user"], "ops");
        let n = (i as u32).min(21);
        assert_eq!(
            r.metadata.correlation_id.as_deref(),
            Some(format!("req-{n}").as_str())
        );
        assert_eq!(
            r.metadata.causation_id.as_deref(),
            Some(format!("cmd-{n}").as_str())
        );
    }
    assert_eq!(history[0].event_type, "Opened");
    assert_eq!(history[1].event_type, "Deposited");
    // The three events of one command share one timestamp and consecutive offsets.
    assert_eq!(history[21].timestamp_ms, history[23].timestamp_ms);
    assert_eq!(history[23].offset, history[21].offset + 2);

    // As of each event's time: exactly the events stamped at or before it.
    for r in &history {
        let l = store.load_as_of("acct", r.timestamp()).unwrap();
        let upto: Vec<_> = history
            .iter()
            .filter(|h| h.timestamp_ms <= r.timestamp_ms)
            .collect();
        let mut want = Account::default();
        for h in &upto {
            busline_es::Aggregate::apply(&mut want, &h.event);
        }
        assert_eq!(l.version, upto.len() as u64);
        assert_eq!(l.state, want);
    }
    let before = history[0].timestamp() - Duration::from_millis(1);
    assert_eq!(store.load_as_of("acct", before).unwrap().version, 0);
    assert_eq!(
        store.load_as_of("acct", UNIX_EPOCH).unwrap().state,
        Account::default()
    );
    let err = store.load_at_version("acct", 25).unwrap_err();
    assert_eq!(
        err.to_string(),
        "aggregate acct has 24 events, version 25 was asked for"
    );
}

mod v2 {
    //! The same aggregate after a schema change: `Deposited` v2 has `cents`.
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Ev {
        Opened { owner: String },
        Deposited { cents: u64, by: String },
    }
    impl busline_es::DomainEvent for Ev {
        const TYPES: &'static [&'static str] = &["Opened", "Deposited"];
        fn schema_version(t: &str) -> u32 {
            if t == "Deposited" {
                2
            } else {
                1
            }
        }
    }
    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    pub struct Acc {
        pub cents: u64,
    }
    impl busline_es::Aggregate for Acc {
        const TYPE: &'static str = "account";
        type Command = ();
        type Event = Ev;
        type Error = std::convert::Infallible;
        fn handle(&self, _: ()) -> Result<Vec<Ev>, Self::Error> {
            Ok(vec![])
        }
        fn apply(&mut self, e: &Ev) {
            if let Ev::Deposited { cents, .. } = e {
                self.cents += cents
            }
        }
    }
}

#[tokio::test]
async fn upcasters_convert_old_events_and_missing_ones_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = open_store(tmp.path(), StoreOptions::default());
        store
            .execute("acct", Command::Open("ada".into()), Metadata::new())
            .await
            .unwrap();
        store
            .execute("acct", Command::Deposit(3, "me".into()), Metadata::new())
            .await
            .unwrap();
    }
    let open = |up: Upcasters| {
        let log = Log::open(tmp.path().join("log"), buffered()).unwrap();
        AggregateStore::<v2::Acc>::open(log, StoreOptions::default().upcasters(up)).unwrap()
    };
    let err = open(Upcasters::new()).load("acct").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no upcaster for event type \"Deposited\" from schema version 1 (current 2) of aggregate acct at version 2, log offset 1"
    );
    let up = Upcasters::new().register("Deposited", 1, |mut v: serde_json::Value| {
        let amount = v["amount"].as_u64().ok_or("no amount")?;
        v["cents"] = (amount * 100).into();
        Ok::<_, &str>(v)
    });
    let store = open(up);
    assert_eq!(store.load("acct").unwrap().state.cents, 300);
    let h = store.history("acct").unwrap();
    assert_eq!(h[1].schema_version, 1, "the stored version is reported");
    assert_eq!(
        h[1].event,
        v2::Ev::Deposited {
            cents: 300,
            by: "me".into()
        }
    );
}

#[tokio::test]
async fn unknown_event_type_names_its_position_in_store_and_projection() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), StoreOptions::default());
    store
        .execute("acct", Command::Open("ada".into()), Metadata::new())
        .await
        .unwrap();
    store
        .log()
        .append(br#"{"at":"account","id":"acct","v":2,"t":"Closed","sv":3,"ts":0,"p":{}}"#)
        .await
        .unwrap();
    let log = store.log().clone();
    drop(store);
    let store = AggregateStore::<Account>::open(log.clone(), StoreOptions::default()).unwrap();
    let err = store.load("acct").unwrap_err();
    assert!(matches!(
        &err,
        Error::UnknownEventType { event_type, version: 2, offset: 1, .. } if event_type == "Closed"
    ));
    assert_eq!(
        err.to_string(),
        "unknown event type \"Closed\" (schema version 3) of aggregate acct at version 2, log offset 1"
    );
    let mut p = ProjectionRunner::<Balances>::open(
        log,
        tmp.path().join("p.ckpt"),
        ProjectionOptions::default(),
    )
    .unwrap();
    let err = p.catch_up().unwrap_err();
    assert!(
        matches!(err, Error::UnknownEventType { offset: 1, .. }),
        "{err}"
    );
    assert_eq!(p.committed(), 0, "the bad event is not skipped");
}

#[tokio::test]
async fn garbage_record_and_version_gap_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(tmp.path().join("log"), buffered()).unwrap();
    log.append(br#"{"at":"account","id":"a","v":1,"t":"Frozen","sv":1,"ts":0}"#)
        .await
        .unwrap();
    log.append(br#"{"at":"account","id":"a","v":3,"t":"Frozen","sv":1,"ts":0}"#)
        .await
        .unwrap();
    let err = AggregateStore::<Account>::open(log.clone(), StoreOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "aggregate a has version 3 at log offset 1, expected version 2"
    );
    let tmp2 = tempfile::tempdir().unwrap();
    let log = Log::open(tmp2.path().join("log"), buffered()).unwrap();
    log.append(b"not json").await.unwrap();
    let err = AggregateStore::<Account>::open(log, StoreOptions::default()).unwrap_err();
    assert!(matches!(err, Error::BadRecord { offset: 0, .. }), "{err}");
}

#[tokio::test]
async fn appended_events_are_published_after_they_are_durable() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), StoreOptions::default());
    let bus = Bus::new();
    let mut sub = bus.subscribe("es.account.>").unwrap();
    store.publish_to(bus.clone());
    let app = store
        .execute(
            "acct",
            Command::Open("ada".into()),
            Metadata::new().correlation_id("c1"),
        )
        .await
        .unwrap();
    store
        .execute("acct", Command::Split(vec![4, 5]), Metadata::new())
        .await
        .unwrap();
    let env = sub.recv().await.unwrap();
    assert_eq!(env.topic.as_str(), "es.account.Opened");
    assert_eq!(env.payload.offset, app.offsets.start);
    assert_eq!(env.payload.metadata.correlation_id.as_deref(), Some("c1"));
    // Already durable: a reader of the log sees it.
    assert!(store.log().committed_end() > env.payload.offset);
    for v in [2, 3] {
        let env = sub.recv().await.unwrap();
        assert_eq!(env.topic.as_str(), "es.account.Deposited");
        assert_eq!(env.payload.version, v);
    }
    assert_eq!(
        store
            .history("acct")
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .collect::<Vec<_>>(),
        vec![
            AccountEvent::Opened {
                owner: "ada".into()
            },
            AccountEvent::Deposited {
                amount: 4,
                by: "split".into()
            },
            AccountEvent::Deposited {
                amount: 5,
                by: "split".into()
            },
        ]
    );
}
