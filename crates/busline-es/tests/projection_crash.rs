//! A projection in a child process (this test binary, re-executed) is killed
//! with SIGKILL between applying an event and committing it, and at random
//! points; each restart resumes from its checkpoint with no event missed and
//! none applied twice, checked against a full recomputation from the log.

mod helpers;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command as Proc, Stdio};

use busline_es::{
    AggregateStore, Metadata, Projection, ProjectionOptions, ProjectionRunner, Recorded,
    StoreOptions,
};
use busline_log::Log;
use helpers::{open_store, Account, AccountEvent, Balances, Command};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

const CHILD: &str = "BUSLINE_ES_CRASH_CHILD";

/// [`Balances`] that reports each applied offset on stdout, and stalls
/// forever right after applying the offset in `STALL_AT` (before any commit).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
struct Reporting(Balances);

impl Projection for Reporting {
    const AGGREGATE_TYPE: &'static str = "account";
    type Event = AccountEvent;
    fn apply(&mut self, r: &Recorded<AccountEvent>) {
        self.0.apply(r);
        println!("applied {}", r.offset);
        if std::env::var("STALL_AT").ok().and_then(|s| s.parse().ok()) == Some(r.offset) {
            println!("stalled");
            loop {
                std::thread::park();
            }
        }
    }
}

/// The child: catch up on the log read-only, then exit.
#[test]
fn child_projection_worker() {
    let Ok(dir) = std::env::var(CHILD) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let every: u64 = std::env::var("COMMIT_EVERY").unwrap().parse().unwrap();
    let log = Log::open_read_only(dir.join("log"), helpers::buffered()).unwrap();
    let mut p = ProjectionRunner::<Reporting>::open(
        log,
        dir.join("balances.ckpt"),
        ProjectionOptions::default().commit_every(every),
    )
    .unwrap();
    p.catch_up().unwrap();
    println!("done");
}

enum Mode {
    StallThenKill(u64),
    KillAfter(usize),
    Finish,
}

/// Runs one child; returns whether it finished by itself.
fn run_child(dir: &Path, every: u64, mode: Mode) -> bool {
    let mut cmd = Proc::new(std::env::current_exe().unwrap());
    cmd.args([
        "child_projection_worker",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD, dir)
    .env("COMMIT_EVERY", every.to_string())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    if let Mode::StallThenKill(at) = mode {
        cmd.env("STALL_AT", at.to_string());
    }
    let mut child = cmd.spawn().unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut applied = 0;
    let mut finished = false;
    let mut stalled = false;
    for line in out.lines() {
        let line = line.unwrap();
        if line.starts_with("applied ") {
            applied += 1;
            if matches!(mode, Mode::KillAfter(k) if applied >= k) {
                break;
            }
        } else if line == "stalled" {
            stalled = true;
            break;
        } else if line == "done" {
            finished = true;
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL (a no-op error-free call if it already exited)
    let status = child.wait().unwrap();
    if stalled {
        assert!(!status.success(), "a stalled child only ends by SIGKILL");
    }
    // A child told to die after its last event may have exited first.
    finished || status.success()
}

/// The expected read model over records `[0, upto)`, recomputed from the
/// store's audit trails.
fn recompute(store: &AggregateStore<Account>, upto: u64) -> Balances {
    let mut all: Vec<Recorded<AccountEvent>> = store
        .ids()
        .iter()
        .flat_map(|id| store.history(id).unwrap())
        .filter(|r| r.offset < upto)
        .collect();
    all.sort_by_key(|r| r.offset);
    let mut b = Balances::default();
    for r in &all {
        b.apply(r);
    }
    b
}

/// The checkpoint as a restarted projection sees it.
fn checkpoint(store: &AggregateStore<Account>, dir: &Path) -> (u64, Balances) {
    let p = ProjectionRunner::<Reporting>::open(
        store.log().clone(),
        dir.join("balances.ckpt"),
        ProjectionOptions::default(),
    )
    .unwrap();
    (p.committed(), p.handle().query(|r| r.0.clone()))
}

#[test]
fn projection_killed_at_any_point_resumes_exactly_once() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = open_store(dir, StoreOptions::default());
    let mut rng = StdRng::seed_from_u64(0xB05_11E);
    let mut stalls_hit = 0;
    for cycle in 0..12 {
        // More events arrive between the projection's lives.
        rt.block_on(async {
            for _ in 0..rng.random_range(10..40) {
                let id = format!("acct-{}", rng.random_range(0..3));
                let cmd = if store.version(&id) == 0 {
                    Command::Open(id.clone())
                } else if rng.random_bool(0.2) {
                    Command::Split(vec![1, 2])
                } else {
                    Command::Deposit(rng.random_range(1..100), "t".into())
                };
                store.execute(&id, cmd, Metadata::new()).await.unwrap();
            }
        });
        let end = store.log().next_offset();
        let (before, _) = checkpoint(&store, dir);
        let every = rng.random_range(2..8);
        let mode = match cycle % 3 {
            0 => Mode::StallThenKill(rng.random_range(before..end)),
            1 => Mode::KillAfter(rng.random_range(1..=(end - before) as usize)),
            _ => Mode::Finish,
        };
        let stall = match mode {
            Mode::StallThenKill(at) => Some(at),
            _ => None,
        };
        let finished = run_child(dir, every, mode);
        let (committed, state) = checkpoint(&store, dir);
        assert!(
            committed >= before,
            "cycle {cycle}: the checkpoint went back"
        );
        assert_eq!(
            state,
            recompute(&store, committed),
            "cycle {cycle}: state at offset {committed}"
        );
        assert_eq!(
            state.applied,
            (0..committed).collect::<Vec<_>>(),
            "cycle {cycle}: each offset once"
        );
        if let Some(at) = stall {
            assert!(!finished);
            assert!(
                committed <= at,
                "cycle {cycle}: the stalled event {at} was not committed"
            );
            // Events before the stalled one were applied but not committed yet.
            stalls_hit += usize::from(committed < at);
        }
        if finished {
            assert_eq!(
                committed, end,
                "cycle {cycle}: a finished projection is at the end"
            );
        }
    }
    assert!(
        stalls_hit >= 2,
        "kills with applied-but-uncommitted events: {stalls_hit}"
    );
    // A last, uninterrupted run reaches the end with the full recomputation.
    assert!(run_child(dir, 5, Mode::Finish));
    let end = store.log().next_offset();
    let (committed, state) = checkpoint(&store, dir);
    assert_eq!(committed, end);
    assert_eq!(state, recompute(&store, end));
}
