//! Simulated power loss at every I/O step of a scripted workload, with the
//! [`SimStorage`] backend: after each crash point the log reopens without
//! error or panic, and no acknowledged record or consumer offset is lost.

use std::path::Path;

use busline_log::sim::SimStorage;
use busline_log::{Log, Options};

fn options(storage: &SimStorage) -> Options {
    Options {
        segment_bytes: 300,
        index_interval_bytes: 64,
        retention_bytes: Some(1500),
        storage: std::sync::Arc::new(storage.clone()),
        ..Options::default()
    }
}

fn payload(task: u64, i: u64) -> Vec<u8> {
    format!(
        "task {task} record {i} {}",
        "p".repeat(((task * 7 + i) % 40) as usize)
    )
    .into_bytes()
}

#[derive(Default, Debug)]
struct Acked {
    records: Vec<(u64, Vec<u8>)>,
    /// Consumer offsets whose commit returned Ok, in order.
    offsets: Vec<u64>,
}

/// Runs the workload until the storage fails; returns what was acknowledged.
fn workload(storage: &SimStorage, dir: &Path) -> Acked {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut acked = Acked::default();
        let Ok(log) = Log::open(dir, options(storage)) else {
            return acked;
        };
        let mut tasks = Vec::new();
        for t in 0..3u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..8u64 {
                    let result = if i % 3 == 2 {
                        let batch = vec![payload(t, i), payload(t, i + 100)];
                        log.append_batch(&batch)
                            .await
                            .map(|r| r.zip(batch).collect::<Vec<_>>())
                    } else {
                        let p = payload(t, i);
                        log.append(&p).await.map(|o| vec![(o, p)])
                    };
                    match result {
                        Ok(v) => got.extend(v),
                        Err(_) => break,
                    }
                }
                got
            }));
        }
        for (k, off) in [3u64, 9, 20].into_iter().enumerate() {
            tokio::task::yield_now().await;
            if log.commit_offset("reader", off).await.is_ok() {
                acked.offsets.push(off);
            } else if k == 0 {
                break;
            }
        }
        for t in tasks {
            acked.records.extend(t.await.unwrap());
        }
        acked
    })
}

fn check_image(image: &SimStorage, dir: &Path, acked: &Acked, what: &str) {
    let log = match Log::open(dir, options(image)) {
        Ok(log) => log,
        Err(e) => panic!("{what}: reopen failed: {e}"),
    };
    let first = log.first_offset();
    let records: Vec<_> = log
        .read_from(first)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{what}: read failed: {e}"));
    for (off, bytes) in &acked.records {
        if *off < first {
            continue; // removed by retention, on purpose
        }
        let rec = records
            .get((off - first) as usize)
            .unwrap_or_else(|| panic!("{what}: acknowledged offset {off} lost"));
        assert_eq!(rec.offset, *off, "{what}");
        assert_eq!(&rec.payload, bytes, "{what}: offset {off} changed");
    }
    let stored = log.committed_offset("reader").unwrap();
    match acked.offsets.last() {
        None => assert!(stored.is_none() || [3, 9, 20].contains(&stored.unwrap())),
        Some(last) => {
            // The last acknowledged commit, or a later one that was in flight.
            let s = stored.unwrap_or_else(|| panic!("{what}: consumer offset lost"));
            assert!(s >= *last, "{what}: consumer offset went back to {s}");
        }
    }
    // The log takes appends after recovery.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(log.append(b"after recovery")).unwrap();
}

#[test]
fn crash_at_every_io_step_loses_nothing_acknowledged() {
    let dir = Path::new("/log");
    let full = SimStorage::new();
    let acked = workload(&full, dir);
    assert!(acked.records.len() >= 30, "{acked:?}");
    let steps = full.steps();
    assert!(steps > 50, "only {steps} steps");
    let mut crash_points = 0;
    for step in 1..=steps + 5 {
        let storage = SimStorage::new();
        storage.crash_at(step);
        let acked = workload(&storage, dir);
        crash_points += storage.crashed() as u64;
        for seed in 0..4 {
            let image = storage.crash_image(step * 31 + seed);
            check_image(
                &image,
                dir,
                &acked,
                &format!("crash at step {step}, seed {seed}"),
            );
        }
    }
    println!("power loss: {crash_points} crash points, each checked with 4 images");
    assert!(crash_points >= steps / 2);
}
