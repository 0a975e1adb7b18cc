//! Recovery: what [`Log::open`](crate::Log::open) does with the files it finds.
//!
//! Every segment is read from start to end and every record's CRC checked;
//! the in-memory sparse index is rebuilt on the way.
//!
//! - The **tail of the last segment** may hold a torn write: a record cut
//!   short, or bytes that are not a valid record, with no valid record after
//!   them. Those bytes were never acknowledged (an acknowledgement follows the
//!   fsync that covers the whole record), so they are cut off and the cut is
//!   reported as a [`Recovery`].
//! - A last segment whose header itself is torn (the file is no longer than a
//!   header and the header is not valid) was being created when the process
//!   died; it is removed and reported the same way.
//! - Anywhere else, an invalid record is an error naming the segment, the file
//!   position and the offset ([`Error::CorruptRecord`] for a CRC mismatch,
//!   [`Error::Corrupt`] otherwise): it is never skipped. The same holds for a
//!   bad record in the last segment that is followed by valid records.
//! - A segment written by a newer format version is
//!   [`Error::UnsupportedVersion`].
//!
//! One limit of the format: a bit flip inside the very last record of the log
//! looks exactly like a torn write and is cut off (and reported).
//!
//! ## A torn tail is cut and reported
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), busline_log::Error> {
//! use std::{path::Path, sync::Arc};
//! use busline_log::{sim::SimStorage, segment::segment_path, Log, Options};
//!
//! let sim = SimStorage::new();
//! let opts = Options { storage: Arc::new(sim.clone()), ..Options::default() };
//! let dir = Path::new("/log");
//! let log = Log::open(dir, opts.clone())?;
//! log.append_batch([b"one", b"two"]).await?;
//! drop(log);
//!
//! // A crash in the middle of writing a third record leaves half of it.
//! let path = segment_path(dir, 0);
//! let mut bytes = sim.file_bytes(&path).unwrap();
//! bytes.extend_from_slice(&[0x17, 0, 0, 0, 9]);
//! sim.set_file_bytes(&path, bytes);
//!
//! let log = Log::open(dir, opts)?;
//! let cut = log.recovery().unwrap();
//! assert_eq!((cut.offset, cut.bytes_cut), (2, 5));
//! assert_eq!(log.committed_end(), 2);
//! # Ok(()) }
//! ```
//!
//! ## A corrupt record is an error
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), busline_log::Error> {
//! # use std::{path::Path, sync::Arc};
//! # use busline_log::{sim::SimStorage, segment::segment_path, Log, Options, Error};
//! # let sim = SimStorage::new();
//! # let opts = Options { storage: Arc::new(sim.clone()), ..Options::default() };
//! # let dir = Path::new("/log");
//! let log = Log::open(dir, opts.clone())?;
//! log.append_batch(["one", "two", "three"]).await?;
//! drop(log);
//!
//! // Flip a bit in the payload of record 1 (not the tail).
//! let path = segment_path(dir, 0);
//! let mut bytes = sim.file_bytes(&path).unwrap();
//! let record_1 = 32 + 24 + 3; // segment header, record 0
//! bytes[record_1 + 24] ^= 1;
//! sim.set_file_bytes(&path, bytes);
//!
//! match Log::open(dir, opts) {
//!     Err(Error::CorruptRecord { offset: 1, position, .. }) => assert_eq!(position, 59),
//!     other => panic!("{other:?}"),
//! }
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::segment::{
    decode_segment_header, parse_segment_file_name, read_rest, segment_path, valid_record_after,
    DecodeError, HeaderError, RecordCursor, SegmentInfo, Step, FORMAT_VERSION, SEGMENT_HEADER_LEN,
};
use crate::storage::{read_full_at, Storage};

/// A torn tail that recovery cut off when the log was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The segment file that was cut (or removed, if its header was torn).
    pub segment: PathBuf,
    /// The offset of the first record that was not kept.
    pub offset: u64,
    /// The file position of the cut.
    pub position: u64,
    /// How many bytes were cut.
    pub bytes_cut: u64,
}

/// What recovery found.
pub(crate) struct Recovered {
    pub(crate) segments: Vec<SegmentInfo>,
    pub(crate) recovery: Option<Recovery>,
    /// Largest timestamp in the log.
    pub(crate) max_ts: u64,
    /// Base of the segment to create if `segments` is empty.
    pub(crate) start: u64,
}

/// Options recovery needs.
pub(crate) struct RecoverOptions {
    pub(crate) max_payload: u32,
    pub(crate) index_interval: u64,
    /// What to do with a torn tail.
    pub(crate) mode: Mode,
}

/// What recovery does with a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Cut it off (the writer's open).
    Repair,
    /// Report it as an error (verification).
    Check,
    /// Stop reading there but leave the file alone (a read-only view of a
    /// log another process may be writing).
    ReadOnly,
}

/// Scans every segment in `dir`, cutting a torn tail of the last one.
pub(crate) fn recover(
    storage: &dyn Storage,
    dir: &Path,
    opts: &RecoverOptions,
) -> Result<Recovered> {
    let mut bases: Vec<u64> = storage
        .list(dir)
        .map_err(|e| Error::io("list", dir, e))?
        .iter()
        .filter_map(|n| parse_segment_file_name(n))
        .collect();
    bases.sort_unstable();

    let mut out = Recovered {
        segments: Vec::with_capacity(bases.len()),
        recovery: None,
        max_ts: 0,
        start: 0,
    };
    for (i, &base) in bases.iter().enumerate() {
        let is_last = i + 1 == bases.len();
        let path = segment_path(dir, base);
        if let Some(prev) = out.segments.last() {
            if prev.end != base {
                return Err(Error::Corrupt {
                    segment: path,
                    position: 0,
                    offset: prev.end,
                    reason: format!(
                        "segment starts at offset {base} but the previous segment ends at {}",
                        prev.end
                    ),
                });
            }
        }
        match scan_segment(storage, &path, base, is_last, out.max_ts, opts)? {
            Scanned::Segment(info, cut) => {
                out.max_ts = out.max_ts.max(info.max_ts);
                out.segments.push(info);
                if cut.is_some() {
                    out.recovery = cut;
                }
            }
            Scanned::TornHeader(cut) => {
                if opts.mode == Mode::Check {
                    return Err(Error::Corrupt {
                        segment: cut.segment,
                        position: 0,
                        offset: base,
                        reason: format!("torn segment header ({} bytes)", cut.bytes_cut),
                    });
                }
                if opts.mode == Mode::Repair {
                    storage
                        .remove(&path)
                        .map_err(|e| Error::io("remove", &path, e))?;
                    storage
                        .sync_dir(dir)
                        .map_err(|e| Error::io("fsync directory", dir, e))?;
                }
                out.recovery = Some(cut);
                out.start = base;
            }
        }
    }
    Ok(out)
}

enum Scanned {
    Segment(SegmentInfo, Option<Recovery>),
    TornHeader(Recovery),
}

/// Reads and checks every record of one segment; a torn tail of the last
/// segment is cut (or, in a read-only view, where reading stops).
fn scan_segment(
    storage: &dyn Storage,
    path: &Path,
    base: u64,
    is_last: bool,
    max_ts_before: u64,
    opts: &RecoverOptions,
) -> Result<Scanned> {
    let file = storage
        .open_read(path)
        .map_err(|e| Error::io("open", path, e))?;
    let len = file.len().map_err(|e| Error::io("stat", path, e))?;
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    let n = read_full_at(&*file, 0, &mut header).map_err(|e| Error::io("read", path, e))?;
    if let Some(cut) = check_segment_header(&header[..n], path, base, is_last, len)? {
        return Ok(Scanned::TornHeader(cut));
    }

    let mut info = SegmentInfo::new(base, path.to_owned());
    let mut max_ts = max_ts_before;
    let mut cursor = RecordCursor::new(file, SEGMENT_HEADER_LEN as u64, opts.max_payload);
    let problem = loop {
        let step = cursor.next().map_err(|e| Error::io("read", path, e))?;
        match step {
            Step::End => return Ok(Scanned::Segment(info, None)),
            Step::Record(h, pos) if h.offset == info.end => {
                info.note_record(&h, pos, max_ts, opts.index_interval);
                max_ts = max_ts.max(h.timestamp);
            }
            step => break problem_at(storage, path, step, info.end, len, opts)?,
        }
    };
    if !is_last || opts.mode == Mode::Check {
        return Err(problem.error);
    }
    end_at_problem(storage, path, info, len, problem, opts)
}

/// Checks a segment's header (`header`, what the file holds of it) against
/// the base offset its name gives. A header torn short in the last segment
/// is no error: it is returned as the cut to make.
fn check_segment_header(
    header: &[u8],
    path: &Path,
    base: u64,
    is_last: bool,
    len: u64,
) -> Result<Option<Recovery>> {
    match decode_segment_header(header) {
        Ok(b) if b == base => Ok(None),
        Ok(b) => Err(Error::Corrupt {
            segment: path.to_owned(),
            position: 16,
            offset: base,
            reason: format!("header says base offset {b}, the file name says {base}"),
        }),
        Err(HeaderError::NewerVersion(found)) => Err(Error::UnsupportedVersion {
            segment: path.to_owned(),
            found,
            supported: FORMAT_VERSION,
        }),
        Err(_) if is_last && len <= SEGMENT_HEADER_LEN as u64 => Ok(Some(Recovery {
            segment: path.to_owned(),
            offset: base,
            position: 0,
            bytes_cut: len,
        })),
        Err(e) => Err(Error::Corrupt {
            segment: path.to_owned(),
            position: 0,
            offset: base,
            reason: format!("invalid segment header: {e:?}"),
        }),
    }
}

/// Where the records of a segment stop being sound, and why.
struct Problem {
    /// The file position of the first unsound byte.
    pos: u64,
    /// The error it is when it cannot be cut.
    error: Error,
    /// The file ends inside the record there.
    cut_short: bool,
}

/// What `step` (not a record with the `expected` offset) says is wrong.
/// A record over the size limit that is sound was written under a larger
/// limit: that is an error naming the limit that opens the log.
fn problem_at(
    storage: &dyn Storage,
    path: &Path,
    step: Step,
    expected: u64,
    len: u64,
    opts: &RecoverOptions,
) -> Result<Problem> {
    let cut_short = matches!(step, Step::Incomplete(_));
    let (pos, error) = match step {
        Step::End => unreachable!("the end of a segment is no problem"),
        Step::Record(h, pos) => (
            pos,
            Error::Corrupt {
                segment: path.to_owned(),
                position: pos,
                offset: expected,
                reason: format!("record has offset {}, expected {expected}", h.offset),
            },
        ),
        Step::Incomplete(pos) => (
            pos,
            Error::Corrupt {
                segment: path.to_owned(),
                position: pos,
                offset: expected,
                reason: format!("record cut short: the file ends at byte {len}"),
            },
        ),
        Step::Bad(
            DecodeError::BadCrc {
                expected: stored,
                found,
                ..
            },
            pos,
        ) => (
            pos,
            Error::CorruptRecord {
                segment: path.to_owned(),
                position: pos,
                offset: expected,
                expected: stored,
                found,
            },
        ),
        Step::Bad(DecodeError::TooLong { len: big, .. }, pos)
            if written_with_a_larger_limit(storage, path, pos, big, expected)? =>
        {
            // A sound record, from when the log was opened with a larger
            // limit: never cut it, and say which limit opens the log.
            return Err(Error::InvalidOption {
                name: "max_record_bytes",
                reason: format!(
                    "{} holds a record of {big} bytes (offset {expected}), more than the {} this log was opened with; open it with max_record_bytes of at least {big}",
                    path.display(),
                    opts.max_payload
                ),
            });
        }
        Step::Bad(DecodeError::TooLong { len, .. }, pos) => (
            pos,
            Error::Corrupt {
                segment: path.to_owned(),
                position: pos,
                offset: expected,
                reason: format!(
                    "length field {len} exceeds the maximum record size {}",
                    opts.max_payload
                ),
            },
        ),
    };
    Ok(Problem {
        pos,
        error,
        cut_short,
    })
}

/// Ends the scan of the last segment at `problem`: a torn tail is cut (in a
/// read-only view, only reported); valid records after it make it an error.
fn end_at_problem(
    storage: &dyn Storage,
    path: &Path,
    info: SegmentInfo,
    len: u64,
    problem: Problem,
    opts: &RecoverOptions,
) -> Result<Scanned> {
    let Problem {
        pos,
        error: problem,
        cut_short,
    } = problem;
    let expected = info.end;
    if opts.mode == Mode::ReadOnly && cut_short {
        // A view of a log another process appends to: the record being
        // written is where the view ends for now (nothing is cut).
        return Ok(Scanned::Segment(
            info,
            Some(Recovery {
                segment: path.to_owned(),
                offset: expected,
                position: pos,
                bytes_cut: len - pos,
            }),
        ));
    }
    // The last segment: a torn tail, unless valid records follow.
    let file = storage
        .open_read(path)
        .map_err(|e| Error::io("open", path, e))?;
    let rest = read_rest(&*file, pos).map_err(|e| Error::io("read", path, e))?;
    if valid_record_after(&rest, expected, opts.max_payload) {
        return Err(problem);
    }
    let cut = Recovery {
        segment: path.to_owned(),
        offset: expected,
        position: pos,
        bytes_cut: len - pos,
    };
    if opts.mode == Mode::ReadOnly {
        return Ok(Scanned::Segment(info, Some(cut)));
    }
    let mut w = storage
        .open_append(path)
        .map_err(|e| Error::io("open", path, e))?;
    w.truncate(pos)
        .map_err(|e| Error::io("truncate", path, e))?;
    w.sync().map_err(|e| Error::io("fsync", path, e))?;
    Ok(Scanned::Segment(info, Some(cut)))
}

/// Whether the record at `pos` of `path`, whose length field (`len`) is over
/// the limit the log was opened with, is a whole record with a good
/// checksum: written under a larger limit, not a torn or corrupt one.
fn written_with_a_larger_limit(
    storage: &dyn Storage,
    path: &Path,
    pos: u64,
    len: u32,
    offset: u64,
) -> Result<bool> {
    let file = storage
        .open_read(path)
        .map_err(|e| Error::io("open", path, e))?;
    // The record only: header and payload (and only if the file holds it,
    // so a garbage length allocates nothing).
    let file_len = file.len().map_err(|e| Error::io("read", path, e))?;
    if pos + (crate::segment::RECORD_HEADER_LEN as u64) + u64::from(len) > file_len {
        return Ok(false);
    }
    let mut rec = vec![0u8; crate::segment::RECORD_HEADER_LEN + len as usize];
    let n = read_full_at(&*file, pos, &mut rec).map_err(|e| Error::io("read", path, e))?;
    Ok(n == rec.len()
        && matches!(
            crate::segment::decode_record(&rec, len),
            Ok(crate::segment::Decoded::Record { header, .. }) if header.offset == offset
        ))
}
