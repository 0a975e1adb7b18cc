//! Two writers racing on one aggregate: exactly one wins each version, the
//! other gets the concurrency error, and no event is lost.

mod helpers;

use std::collections::BTreeSet;
use std::sync::Arc;

use busline_es::{AggregateStore, Error, Metadata, StoreOptions};
use helpers::{open_store, Account, AccountEvent};
use tokio::sync::Barrier;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_expected_version_exactly_one_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), StoreOptions::default());
    for round in 0..50u64 {
        let barrier = Arc::new(Barrier::new(2));
        let tasks: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|w| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let ev = AccountEvent::Deposited {
                        amount: 1,
                        by: format!("{w}{round}"),
                    };
                    store.append("acct", round, vec![ev], Metadata::new()).await
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(app) => {
                    ok += 1;
                    assert_eq!(app.version, round + 1);
                }
                Err(Error::Concurrency {
                    aggregate,
                    expected,
                    actual,
                }) => {
                    assert_eq!(
                        (aggregate.as_str(), expected, actual),
                        ("acct", round, round + 1)
                    );
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert_eq!(ok, 1, "round {round}: exactly one writer must win");
    }
    assert_eq!(store.version("acct"), 50);
}

/// Each writer loops load → append at the loaded version, retrying on
/// conflict; every event it was told succeeded is in the stream exactly once,
/// at a distinct version, and nothing else is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), StoreOptions::default().snapshot_every(7));
    const PER_WRITER: u64 = 60;
    let writer = |name: &'static str, store: AggregateStore<Account>| async move {
        let mut won = Vec::new();
        let mut conflicts = 0u64;
        let mut seq = 0;
        while seq < PER_WRITER {
            let v = store.load("acct").unwrap().version;
            let ev = AccountEvent::Deposited {
                amount: 1,
                by: format!("{name}-{seq}"),
            };
            match store.append("acct", v, vec![ev], Metadata::new()).await {
                Ok(app) => {
                    won.push((app.version, format!("{name}-{seq}")));
                    seq += 1;
                }
                Err(Error::Concurrency {
                    expected, actual, ..
                }) => {
                    assert_eq!(expected, v);
                    assert!(actual > expected);
                    conflicts += 1;
                }
                Err(e) => panic!("{e}"),
            }
            tokio::task::yield_now().await;
        }
        (won, conflicts)
    };
    let a = tokio::spawn(writer("a", store.clone()));
    let b = tokio::spawn(writer("b", store.clone()));
    let (wa, _ca) = a.await.unwrap();
    let (wb, _cb) = b.await.unwrap();

    let history = store.history("acct").unwrap();
    assert_eq!(history.len() as u64, 2 * PER_WRITER);
    let mut claimed: Vec<(u64, String)> = wa.into_iter().chain(wb).collect();
    claimed.sort();
    let stored: Vec<(u64, String)> = history
        .iter()
        .map(|r| match &r.event {
            AccountEvent::Deposited { by, .. } => (r.version, by.clone()),
            e => panic!("unexpected {e:?}"),
        })
        .collect();
    assert_eq!(
        claimed, stored,
        "each acknowledged append is stored at its version"
    );
    let versions: BTreeSet<u64> = stored.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, (1..=2 * PER_WRITER).collect());
    let loaded = store.load("acct").unwrap();
    assert_eq!(loaded.state.balance, 2 * PER_WRITER);
    assert_eq!(loaded.state, store.load_full("acct").unwrap().state);
}
