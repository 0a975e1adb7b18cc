//! An append counts even when its future or its runtime is dropped, and the
//! store reopens after it; an undecodable event stops every catch-up; ids
//! leave out aggregates without events; append works outside tokio.

use std::io;
use std::path::Path;
use std::sync::Arc;

use busline_es::{
    doc_support::{Counter, CounterEvent},
    AggregateStore, Metadata, Projection, ProjectionOptions, ProjectionRunner, Recorded,
    StoreOptions,
};
use busline_log::storage::{ReadFile, StdStorage, Storage, WriteFile};
use busline_log::{Log, Options};
use futures::FutureExt;
use serde::{Deserialize, Serialize};

/// StdStorage whose fsync blocks while the gate is closed.
#[derive(Debug, Default)]
struct Gate {
    closed: parking_lot::Mutex<bool>,
    cv: parking_lot::Condvar,
}
impl Gate {
    fn set(&self, closed: bool) {
        *self.closed.lock() = closed;
        self.cv.notify_all();
    }
    fn wait(&self) {
        let mut g = self.closed.lock();
        while *g {
            self.cv.wait(&mut g);
        }
    }
}
#[derive(Debug)]
struct Gated(Arc<Gate>);
struct GatedFile(Box<dyn WriteFile>, Arc<Gate>);
impl WriteFile for GatedFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.append(buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.1.wait();
        self.0.sync()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.truncate(len)
    }
    fn len(&self) -> u64 {
        self.0.len()
    }
}
impl Storage for Gated {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdStorage.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdStorage.list(dir)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        Ok(Box::new(GatedFile(
            StdStorage.create(path)?,
            self.0.clone(),
        )))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        Ok(Box::new(GatedFile(
            StdStorage.open_append(path)?,
            self.0.clone(),
        )))
    }
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        StdStorage.open_read(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdStorage.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        StdStorage.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdStorage.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        StdStorage.lock(path)
    }
}

/// An append whose future is dropped after the log accepted its records
/// (a request timeout, a client disconnect) still records them in the
/// store's index: the next append at the old version is refused, and the
/// store reopens. (Before, the index missed them: a second "version 1" was
/// accepted and the store could no longer be opened.)
#[tokio::test]
async fn a_cancelled_append_still_counts_and_the_store_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let opts = Options {
        storage: Arc::new(Gated(gate.clone())),
        ..Options::default()
    };
    let log = Log::open(tmp.path().join("log"), opts).unwrap();
    let store = AggregateStore::<Counter>::open(log.clone(), StoreOptions::default()).unwrap();

    gate.set(true); // hold the writer's fsync
    let fut = store.append("c1", 0, vec![CounterEvent::Added { n: 1 }], Metadata::new());
    // Poll once (the records are queued in the log) and drop: cancellation.
    assert!(fut.now_or_never().is_none());
    gate.set(false);
    the_dropped_append_counts(&log, &store).await;
}

/// After an append of version 1 to `c1` was dropped with its record queued:
/// the record is in the log, a second append at version 0 is refused, and
/// the store reopens.
async fn the_dropped_append_counts(log: &Log, store: &AggregateStore<Counter>) {
    log.sync().await.unwrap();
    assert_eq!(
        log.committed_end(),
        1,
        "the dropped append's record is in the log"
    );
    let second = store
        .append(
            "c1",
            0,
            vec![CounterEvent::Added { n: 10 }],
            Metadata::new(),
        )
        .await;
    let reopened = AggregateStore::<Counter>::open(log.clone(), StoreOptions::default());
    assert!(
        second.is_err(),
        "append at expected=0 accepted although version 1 is already in the log (reopen: {:?})",
        reopened.as_ref().err()
    );
    assert!(
        reopened.is_ok(),
        "store cannot be reopened: {:?}",
        reopened.err()
    );
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Total {
    sum: u64,
}
impl Projection for Total {
    const AGGREGATE_TYPE: &'static str = "counter";
    type Event = CounterEvent;
    fn apply(&mut self, r: &Recorded<CounterEvent>) {
        let CounterEvent::Added { n } = r.event;
        self.sum += n;
    }
}

/// "An event that cannot be decoded stops the projection with an error
/// naming it; it is never skipped": calling catch_up again fails again
/// (it used to skip the bad record).
#[tokio::test]
async fn an_undecodable_event_stops_every_catch_up_not_only_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(tmp.path().join("log"), Options::default()).unwrap();
    log.append(br#"{"at":"counter","id":"c1","v":1,"t":"Added","sv":1,"ts":0,"p":{"n":1}}"#)
        .await
        .unwrap();
    log.append(br#"{"at":"counter","id":"c1","v":2,"t":"Reset","sv":1,"ts":0,"p":null}"#)
        .await
        .unwrap();
    log.append(br#"{"at":"counter","id":"c1","v":3,"t":"Added","sv":1,"ts":0,"p":{"n":100}}"#)
        .await
        .unwrap();
    let mut p = ProjectionRunner::<Total>::open(
        log.clone(),
        tmp.path().join("p.ckpt"),
        ProjectionOptions::default(),
    )
    .unwrap();
    let first = p.catch_up();
    assert!(first.is_err());
    let second = p.catch_up();
    assert!(
        second.is_err(),
        "the undecodable record at offset 1 was skipped: {second:?}, sum {}, position {}",
        p.handle().query(|t| t.sum),
        p.position()
    );
}

/// ids(): "Ids of every aggregate with at least one event", also after a
/// refused append (which leaves an empty entry behind).
#[tokio::test]
async fn ids_leaves_out_aggregates_without_events() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(tmp.path().join("log"), Options::default()).unwrap();
    let store = AggregateStore::<Counter>::open(log, StoreOptions::default()).unwrap();
    let r = store
        .append(
            "ghost",
            3,
            vec![CounterEvent::Added { n: 1 }],
            Metadata::new(),
        )
        .await;
    assert!(r.is_err());
    assert_eq!(store.version("ghost"), 0);
    assert_eq!(store.ids(), Vec::<String>::new());
}

/// An append polled once on a runtime that then shuts down (its records are
/// queued in the log's writer thread) still counts: a second append at the
/// old version is refused and the store reopens.
#[test]
fn an_append_dropped_with_its_runtime_still_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(tmp.path().join("log"), Options::default()).unwrap();
    let store =
        Arc::new(AggregateStore::<Counter>::open(log.clone(), StoreOptions::default()).unwrap());

    // Runtime A: the append is polled once (records queued), then A shuts down (a runtime per request, a test
    // harness, a Runtime dropped at the end of a blocking helper).
    {
        let rt_a = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let s = store.clone();
        rt_a.block_on(async move {
            let fut = s.append("c1", 0, vec![CounterEvent::Added { n: 1 }], Metadata::new());
            assert!(fut.now_or_never().is_none());
        });
        drop(rt_a);
    }

    let rt_b = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt_b.block_on(the_dropped_append_counts(&log, &store));
}

/// Append works from any executor (the log's writer is a thread).
#[test]
fn append_works_outside_a_tokio_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(tmp.path().join("log"), Options::default()).unwrap();
    let store = AggregateStore::<Counter>::open(log, StoreOptions::default()).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        futures::executor::block_on(store.append(
            "c1",
            0,
            vec![CounterEvent::Added { n: 1 }],
            Metadata::new(),
        ))
    }));
    assert!(r.is_ok(), "append panicked outside a tokio runtime");
}
