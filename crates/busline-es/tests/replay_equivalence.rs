//! Property: for random command sequences, state from snapshot + tail ==
//! state from a full replay == state applied live, at every version, also
//! after reopening the store (index rebuilt by scanning the log).

mod helpers;

use busline_es::{Aggregate, ExecuteError, Metadata, StoreOptions};
use helpers::{open_store, Account, Command};
use proptest::prelude::*;

fn command() -> impl Strategy<Value = (u8, Command)> {
    let c = prop_oneof![
        "[a-z]{1,6}".prop_map(Command::Open),
        (1u64..50, "[a-z]{0,3}").prop_map(|(a, b)| Command::Deposit(a, b)),
        (1u64..80).prop_map(Command::Withdraw),
        Just(Command::Freeze),
        Just(Command::Unfreeze),
        proptest::collection::vec(1u64..9, 0..4).prop_map(Command::Split),
    ];
    (0u8..3, c)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn snapshot_tail_equals_full_replay_equals_live(
        cmds in proptest::collection::vec(command(), 1..60),
        every in 1u64..8,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let tmp = tempfile::tempdir().unwrap();
            let store = open_store(tmp.path(), StoreOptions::default().snapshot_every(every));
            // The live states, and the state after every version.
            let mut live: Vec<Account> = vec![Account::default(); 3];
            let mut prefix: Vec<Vec<Account>> = vec![vec![Account::default()]; 3];
            for (agg, cmd) in cmds {
                let id = format!("acct-{agg}");
                let a = agg as usize;
                let expected = live[a].handle(cmd.clone());
                match store.execute(&id, cmd, Metadata::new()).await {
                    Ok(app) => {
                        let events = expected.expect("store accepted what the model rejects");
                        for e in &events {
                            live[a].apply(e);
                            prefix[a].push(live[a].clone());
                        }
                        prop_assert_eq!(app.version, prefix[a].len() as u64 - 1);
                    }
                    Err(ExecuteError::Rejected(e)) => prop_assert_eq!(Err(e), expected.map(|_| ())),
                    Err(e) => panic!("store error: {e}"),
                }
            }
            {
                for a in 0..3 {
                    let id = format!("acct-{a}");
                    let snap = store.load(&id).unwrap();
                    let full = store.load_full(&id).unwrap();
                    prop_assert!(!full.from_snapshot);
                    prop_assert_eq!(&snap.state, &live[a]);
                    prop_assert_eq!(&full.state, &live[a]);
                    prop_assert_eq!(snap.version, full.version);
                    if full.version >= every {
                        prop_assert!(snap.from_snapshot, "no snapshot used at version {}", full.version);
                    }
                    for (v, want) in prefix[a].iter().enumerate() {
                        let at = store.load_at_version(&id, v as u64).unwrap();
                        prop_assert_eq!(&at.state, want, "state at version {}", v);
                    }
                }
            }
            // Reopen: the index is rebuilt from the log, snapshots reused.
            let dir = tmp.path().to_owned();
            drop(store);
            let store = open_store(&dir, StoreOptions::default().snapshot_every(every));
            for (a, want) in live.iter().enumerate() {
                let id = format!("acct-{a}");
                prop_assert_eq!(&store.load(&id).unwrap().state, want);
                prop_assert_eq!(&store.load_full(&id).unwrap().state, want);
            }
            Ok(())
        })?;
    }
}
