//! A projection added later catches up from the beginning, then follows
//! live appends; stopped and restarted, it resumes from its checkpoint.

mod helpers;

use busline_es::{Metadata, ProjectionOptions, ProjectionRunner, StoreOptions};
use helpers::{open_store, Balances, Command};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_projection_catches_up_then_follows_live_then_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), StoreOptions::default());
    for a in 0..3 {
        let id = format!("acct-{a}");
        store
            .execute(&id, Command::Open(id.clone()), Metadata::new())
            .await
            .unwrap();
        store
            .execute(&id, Command::Deposit(10 + a, "x".into()), Metadata::new())
            .await
            .unwrap();
    }
    let ckpt = tmp.path().join("balances.ckpt");
    let opts = ProjectionOptions::default().commit_every(4);
    let runner =
        ProjectionRunner::<Balances>::open(store.log().clone(), &ckpt, opts.clone()).unwrap();
    let handle = runner.handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async {
        let _ = stopped.await;
    }));
    // Caught up on what was there before it started.
    assert!(handle.wait_for(5).await);
    assert_eq!(handle.query(|b| b.balances["acct-2"]), 12);
    // Live: events appended while it runs.
    let mut last = 0;
    for i in 0..40u64 {
        let id = format!("acct-{}", i % 3);
        let app = store
            .execute(&id, Command::Deposit(1, "live".into()), Metadata::new())
            .await
            .unwrap();
        last = app.offsets.end - 1;
    }
    assert!(handle.wait_for(last).await);
    let end = store.log().next_offset();
    assert_eq!(handle.position(), end);
    assert_eq!(
        handle.query(|b| b.applied.clone()),
        (0..end).collect::<Vec<_>>()
    );
    let total: u64 = handle.query(|b| b.balances.values().sum());
    assert_eq!(total, 10 + 11 + 12 + 40);
    stop.send(()).unwrap();
    let runner = task.await.unwrap().unwrap();
    assert_eq!(runner.committed(), end, "stopping checkpoints");

    // Restart: nothing re-applied; new events continue from the checkpoint.
    store
        .execute("acct-0", Command::Withdraw(5), Metadata::new())
        .await
        .unwrap();
    let mut again = ProjectionRunner::<Balances>::open(store.log().clone(), &ckpt, opts).unwrap();
    assert_eq!(again.position(), end);
    assert_eq!(again.catch_up().unwrap(), 1);
    let b = again.handle().query(|b| b.clone());
    assert_eq!(b.applied, (0..=end).collect::<Vec<_>>());
    assert_eq!(b.balances["acct-0"], 10 + 14 - 5);
}

#[test]
fn damaged_checkpoint_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path(), StoreOptions::default());
    let ckpt = tmp.path().join("p.ckpt");
    std::fs::write(&ckpt, b"BLPROJ01garbage!").unwrap();
    let err = ProjectionRunner::<Balances>::open(store.log().clone(), &ckpt, Default::default())
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "projection checkpoint {} is damaged",
            ckpt.display()
        )),
        "{msg}"
    );
}
