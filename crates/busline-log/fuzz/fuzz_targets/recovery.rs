//! Fuzzes recovery: the input becomes one or two segment files (the first
//! byte picks the split); opening the log must give a log or an error, never
//! a panic, and every record of an opened log must read back.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use busline_log::segment::{encode_segment_header, segment_path};
use busline_log::sim::SimStorage;
use busline_log::{Log, Options};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let dir = Path::new("/fuzz");
    let sim = SimStorage::new();
    // Half the time start from a valid header so the fuzzer reaches records.
    let mut first = if split & 1 == 0 {
        encode_segment_header(0).to_vec()
    } else {
        Vec::new()
    };
    let cut = (split as usize * rest.len() / 256).min(rest.len());
    first.extend_from_slice(&rest[..cut]);
    sim.set_file_bytes(&segment_path(dir, 0), first);
    if cut < rest.len() {
        sim.set_file_bytes(&segment_path(dir, 1), rest[cut..].to_vec());
    }
    let opts = Options {
        storage: Arc::new(sim),
        max_record_bytes: 1 << 16,
        ..Options::default()
    };
    if let Ok(log) = Log::open(dir, opts) {
        for record in log.read_from(log.first_offset()).unwrap() {
            record.unwrap();
        }
    }
});
