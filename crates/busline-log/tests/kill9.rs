//! kill -9 during appends: a child process (this test binary, re-executed)
//! appends in `Persist::Fsync` mode and prints every acknowledged offset with
//! a checksum; the parent kills it with SIGKILL at random moments, reopens the
//! log and checks that every acknowledged record is there, byte for byte.
//!
//! `BUSLINE_CRASH_CYCLES` sets the number of kills (default 50).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use busline_log::sim::SimRng;
use busline_log::{Log, Options};
use rand::Rng;

const CHILD_ENV: &str = "BUSLINE_CRASH_CHILD_DIR";

fn options() -> Options {
    Options {
        segment_bytes: 256 * 1024,
        ..Options::default()
    }
}

/// A payload that checks itself: seed, length, then bytes derived from the
/// seed. A half-written record cannot pass [`check_payload`].
fn make_payload(seed: u64) -> Vec<u8> {
    let mut rng = SimRng::new(seed);
    let len = 1 + rng.below(1000) as usize;
    let mut p = Vec::with_capacity(len + 12);
    p.extend_from_slice(&seed.to_le_bytes());
    p.extend_from_slice(&(len as u32).to_le_bytes());
    p.extend((0..len).map(|_| rng.next_u64() as u8));
    p
}

fn check_payload(p: &[u8]) -> bool {
    p.len() >= 12 && make_payload(u64::from_le_bytes(p[..8].try_into().unwrap())) == p
}

/// The child: appends until killed. Does nothing when run as a normal test.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let log = Log::open(&dir, options()).expect("child open");
        println!("READY");
        let mut tasks = Vec::new();
        for t in 0..4u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut rng = SimRng::new(std::process::id() as u64 * 31 + t);
                loop {
                    let n = 1 + rng.below(if t % 2 == 0 { 1 } else { 40 });
                    let payloads: Vec<Vec<u8>> =
                        (0..n).map(|_| make_payload(rng.next_u64())).collect();
                    let range = log.append_batch(&payloads).await.expect("append");
                    let mut out = String::new();
                    for (o, p) in range.zip(&payloads) {
                        out.push_str(&format!("ACK {o} {:08x}\n", crc32c::crc32c(p)));
                    }
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(out.as_bytes()).unwrap();
                    stdout.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// Reopens the log and checks the records from offset `from` on: dense,
/// whole, and every acknowledged one with its exact bytes. Returns
/// (recovered, lost, whether a torn tail was cut, end of the log).
fn verify(dir: &Path, acked: &BTreeMap<u64, u32>, from: u64) -> (u64, u64, bool, u64) {
    let log = Log::open(dir, options()).expect("reopen after kill");
    let cut = log.recovery().is_some();
    let mut found = BTreeMap::new();
    for (expected, rec) in (from..).zip(log.read_from(from).unwrap()) {
        let rec = rec.expect("every record after recovery is valid");
        assert_eq!(rec.offset, expected, "gap in offsets");
        assert!(
            check_payload(&rec.payload),
            "record {} is half-written",
            rec.offset
        );
        found.insert(rec.offset, crc32c::crc32c(&rec.payload));
    }
    let mut recovered = 0;
    let mut lost = 0;
    for (off, crc) in acked.range(from..) {
        if found.get(off) == Some(crc) {
            recovered += 1;
        } else {
            eprintln!(
                "LOST offset {off}: acked crc {crc:08x}, found {:?}",
                found.get(off)
            );
            lost += 1;
        }
    }
    (recovered, lost, cut, log.committed_end())
}

#[test]
fn kill9_during_appends_loses_no_acknowledged_record() {
    let cycles: u64 = std::env::var("BUSLINE_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let mut acked: BTreeMap<u64, u32> = BTreeMap::new();
    let (mut recovered, mut lost, mut cuts, mut verified) = (0, 0, 0, 0);
    for _ in 0..cycles {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let lines = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.ends_with("READY") {
                    let _ = ready_tx.send(());
                }
                lines.push(line);
            }
            lines
        });
        // Kill at a random moment after the child opened the log (or after
        // a while if it never says so: then the kill hits the open).
        let _ = ready_rx.recv_timeout(Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(rng.random_range(0..40)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in lines.join().unwrap() {
            let mut parts = line.split_whitespace();
            if parts.next() != Some("ACK") {
                continue;
            }
            let (Some(off), Some(crc)) = (parts.next(), parts.next()) else {
                continue;
            };
            let (Ok(off), Ok(crc)) = (off.parse(), u32::from_str_radix(crc, 16)) else {
                continue; // a line cut by the kill
            };
            assert!(acked.insert(off, crc).is_none(), "offset {off} acked twice");
        }
        // Records below `verified` were checked after an earlier kill; a
        // recovery that cut into them would show up in the final check.
        let (_, l, cut, end) = verify(tmp.path(), &acked, verified);
        lost += l;
        cuts += cut as u64;
        verified = end;
    }
    let (r, l, _, _) = verify(tmp.path(), &acked, 0);
    recovered += r;
    lost += l;
    println!(
        "crash test: cycles={cycles} acknowledged={} recovered={recovered} lost={lost} torn_tails_cut={cuts}",
        acked.len()
    );
    assert_eq!(lost, 0);
    assert_eq!(recovered, acked.len() as u64);
}
