//! Appending, reading, reopening, segments, time lookup, retention,
//! consumer offsets, following.

use std::sync::Arc;
use std::time::Duration;

use busline_log::{Error, Log, Options, Persist};

fn small_segments() -> Options {
    Options {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        ..Options::default()
    }
}

fn payload(i: u64) -> Vec<u8> {
    format!("record number {i} {}", "x".repeat((i % 50) as usize)).into_bytes()
}

#[tokio::test]
async fn append_read_reopen_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let log = Log::open(tmp.path(), small_segments()).unwrap();
        for i in 0..100 {
            assert_eq!(log.append_at(1000 + i, payload(i)).await.unwrap(), i);
        }
        let r = log
            .append_batch_at(2000, (100..200).map(payload))
            .await
            .unwrap();
        assert_eq!(r, 100..200);
        assert_eq!(log.committed_end(), 200);
        assert!(log.segments().len() > 5, "{:?}", log.segments());
    }
    let log = Log::open(tmp.path(), small_segments()).unwrap();
    assert!(log.recovery().is_none());
    assert_eq!(log.committed_end(), 200);
    assert_eq!(log.next_offset(), 200);
    for start in [0, 1, 37, 99, 150, 199, 200] {
        let recs: Vec<_> = log
            .read_from(start)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(recs.len() as u64, 200 - start);
        for (k, r) in recs.iter().enumerate() {
            let i = start + k as u64;
            assert_eq!(r.offset, i);
            assert_eq!(r.payload, payload(i));
            assert_eq!(r.timestamp, if i < 100 { 1000 + i } else { 2000 });
        }
    }
    assert_eq!(log.append(b"after reopen").await.unwrap(), 200);
}

#[tokio::test]
async fn offset_for_time() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(tmp.path(), small_segments()).unwrap();
    for i in 0..300u64 {
        log.append_at(10 * i, payload(i)).await.unwrap();
    }
    assert_eq!(log.offset_for_time(0).unwrap(), Some(0));
    assert_eq!(log.offset_for_time(5).unwrap(), Some(1));
    assert_eq!(log.offset_for_time(10 * 150).unwrap(), Some(150));
    assert_eq!(log.offset_for_time(10 * 299).unwrap(), Some(299));
    assert_eq!(log.offset_for_time(10 * 299 + 1).unwrap(), None);
}

#[tokio::test]
async fn retention_by_size_and_age() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options {
        retention_bytes: Some(4096),
        ..small_segments()
    };
    let log = Log::open(tmp.path(), opts).unwrap();
    for i in 0..400u64 {
        log.append(payload(i)).await.unwrap();
    }
    let total: u64 = log.segments().iter().map(|s| s.bytes).sum();
    assert!(total <= 4096 + 1024, "total {total}");
    let first = log.first_offset();
    assert!(first > 0);
    match log.read_from(0) {
        Err(Error::OffsetRemoved {
            offset: 0,
            first: f,
        }) => assert_eq!(f, first),
        other => panic!("{other:?}"),
    }
    let recs: Vec<_> = log.read_from(first).unwrap().map(Result::unwrap).collect();
    assert_eq!(recs.len() as u64, 400 - first);
    drop(log);

    // Age: records stamped long ago are removed by an explicit call.
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options {
        retention_age: Some(Duration::from_secs(3600)),
        ..small_segments()
    };
    let log = Log::open(tmp.path(), opts).unwrap();
    for i in 0..100u64 {
        log.append_at(1, payload(i)).await.unwrap();
    }
    for i in 100..200u64 {
        log.append(payload(i)).await.unwrap();
    }
    log.apply_retention().unwrap();
    let first = log.first_offset();
    assert!(first > 50 && first <= 100, "first {first}");
    drop(log);
    let log = Log::open(tmp.path(), Options::default()).unwrap();
    assert_eq!(log.first_offset(), first);
    assert_eq!(log.committed_end(), 200);
}

#[tokio::test]
async fn consumer_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(tmp.path(), Options::default()).unwrap();
    assert_eq!(log.committed_offset("projection").unwrap(), None);
    log.commit_offset("projection", 17).await.unwrap();
    log.commit_offset("projection", 42).await.unwrap();
    log.commit_offset("other.consumer-1", 7).await.unwrap();
    assert_eq!(log.committed_offset("projection").unwrap(), Some(42));
    for bad in ["", "../x", ".hidden", "a/b", "sp ace"] {
        assert!(matches!(
            log.commit_offset(bad, 1).await,
            Err(Error::InvalidConsumerName { .. })
        ));
    }
    drop(log);
    let log = Log::open(tmp.path(), Options::default()).unwrap();
    assert_eq!(log.committed_offset("projection").unwrap(), Some(42));
    assert_eq!(log.committed_offset("other.consumer-1").unwrap(), Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_then_live_without_gap_or_duplicate() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(tmp.path(), small_segments()).unwrap();
    for i in 0..50u64 {
        log.append(payload(i)).await.unwrap();
    }
    let mut reader = log.read_from(10).unwrap();
    let mut committed = log.subscribe_committed();
    let writer = log.clone();
    let task = tokio::spawn(async move {
        for i in 50..300u64 {
            writer.append(payload(i)).await.unwrap();
        }
    });
    for i in 10..300u64 {
        let r = reader.recv().await.unwrap().unwrap();
        assert_eq!(r.offset, i);
        assert_eq!(r.payload, payload(i));
    }
    task.await.unwrap();
    committed.wait_for(|&end| end == 300).await.unwrap();
    assert!(reader.try_next().unwrap().is_none());
    drop(log);
    // Once the log is closed, a follower ends.
    assert!(reader.recv().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_get_dense_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(tmp.path(), small_segments()).unwrap();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..50u64 {
                let p = format!("{t}:{i}");
                if i % 5 == 0 {
                    let r = log
                        .append_batch([p.clone(), p.clone() + "b"])
                        .await
                        .unwrap();
                    got.push((r.start, p.clone()));
                    got.push((r.start + 1, p + "b"));
                } else {
                    got.push((log.append(&p).await.unwrap(), p));
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    assert_eq!(all.len(), 8 * 60);
    let recs: Vec<_> = log.read_from(0).unwrap().map(Result::unwrap).collect();
    for ((off, p), r) in all.iter().zip(&recs) {
        assert_eq!(*off, r.offset);
        assert_eq!(p.as_bytes(), r.payload);
    }
}

#[tokio::test]
async fn buffered_mode_and_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options {
        persist: Persist::Buffered,
        max_record_bytes: 100,
        ..small_segments()
    };
    let log = Log::open(tmp.path(), opts.clone()).unwrap();
    log.append_batch((0..20).map(payload)).await.unwrap();
    log.sync().await.unwrap();
    match log.append_batch([vec![0u8; 10], vec![0u8; 101]]).await {
        Err(Error::RecordTooLarge { len: 101, max: 100 }) => {}
        other => panic!("{other:?}"),
    }
    // The rejected batch left nothing behind.
    assert_eq!(log.append(b"next").await.unwrap(), 20);
    drop(log);
    let log = Log::open(tmp.path(), opts).unwrap();
    assert_eq!(log.committed_end(), 21);
}

#[test]
fn invalid_options_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_bytes: 3,
        ..Options::default()
    };
    match Log::open(tmp.path(), opts) {
        Err(e @ Error::InvalidOption { .. }) => {
            assert!(e.to_string().contains("segment_bytes"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    let _ = Arc::new(0);
}

#[tokio::test]
async fn one_writer_at_a_time_and_read_only_views() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(tmp.path(), small_segments()).unwrap();
    match Log::open(tmp.path(), small_segments()) {
        Err(e @ Error::Locked { .. }) => assert!(e.to_string().contains("in use"), "{e}"),
        other => panic!("{other:?}"),
    }
    for i in 0..10u64 {
        log.append(payload(i)).await.unwrap();
    }
    let view = Log::open_read_only(tmp.path(), small_segments()).unwrap();
    assert_eq!(view.committed_end(), 10);
    assert!(matches!(
        view.append(b"x").await,
        Err(Error::ReadOnly { .. })
    ));
    let mut reader = view.read_from(5).unwrap();
    assert_eq!(reader.by_ref().count(), 5);
    for i in 10..100u64 {
        log.append(payload(i)).await.unwrap();
    }
    assert_eq!(view.refresh().unwrap(), 100);
    let rest: Vec<_> = reader.map(Result::unwrap).collect();
    assert_eq!(rest.len(), 90);
    assert_eq!(rest[89].payload, payload(99));
    drop(log);
    // The lock is released with the last handle.
    Log::open(tmp.path(), small_segments()).unwrap();
}

#[tokio::test]
async fn pipelined_submissions_are_acknowledged_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Log::open(tmp.path(), small_segments()).unwrap();
    let mut tickets = Vec::new();
    for i in 0..20u64 {
        let t = log.submit_batch(5, [payload(i)]).await.unwrap();
        assert_eq!(t.offsets(), i..i + 1);
        tickets.push(t);
    }
    for (i, t) in tickets.into_iter().enumerate() {
        assert_eq!(t.acknowledged().await.unwrap(), i as u64..i as u64 + 1);
    }
    assert_eq!(log.committed_end(), 20);
}
