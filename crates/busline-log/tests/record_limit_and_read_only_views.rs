//! A smaller record limit on reopening is an error that cuts nothing, and a
//! read-only view applies no retention and opens while the writer is in
//! the middle of a record.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use busline_log::storage::{ReadFile, StdStorage, Storage, WriteFile};

use busline_log::{Error, Log, Options};

fn opts(max: usize) -> Options {
    Options {
        max_record_bytes: max,
        segment_bytes: 4096,
        ..Options::default()
    }
}

/// Reopening with a smaller `max_record_bytes` than a record in the log is
/// a clear error naming the option, never a "torn tail" cut (it used to cut
/// acknowledged records at the end of the log).
#[tokio::test]
async fn a_smaller_max_record_bytes_is_an_error_and_cuts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), opts(1 << 20)).unwrap();
        log.append(b"small").await.unwrap();
        let off = log.append(vec![7u8; 2000]).await.unwrap(); // acknowledged (fsynced)
        assert_eq!(off, 1);
    }
    // Reopen with a lower limit (the limit is documented as "the largest payload accepted").
    match Log::open(dir.path(), opts(1000)) {
        Err(Error::InvalidOption { name, reason }) => {
            assert_eq!(name, "max_record_bytes");
            assert!(
                reason.contains("2000 bytes") && reason.contains("at least 2000"),
                "{reason}"
            );
        }
        Err(e) => panic!("{e}"),
        Ok(log) => panic!("opened, committed end {}", log.committed_end()),
    }
    // Going back to the old limit, every record is there.
    let log = Log::open(dir.path(), opts(1 << 20)).unwrap();
    assert_eq!(log.committed_end(), 2, "acknowledged record 1 was cut");
}

/// Same setting, record in an older segment: the same error, not "corrupt".
#[tokio::test]
async fn a_smaller_max_record_bytes_in_an_older_segment_is_the_same_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), opts(1 << 20)).unwrap();
        log.append(vec![7u8; 2000]).await.unwrap();
        for _ in 0..10 {
            log.append(vec![1u8; 500]).await.unwrap();
        }
        assert!(log.segments().len() > 1);
    }
    match Log::open(dir.path(), opts(1000)) {
        Err(Error::InvalidOption { name, .. }) => assert_eq!(name, "max_record_bytes"),
        Err(e) => panic!("{e}"),
        Ok(log) => panic!("opened, committed end {}", log.committed_end()),
    }
    assert_eq!(
        Log::open(dir.path(), opts(1 << 20))
            .unwrap()
            .committed_end(),
        11
    );
}

/// A read-only view never deletes the writer's segment files.
#[tokio::test]
async fn a_read_only_view_applies_no_retention() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), opts(1 << 20)).unwrap();
    for _ in 0..20 {
        log.append(vec![1u8; 500]).await.unwrap();
    }
    let n = log.segments().len();
    assert!(n > 2);
    let view = Log::open_read_only(
        dir.path(),
        Options {
            retention_bytes: Some(1),
            ..opts(1 << 20)
        },
    )
    .unwrap();
    let r = view.apply_retention();
    assert!(matches!(r, Err(Error::ReadOnly { .. })), "{r:?}");
    assert_eq!(log.segments().len(), n);
}

#[derive(Debug)]
struct Growing {
    limit: u64,
    opens: AtomicUsize,
}
struct Limited(Box<dyn ReadFile>, u64);
impl ReadFile for Limited {
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        if pos >= self.1 {
            return Ok(0);
        }
        let n = buf.len().min((self.1 - pos) as usize);
        self.0.read_at(pos, &mut buf[..n])
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.len()?.min(self.1))
    }
}
impl Storage for Growing {
    fn create_dir_all(&self, d: &Path) -> io::Result<()> {
        StdStorage.create_dir_all(d)
    }
    fn list(&self, d: &Path) -> io::Result<Vec<String>> {
        StdStorage.list(d)
    }
    fn create(&self, p: &Path) -> io::Result<Box<dyn WriteFile>> {
        StdStorage.create(p)
    }
    fn open_append(&self, p: &Path) -> io::Result<Box<dyn WriteFile>> {
        StdStorage.open_append(p)
    }
    fn open_read(&self, p: &Path) -> io::Result<Box<dyn ReadFile>> {
        let f = StdStorage.open_read(p)?;
        if self.opens.fetch_add(1, Ordering::SeqCst) == 0 {
            Ok(Box::new(Limited(f, self.limit)))
        } else {
            Ok(f)
        }
    }
    fn rename(&self, a: &Path, b: &Path) -> io::Result<()> {
        StdStorage.rename(a, b)
    }
    fn remove(&self, p: &Path) -> io::Result<()> {
        StdStorage.remove(p)
    }
    fn sync_dir(&self, d: &Path) -> io::Result<()> {
        StdStorage.sync_dir(d)
    }
    fn lock(&self, p: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        StdStorage.lock(p)
    }
}

/// A read-only view opened while another process writes a record (a
/// Storage shows the last segment mid-write to recovery's first read and
/// whole to the next one) ends at that record; it used to fail as corrupt.
#[tokio::test]
async fn a_read_only_view_opens_while_the_writer_is_mid_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    log.append_batch(["one", "two"]).await.unwrap();
    // Record 2 is being written at the moment the read-only view scans...
    log.append_batch(["three", "four"]).await.unwrap();
    // 32 header + 2*(24+3) = 86; record 2 starts at 86; the view's first read sees 10 bytes of it.
    let storage = Arc::new(Growing {
        limit: 96,
        opens: AtomicUsize::new(0),
    });
    let view = Log::open_read_only(
        dir.path(),
        Options {
            storage,
            ..Options::default()
        },
    );
    match view {
        Ok(v) => assert!(v.committed_end() >= 2),
        Err(e) => panic!("read-only view of a healthy live log failed: {e}"),
    }
    drop(log);
}
