//! Fuzzes the record decoder: any bytes give a record, "incomplete" or an
//! error, never a panic; a decoded record re-encodes to the same bytes.
#![no_main]

use busline_log::segment::{decode_record, encode_record, Decoded};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_record(data, 1 << 16) {
        Ok(Decoded::Record { header, payload }) => {
            let mut again = Vec::new();
            encode_record(&mut again, header.offset, header.timestamp, payload);
            assert_eq!(&again[..], &data[..header.record_len()]);
        }
        Ok(Decoded::Incomplete { needed }) => assert!(needed > data.len()),
        Err(_) => {}
    }
});
