//! Damaged files and failing disks: a tail cut at every byte, a bit flipped
//! in a non-tail record, a newer format version, ENOSPC, EIO on fsync.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use busline_log::segment::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use busline_log::sim::SimStorage;
use busline_log::{Error, Log, Options};

fn payload(i: u64) -> Vec<u8> {
    format!("payload {i}{}", "#".repeat(i as usize * 3)).into_bytes()
}

/// Writes `n` records into a fresh log; returns the segment path and the
/// file position of each record (plus the end position).
fn write_log(dir: &Path, n: u64, opts: Options) -> (PathBuf, Vec<u64>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let log = Log::open(dir, opts).unwrap();
    rt.block_on(log.append_batch_at(77, (0..n).map(payload)))
        .unwrap();
    let seg = log.segments().last().unwrap().path.clone();
    drop(log);
    let mut positions = vec![SEGMENT_HEADER_LEN as u64];
    for i in 0..n {
        let last = *positions.last().unwrap();
        positions.push(last + (RECORD_HEADER_LEN + payload(i).len()) as u64);
    }
    (seg, positions)
}

#[test]
fn tail_cut_at_every_byte_recovers_to_the_previous_record() {
    let tmp = tempfile::tempdir().unwrap();
    let (seg, pos) = write_log(tmp.path(), 6, Options::default());
    let original = std::fs::read(&seg).unwrap();
    assert_eq!(original.len() as u64, *pos.last().unwrap());
    for cut in 0..original.len() as u64 {
        std::fs::write(&seg, &original[..cut as usize]).unwrap();
        let log = Log::open(tmp.path(), Options::default())
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let whole = pos.iter().filter(|&&p| p <= cut).count().saturating_sub(1) as u64;
        assert_eq!(log.committed_end(), whole, "cut at {cut}");
        let boundary = pos[whole as usize];
        match log.recovery() {
            None => assert!(cut == boundary, "cut at {cut}: no recovery reported"),
            Some(r) if cut < SEGMENT_HEADER_LEN as u64 => {
                assert_eq!((r.offset, r.bytes_cut), (0, cut), "torn header at {cut}")
            }
            Some(r) => {
                assert_eq!(r.segment, seg);
                assert_eq!(r.offset, whole, "cut at {cut}");
                assert_eq!(r.position, boundary, "cut at {cut}");
                assert_eq!(r.bytes_cut, cut - boundary, "cut at {cut}");
            }
        }
        let recs: Vec<_> = log.read_from(0).unwrap().map(Result::unwrap).collect();
        assert_eq!(recs.len() as u64, whole);
        for r in recs {
            assert_eq!(r.payload, payload(r.offset));
        }
        drop(log);
        // The cut is durable: the file now ends at the boundary.
        let len = std::fs::metadata(&seg).unwrap().len();
        assert_eq!(len, boundary.max(SEGMENT_HEADER_LEN as u64), "cut at {cut}");
    }
}

fn assert_names_record(e: &Error, seg: &Path, offset: u64, position: u64) {
    let text = e.to_string();
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(text.contains(name), "{text}");
    assert!(text.contains(&format!("record offset {offset}")), "{text}");
    assert!(
        text.contains(&format!("file position {position}")),
        "{text}"
    );
}

#[test]
fn bit_flip_in_a_non_tail_record_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (seg, pos) = write_log(tmp.path(), 5, Options::default());
    let original = std::fs::read(&seg).unwrap();
    let victim = 2;
    let (start, end) = (pos[victim], pos[victim + 1]);
    let mut crc_errors = 0;
    for bit in start * 8..end * 8 {
        let mut bytes = original.clone();
        bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
        std::fs::write(&seg, &bytes).unwrap();
        let err = Log::open(tmp.path(), Options::default())
            .expect_err(&format!("bit {bit} flipped went unnoticed"));
        match &err {
            Error::CorruptRecord {
                segment,
                position,
                offset,
                expected,
                found,
            } => {
                assert_eq!((segment, *position, *offset), (&seg, start, victim as u64));
                assert_ne!(expected, found);
                crc_errors += 1;
            }
            Error::Corrupt {
                segment,
                position,
                offset,
                ..
            } => assert_eq!((segment, *position, *offset), (&seg, start, victim as u64)),
            other => panic!("bit {bit}: unexpected {other:?}"),
        }
        assert_names_record(&err, &seg, victim as u64, start);
        // verify() reports the same without changing the file.
        assert!(busline_log::verify(tmp.path(), &Options::default()).is_err());
        assert_eq!(std::fs::read(&seg).unwrap(), bytes);
    }
    assert!(crc_errors > 0);
    let text = {
        let mut bytes = original.clone();
        bytes[start as usize + RECORD_HEADER_LEN] ^= 1;
        std::fs::write(&seg, &bytes).unwrap();
        Log::open(tmp.path(), Options::default())
            .unwrap_err()
            .to_string()
    };
    assert!(text.starts_with("corrupt record in "), "{text}");
    assert!(text.contains("crc expected 0x"), "{text}");
}

#[test]
fn corruption_in_an_older_segment_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_bytes: 200,
        ..Options::default()
    };
    write_log(tmp.path(), 12, opts.clone());
    let log = Log::open(tmp.path(), opts.clone()).unwrap();
    let segs = log.segments();
    drop(log);
    assert!(segs.len() >= 3);
    let first = &segs[0];
    let mut bytes = std::fs::read(&first.path).unwrap();
    let last = bytes.len() - 1; // the last byte of its last record
    bytes[last] ^= 0x40;
    std::fs::write(&first.path, &bytes).unwrap();
    match Log::open(tmp.path(), opts) {
        Err(Error::CorruptRecord { segment, .. }) => assert_eq!(segment, first.path),
        other => panic!("{other:?}"),
    }
}

#[test]
fn newer_format_version_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (seg, _) = write_log(tmp.path(), 3, Options::default());
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[8..10].copy_from_slice(&9u16.to_le_bytes());
    std::fs::write(&seg, &bytes).unwrap();
    let err = Log::open(tmp.path(), Options::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                found: 9,
                supported: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("format version 9"), "{err}");
}

fn sim_options(sim: &SimStorage) -> Options {
    Options {
        storage: Arc::new(sim.clone()),
        segment_bytes: 500,
        ..Options::default()
    }
}

#[tokio::test]
async fn disk_full_is_a_clear_error_and_nothing_undurable_is_acknowledged() {
    let sim = SimStorage::new();
    let dir = Path::new("/full");
    let log = Log::open(dir, sim_options(&sim)).unwrap();
    let mut acked = Vec::new();
    for i in 0..5 {
        acked.push((log.append(payload(i)).await.unwrap(), payload(i)));
    }
    sim.set_write_budget(Some(100));
    let err = loop {
        let i = acked.len() as u64;
        match log.append(payload(i)).await {
            Ok(o) => acked.push((o, payload(i))),
            Err(e) => break e,
        }
    };
    match &err {
        Error::ReadOnly { op, path, kind, .. } => {
            assert_eq!(*op, "write");
            assert_eq!(*kind, std::io::ErrorKind::StorageFull);
            assert!(path.starts_with(dir), "{path:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("no space left"), "{err}");
    // Read-only from now on, even with space again.
    sim.set_write_budget(None);
    assert!(matches!(
        log.append(b"more").await,
        Err(Error::ReadOnly { .. })
    ));
    assert!(log.failure().is_some());
    // Everything acknowledged is durable: it survives losing unsynced data.
    let image = sim.crash_image(1);
    drop(log);
    let log = Log::open(dir, sim_options(&image)).unwrap();
    let recs: Vec<_> = log.read_from(0).unwrap().map(Result::unwrap).collect();
    assert!(recs.len() >= acked.len());
    for (o, p) in acked {
        assert_eq!(recs[o as usize].payload, p);
    }
}

#[tokio::test]
async fn eio_on_fsync_makes_the_log_read_only() {
    let sim = SimStorage::new();
    let dir = Path::new("/eio");
    let log = Log::open(dir, sim_options(&sim)).unwrap();
    log.append(b"durable").await.unwrap();
    sim.set_fail_sync(true);
    let err = log.append(b"not acknowledged").await.unwrap_err();
    match &err {
        Error::ReadOnly { op, path, .. } => {
            assert_eq!(*op, "fsync");
            assert!(path.ends_with("00000000000000000000.seg"), "{path:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("log is read-only: fsync of /eio/"),
        "{err}"
    );
    // The fsync is never retried as if nothing happened.
    sim.set_fail_sync(false);
    let again = log.append(b"later").await.unwrap_err();
    assert_eq!(again.to_string(), err.to_string());
    assert_eq!(log.committed_end(), 1);
    // A reader sees only the acknowledged record.
    let recs: Vec<_> = log.read_from(0).unwrap().map(Result::unwrap).collect();
    assert_eq!(recs.len(), 1);
    drop(log);
    let image = sim.crash_image(3);
    let log = Log::open(dir, sim_options(&image)).unwrap();
    assert_eq!(
        log.read_from(0).unwrap().next().unwrap().unwrap().payload,
        b"durable"
    );
}

#[tokio::test]
async fn eio_when_creating_a_segment_makes_the_log_read_only() {
    let sim = SimStorage::new();
    let dir = Path::new("/roll");
    let log = Log::open(dir, sim_options(&sim)).unwrap();
    // Fill the first segment, then fail the fsyncs of the roll.
    log.append(vec![1u8; 400]).await.unwrap();
    sim.set_fail_sync(true);
    let err = log.append(vec![2u8; 400]).await.unwrap_err();
    assert!(matches!(err, Error::ReadOnly { .. }), "{err:?}");
    assert_eq!(log.committed_end(), 1);
}
