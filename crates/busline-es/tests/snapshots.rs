//! Snapshots: a missing or damaged snapshot falls back to a full replay,
//! never to a wrong state.

mod helpers;

use busline_es::{Metadata, SnapshotStore, StoreOptions};
use helpers::{open_store, Account, Command};

async fn fill(dir: &std::path::Path) -> Account {
    let store = open_store(dir, StoreOptions::default().snapshot_every(5));
    store
        .execute("acct", Command::Open("ada".into()), Metadata::new())
        .await
        .unwrap();
    for i in 0..12 {
        store
            .execute(
                "acct",
                Command::Deposit(i + 1, "me".into()),
                Metadata::new(),
            )
            .await
            .unwrap();
    }
    let l = store.load("acct").unwrap();
    assert!(l.from_snapshot);
    assert_eq!(l.version, 13);
    l.state
}

fn snap_path(dir: &std::path::Path) -> std::path::PathBuf {
    SnapshotStore::open(dir.join("snapshots"))
        .unwrap()
        .path("acct")
}

fn reload(dir: &std::path::Path) -> busline_es::Loaded<Account> {
    open_store(dir, StoreOptions::default().snapshot_every(5))
        .load("acct")
        .unwrap()
}

#[tokio::test]
async fn snapshot_is_used_and_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let want = fill(tmp.path()).await;
    let snaps = SnapshotStore::open(tmp.path().join("snapshots")).unwrap();
    let (v, s) = snaps.read::<Account>("account", "acct").unwrap().unwrap();
    assert_eq!(v, 10);
    assert_eq!(s.balance, (1..=9).sum::<u64>());
    let l = reload(tmp.path());
    assert!(l.from_snapshot);
    assert_eq!(l.state, want);
}

#[tokio::test]
async fn flipped_byte_falls_back_to_full_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let want = fill(tmp.path()).await;
    let p = snap_path(tmp.path());
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x01;
    std::fs::write(&p, &bytes).unwrap();
    let snaps = SnapshotStore::open(tmp.path().join("snapshots")).unwrap();
    let err = snaps.read::<Account>("account", "acct").unwrap_err();
    assert!(err.contains("crc expected"), "{err}");
    // The fallback is logged as a warning naming the problem.
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || Sink(sink.clone()))
        .finish();
    let l = tracing::subscriber::with_default(subscriber, || reload(tmp.path()));
    assert!(!l.from_snapshot);
    assert_eq!(l.state, want);
    let logged = String::from_utf8(out.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("WARN"), "{logged}");
    assert!(logged.contains("damaged snapshot ignored"), "{logged}");
    assert!(logged.contains("crc expected"), "{logged}");
}

struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn truncated_or_missing_snapshot_falls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let want = fill(tmp.path()).await;
    let p = snap_path(tmp.path());
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let l = reload(tmp.path());
    assert_eq!((l.from_snapshot, &l.state), (false, &want));
    std::fs::remove_file(&p).unwrap();
    let l = reload(tmp.path());
    assert_eq!((l.from_snapshot, &l.state), (false, &want));
}

#[tokio::test]
async fn snapshot_of_other_aggregate_or_from_the_future_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let want = fill(tmp.path()).await;
    let snaps = SnapshotStore::open(tmp.path().join("snapshots")).unwrap();
    // A valid snapshot file, but of another aggregate, copied over this one.
    let bogus = Account {
        balance: 1_000_000,
        ..Account::default()
    };
    snaps.write("account", "other", 10, &bogus).unwrap();
    std::fs::copy(snaps.path("other"), snaps.path("acct")).unwrap();
    let l = reload(tmp.path());
    assert_eq!((l.from_snapshot, &l.state), (false, &want));
    // A snapshot claiming a version the stream does not have.
    snaps.write("account", "acct", 99, &bogus).unwrap();
    let l = reload(tmp.path());
    assert_eq!((l.from_snapshot, &l.state), (false, &want));
    // A snapshot whose state no longer decodes.
    snaps
        .write("account", "acct", 10, &"not an account")
        .unwrap();
    let l = reload(tmp.path());
    assert_eq!((l.from_snapshot, &l.state), (false, &want));
}

#[tokio::test]
async fn older_snapshot_is_used_for_earlier_versions_only() {
    let tmp = tempfile::tempdir().unwrap();
    fill(tmp.path()).await;
    let store = open_store(tmp.path(), StoreOptions::default().snapshot_every(5));
    let at7 = store.load_at_version("acct", 7).unwrap();
    assert!(!at7.from_snapshot, "the snapshot at 10 is after version 7");
    assert_eq!(at7.state.balance, (1..=6).sum::<u64>());
    let at12 = store.load_at_version("acct", 12).unwrap();
    assert!(at12.from_snapshot);
    assert_eq!(at12.state.balance, (1..=11).sum::<u64>());
}
