//! Segment files: their header, the record format, and the sparse index.
//!
//! The byte layout is drawn in the [crate docs](crate#byte-layout). All
//! integers are little-endian.

use std::io;
use std::path::{Path, PathBuf};

use crate::storage::{read_full_at, ReadFile};

/// The first 8 bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"BUSLNLOG";
/// The newest segment format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the segment header in bytes.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Size of a record header in bytes.
pub const RECORD_HEADER_LEN: usize = 24;
/// File name extension of segment files.
pub const SEGMENT_EXT: &str = "seg";

/// The file name of the segment whose first record has offset `base`.
pub fn segment_file_name(base: u64) -> String {
    format!("{base:020}.{SEGMENT_EXT}")
}

/// The base offset of a segment file name, or `None` if it is not one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".seg")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Encodes a segment header.
pub fn encode_segment_header(base: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    // 10..12 flags, 12..16 reserved: zero.
    h[16..24].copy_from_slice(&base.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a segment header is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than [`SEGMENT_HEADER_LEN`] bytes.
    Short,
    /// The magic number is wrong: not a busline segment.
    BadMagic,
    /// Written by a newer format version.
    NewerVersion(u16),
    /// The header CRC does not match.
    BadCrc {
        /// Stored CRC.
        expected: u32,
        /// Computed CRC.
        found: u32,
    },
}

/// Decodes a segment header, returning its base offset.
pub fn decode_segment_header(h: &[u8]) -> Result<u64, HeaderError> {
    if h.len() < SEGMENT_HEADER_LEN {
        return Err(HeaderError::Short);
    }
    if h[0..8] != MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if version > FORMAT_VERSION {
        return Err(HeaderError::NewerVersion(version));
    }
    let expected = u32::from_le_bytes(h[24..28].try_into().expect("4 bytes"));
    let found = crc32c::crc32c(&h[0..24]);
    if expected != found {
        return Err(HeaderError::BadCrc { expected, found });
    }
    Ok(u64::from_le_bytes(h[16..24].try_into().expect("8 bytes")))
}

/// The fixed-size header in front of every record's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// CRC32C over header bytes 4..24 and the payload.
    pub crc: u32,
    /// Payload length in bytes.
    pub len: u32,
    /// The record's offset.
    pub offset: u64,
    /// The record's timestamp (unix milliseconds).
    pub timestamp: u64,
}

impl RecordHeader {
    /// Total bytes of the record on disk, header included.
    pub fn record_len(&self) -> usize {
        RECORD_HEADER_LEN + self.len as usize
    }
}

/// Appends one encoded record to `out`.
pub fn encode_record(out: &mut Vec<u8>, offset: u64, timestamp: u64, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&timestamp.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Parses the header fields without checking the CRC. `h` must hold at
/// least [`RECORD_HEADER_LEN`] bytes.
pub fn parse_record_header(h: &[u8]) -> RecordHeader {
    RecordHeader {
        crc: u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")),
        len: u32::from_le_bytes(h[4..8].try_into().expect("4 bytes")),
        offset: u64::from_le_bytes(h[8..16].try_into().expect("8 bytes")),
        timestamp: u64::from_le_bytes(h[16..24].try_into().expect("8 bytes")),
    }
}

/// What [`decode_record`] found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole record with a valid CRC.
    Record {
        /// Its header.
        header: RecordHeader,
        /// Its payload.
        payload: &'a [u8],
    },
    /// The buffer ends inside the record; `needed` bytes make it whole (if
    /// the length field is right).
    Incomplete {
        /// Total bytes the record needs.
        needed: usize,
    },
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The length field exceeds the maximum record size.
    TooLong {
        /// The length field.
        len: u32,
        /// The offset field (not verified).
        offset: u64,
    },
    /// The CRC does not match.
    BadCrc {
        /// The offset field (not verified).
        offset: u64,
        /// Stored CRC.
        expected: u32,
        /// Computed CRC.
        found: u32,
    },
}

/// Decodes the record at the start of `buf`. Never panics, whatever `buf`
/// holds. `max_payload` bounds the length field.
pub fn decode_record(buf: &[u8], max_payload: u32) -> Result<Decoded<'_>, DecodeError> {
    if buf.len() < RECORD_HEADER_LEN {
        return Ok(Decoded::Incomplete {
            needed: RECORD_HEADER_LEN,
        });
    }
    let header = parse_record_header(buf);
    if header.len > max_payload {
        return Err(DecodeError::TooLong {
            len: header.len,
            offset: header.offset,
        });
    }
    let total = header.record_len();
    if buf.len() < total {
        return Ok(Decoded::Incomplete { needed: total });
    }
    let found = crc32c::crc32c(&buf[4..total]);
    if found != header.crc {
        return Err(DecodeError::BadCrc {
            offset: header.offset,
            expected: header.crc,
            found,
        });
    }
    Ok(Decoded::Record {
        header,
        payload: &buf[RECORD_HEADER_LEN..total],
    })
}

/// One entry of the sparse in-memory index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset of the record.
    pub offset: u64,
    /// File position of its header.
    pub pos: u64,
    /// The largest timestamp of all records before this one in the whole
    /// log (0 if none): monotone, so time lookups can binary-search it.
    pub max_ts_before: u64,
}

/// What the log knows about one segment file.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// Offset of its first record.
    pub base: u64,
    /// Its path.
    pub path: PathBuf,
    /// One past the offset of its last record (`base` if empty).
    pub end: u64,
    /// Its size in bytes, header included.
    pub size: u64,
    /// Largest timestamp in it (0 if empty).
    pub max_ts: u64,
    /// Sparse index: one entry at least every `index_interval` bytes, the
    /// first record always included.
    pub index: Vec<IndexEntry>,
    /// File position of the last index entry.
    pub(crate) last_indexed_pos: u64,
}

impl SegmentInfo {
    /// A segment with no records yet.
    pub fn new(base: u64, path: PathBuf) -> Self {
        SegmentInfo {
            base,
            path,
            end: base,
            size: SEGMENT_HEADER_LEN as u64,
            max_ts: 0,
            index: Vec::new(),
            last_indexed_pos: 0,
        }
    }

    /// Notes a record that was appended at `pos`. `max_ts_before` is the
    /// largest timestamp in the log before it.
    pub(crate) fn note_record(
        &mut self,
        header: &RecordHeader,
        pos: u64,
        max_ts_before: u64,
        interval: u64,
    ) {
        if self.index.is_empty() || pos >= self.last_indexed_pos + interval {
            self.index.push(IndexEntry {
                offset: header.offset,
                pos,
                max_ts_before,
            });
            self.last_indexed_pos = pos;
        }
        self.end = header.offset + 1;
        self.size = pos + header.record_len() as u64;
        self.max_ts = self.max_ts.max(header.timestamp);
    }

    /// The file position to start scanning from to find `offset`.
    pub fn seek_pos(&self, offset: u64) -> u64 {
        let i = self.index.partition_point(|e| e.offset <= offset);
        if i == 0 {
            SEGMENT_HEADER_LEN as u64
        } else {
            self.index[i - 1].pos
        }
    }
}

/// What a [`RecordCursor`] found next.
#[derive(Debug)]
pub(crate) enum Step {
    /// A valid record: its header and file position. The payload is
    /// `cursor.payload()`.
    Record(RecordHeader, u64),
    /// Clean end of file: no bytes after the last record.
    End,
    /// The file ends inside a record at this position.
    Incomplete(u64),
    /// Bytes that are not a valid record at this position.
    Bad(DecodeError, u64),
}

/// Reads records sequentially from a segment file through a buffer.
pub(crate) struct RecordCursor {
    file: Box<dyn ReadFile>,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_pos: u64,
    /// Next record's position in the file.
    pos: u64,
    max_payload: u32,
    /// Payload range in `buf` of the last record returned.
    last: (usize, usize),
}

const CHUNK: usize = 1 << 20;

impl RecordCursor {
    pub(crate) fn new(file: Box<dyn ReadFile>, pos: u64, max_payload: u32) -> Self {
        RecordCursor {
            file,
            buf: Vec::new(),
            buf_pos: pos,
            pos,
            max_payload,
            last: (0, 0),
        }
    }

    /// The position of the next record.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// The payload of the record last returned by [`RecordCursor::next`].
    pub(crate) fn payload(&self) -> &[u8] {
        &self.buf[self.last.0..self.last.1]
    }

    /// Makes sure `buf` holds `need` bytes from `self.pos` if the file has
    /// them; returns how many it holds.
    fn fill(&mut self, need: usize) -> io::Result<usize> {
        let start = (self.pos - self.buf_pos) as usize;
        let have = self.buf.len() - start;
        if have >= need {
            return Ok(have);
        }
        // Move the unread bytes to the front and read more behind them.
        self.buf.drain(..start);
        self.buf_pos = self.pos;
        let old = self.buf.len();
        // Read a chunk, but no further than the end of the file (zeroing a
        // large buffer for a small file costs more than the read).
        let file_left = self.file.len()?.saturating_sub(self.pos + old as u64) as usize;
        let want = need.max(CHUNK.min(old + file_left));
        self.buf.resize(want, 0);
        let n = read_full_at(&*self.file, self.pos + old as u64, &mut self.buf[old..want])?;
        self.buf.truncate(old + n);
        Ok(self.buf.len())
    }

    /// Decodes the next record.
    pub(crate) fn next(&mut self) -> io::Result<Step> {
        let have = self.fill(RECORD_HEADER_LEN)?;
        if have == 0 {
            return Ok(Step::End);
        }
        let pos = self.pos;
        let mut need = RECORD_HEADER_LEN;
        loop {
            let start = (self.pos - self.buf_pos) as usize;
            match decode_record(&self.buf[start..], self.max_payload) {
                Ok(Decoded::Record { header, .. }) => {
                    self.last = (start + RECORD_HEADER_LEN, start + header.record_len());
                    self.pos += header.record_len() as u64;
                    return Ok(Step::Record(header, pos));
                }
                Ok(Decoded::Incomplete { needed }) => {
                    if needed <= need {
                        return Ok(Step::Incomplete(pos));
                    }
                    need = needed;
                    if self.fill(need)? < need {
                        return Ok(Step::Incomplete(pos));
                    }
                }
                Err(e) => return Ok(Step::Bad(e, pos)),
            }
        }
    }
}

/// Reads the whole of a file from `pos` to its end.
pub(crate) fn read_rest(file: &dyn ReadFile, pos: u64) -> io::Result<Vec<u8>> {
    let len = file.len()?;
    let mut buf = vec![0u8; len.saturating_sub(pos) as usize];
    let n = read_full_at(file, pos, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Whether a valid record with an offset in `min_offset..` starts anywhere in
/// `bytes` after its first byte (used to tell a torn tail from corruption
/// followed by good records).
pub(crate) fn valid_record_after(bytes: &[u8], min_offset: u64, max_payload: u32) -> bool {
    let max_offset = min_offset + (bytes.len() / RECORD_HEADER_LEN) as u64 + 1;
    (1..bytes.len().saturating_sub(RECORD_HEADER_LEN - 1)).any(|i| {
        let h = parse_record_header(&bytes[i..]);
        h.offset >= min_offset
            && h.offset <= max_offset
            && matches!(
                decode_record(&bytes[i..], max_payload),
                Ok(Decoded::Record { .. })
            )
    })
}

/// The path of a segment in `dir`.
pub fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(segment_file_name(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_roundtrip() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 7, 1234, b"hello");
        assert_eq!(buf.len(), RECORD_HEADER_LEN + 5);
        match decode_record(&buf, 1 << 20).unwrap() {
            Decoded::Record { header, payload } => {
                assert_eq!(header.offset, 7);
                assert_eq!(header.timestamp, 1234);
                assert_eq!(payload, b"hello");
            }
            other => panic!("{other:?}"),
        }
        for cut in 0..buf.len() {
            assert!(matches!(
                decode_record(&buf[..cut], 1 << 20),
                Ok(Decoded::Incomplete { .. })
            ));
        }
    }

    #[test]
    fn bit_flips_are_detected() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, 2, b"payload bytes");
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode_record(&b, 1 << 20), Ok(Decoded::Record { .. })),
                "bit {bit} flip went unnoticed"
            );
        }
    }

    #[test]
    fn header_roundtrip_and_version() {
        let h = encode_segment_header(42);
        assert_eq!(decode_segment_header(&h), Ok(42));
        let mut newer = h;
        newer[8..10].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(
            decode_segment_header(&newer),
            Err(HeaderError::NewerVersion(2))
        );
        assert_eq!(decode_segment_header(&h[..10]), Err(HeaderError::Short));
    }

    #[test]
    fn names() {
        assert_eq!(segment_file_name(5), "00000000000000000005.seg");
        assert_eq!(parse_segment_file_name("00000000000000000005.seg"), Some(5));
        assert_eq!(parse_segment_file_name("5.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000x.seg"), None);
    }
}
