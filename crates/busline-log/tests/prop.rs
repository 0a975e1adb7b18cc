//! Property tests: random appends, reopens and power losses preserve every
//! acknowledged record; garbage never makes the decoder or recovery panic.

use std::path::Path;
use std::sync::Arc;

use busline_log::segment::{decode_record, encode_segment_header, segment_path, Decoded};
use busline_log::sim::{SimRng, SimStorage};
use busline_log::{Log, Options};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Vec<u8>>, u64),
    Reopen,
    PowerLoss(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..6),
            0u64..1000
        )
            .prop_map(|(p, ts)| Op::Append(p, ts)),
        1 => Just(Op::Reopen),
        1 => any::<u64>().prop_map(Op::PowerLoss),
    ]
}

fn options(sim: &SimStorage) -> Options {
    Options {
        storage: Arc::new(sim.clone()),
        segment_bytes: 400,
        index_interval_bytes: 100,
        ..Options::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn appends_and_reopens_preserve_every_record(ops in prop::collection::vec(op(), 1..25)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let dir = Path::new("/p");
        let mut sim = SimStorage::new();
        let mut log = Log::open(dir, options(&sim)).unwrap();
        let mut model: Vec<(u64, Vec<u8>)> = Vec::new();
        for op in ops {
            match op {
                Op::Append(payloads, ts) => {
                    let r = rt.block_on(log.append_batch_at(ts, &payloads)).unwrap();
                    prop_assert_eq!(r.start, model.len() as u64);
                    model.extend(payloads.into_iter().map(|p| (ts, p)));
                }
                Op::Reopen => {
                    drop(log);
                    log = Log::open(dir, options(&sim)).unwrap();
                    prop_assert!(log.recovery().is_none());
                }
                Op::PowerLoss(seed) => {
                    let image = sim.crash_image(seed);
                    drop(log);
                    sim = image;
                    log = Log::open(dir, options(&sim)).unwrap();
                }
            }
            prop_assert_eq!(log.committed_end(), model.len() as u64);
            let recs: Vec<_> = log.read_from(0).unwrap().map(Result::unwrap).collect();
            prop_assert_eq!(recs.len(), model.len());
            for (r, (ts, p)) in recs.iter().zip(&model) {
                prop_assert_eq!(&r.payload, p);
                prop_assert_eq!(r.timestamp, *ts);
            }
            if let Some(&(ts, _)) = model.first() {
                let first = log.offset_for_time(ts).unwrap().unwrap();
                prop_assert!(model[first as usize].0 >= ts);
                prop_assert!(model[..first as usize].iter().all(|(t, _)| *t < ts));
            }
        }
    }

    #[test]
    fn decoder_never_panics_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        match decode_record(&bytes, 1 << 20) {
            Ok(Decoded::Record { header, payload }) => {
                prop_assert_eq!(header.len as usize, payload.len());
            }
            Ok(Decoded::Incomplete { needed }) => prop_assert!(needed > bytes.len()),
            Err(_) => {}
        }
    }
}

/// Feeds many random files to recovery: garbage after a valid header,
/// garbage as a whole file, and valid logs with random bytes overwritten.
/// It must return a result (Ok or a clear error), never panic.
#[test]
fn recovery_never_panics_on_garbage() {
    let iterations: u64 = std::env::var("BUSLINE_GARBAGE_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let dir = Path::new("/g");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // A valid log to damage.
    let good = SimStorage::new();
    {
        let log = Log::open(dir, options(&good)).unwrap();
        for i in 0..30u64 {
            rt.block_on(log.append(vec![i as u8; (i * 7 % 90) as usize]))
                .unwrap();
        }
    }
    let good_files: Vec<_> = (0..40u64)
        .filter_map(|b| good.file_bytes(&segment_path(dir, b)).map(|f| (b, f)))
        .collect();
    assert!(good_files.len() > 2);
    let mut rng = SimRng::new(7);
    let (mut ok, mut err) = (0, 0);
    for i in 0..iterations {
        let sim = SimStorage::new();
        match i % 3 {
            0 => {
                let mut f = encode_segment_header(0).to_vec();
                f.extend((0..rng.below(400)).map(|_| rng.next_u64() as u8));
                sim.set_file_bytes(&segment_path(dir, 0), f);
            }
            1 => {
                let f = (0..rng.below(100)).map(|_| rng.next_u64() as u8).collect();
                sim.set_file_bytes(&segment_path(dir, rng.below(3)), f);
            }
            _ => {
                for (b, f) in &good_files {
                    let mut f = f.clone();
                    for _ in 0..=rng.below(3) {
                        let at = rng.below(f.len() as u64) as usize;
                        f[at] = rng.next_u64() as u8;
                    }
                    if rng.below(4) == 0 {
                        f.truncate(rng.below(f.len() as u64 + 1) as usize);
                    }
                    sim.set_file_bytes(&segment_path(dir, *b), f);
                }
            }
        }
        match Log::open(dir, options(&sim)) {
            Ok(log) => {
                ok += 1;
                for r in log.read_from(log.first_offset()).unwrap() {
                    r.unwrap();
                }
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                err += 1;
            }
        }
    }
    println!("garbage: {iterations} files, {ok} opened, {err} rejected with an error");
}
