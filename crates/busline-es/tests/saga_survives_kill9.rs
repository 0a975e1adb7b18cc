//! kill -9 while sagas run: a child process (this test binary, re-executed)
//! runs a saga manager and a command handler in a busline runtime; the
//! parent kills it with SIGKILL at random moments, over several cycles,
//! then lets one last child run until every saga finished. From the log
//! the parent checks that every saga started once, emitted each of its
//! commands once (under its stable id) and marked it published, fired its
//! timeout exactly once, and that the handler recorded every emitted
//! command's effect exactly once and nothing else.
//!
//! The command topics are persisted on the bus (a `LogStore`) and the
//! handler is a named consumer that commits after each command, so an
//! emit published just before a kill is still handled after the restart:
//! the outbox gets emits to the bus at least once, the persisted topic
//! keeps them, and the handler's [`Dedup`] makes the effect happen once.
//!
//! `BUSLINE_SAGA_CRASH_CYCLES` sets the number of kills (default 12).

mod saga_support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use busline::{Backoff, BoxError, Bus, Context, EventId, Message, Module, Runtime, StartAt};
use busline_es::saga::{emit_id, Dedup, SagaManager};
use busline_log::{Log, LogStore};
use rand::Rng;
use saga_support::{Job, Msg};
use serde::{Deserialize, Serialize};

const CHILD_ENV: &str = "BUSLINE_SAGA_CRASH_DIR";
const JOBS: u64 = 16;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Effect {
    kind: String,
    job: String,
}

/// Handles `job.work` and `job.finalize` once per command id, as a named
/// consumer of the persisted topics (resuming after its last commit);
/// answers work with `Done` (under an id derived from the command's, so a
/// repeated answer is a repeat to the saga too).
#[derive(Clone)]
struct Worker {
    dedup: Dedup,
}

impl Module<Msg> for Worker {
    fn name(&self) -> &str {
        "worker"
    }

    async fn run(&mut self, ctx: Context<Msg>) -> Result<(), BoxError> {
        let mut cmds = ctx
            .subscriber("job.*")
            .consumer("worker")
            .from(StartAt::Committed)
            .subscribe()?;
        loop {
            let env = tokio::select! {
                _ = ctx.shutdown_requested() => return Ok(()),
                env = cmds.recv() => env?,
            };
            let (kind, job) = match &env.payload {
                Msg::Work { job } => ("work", job.clone()),
                Msg::Finalize { job, .. } => ("finalize", job.clone()),
                _ => {
                    cmds.commit(&env).await?;
                    continue;
                }
            };
            let effect = Effect {
                kind: kind.into(),
                job: job.clone(),
            };
            self.dedup.once(env.id, &effect).await?;
            if kind == "work" {
                let id = EventId::from_u128(env.id.as_u128() ^ 1);
                let done = Message::new(Msg::Done { job }).topic("job.in.done").id(id);
                ctx.send(done).await?;
            }
            cmds.commit(&env).await?;
        }
    }
}

fn job(i: u64) -> String {
    format!("j{i}")
}

/// The child: runs the sagas until they are all done and their commands
/// handled (then prints DONE and exits) or it is killed. Does nothing when run as a normal test.
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
        let dir = Path::new(&dir);
        let sagas = Log::open(dir.join("sagas"), Default::default()).expect("open sagas");
        let effects = Log::open(dir.join("effects"), Default::default()).expect("open effects");
        let manager = SagaManager::<Job>::open(sagas).expect("open manager");
        let dedup = Dedup::open(effects).expect("open dedup");
        let commands =
            LogStore::<Msg>::open(dir.join("bus"), Default::default()).expect("open bus log");
        let bus: Bus<Msg> = Bus::new();
        bus.persist("job.*", Arc::new(commands)).expect("persist");
        let mut runtime = Runtime::new(bus.clone()).handle_signals(false);
        runtime
            .add(manager.clone())
            .backoff(Backoff::fixed(Duration::from_millis(5)));
        runtime.add(Worker {
            dedup: dedup.clone(),
        });
        tokio::spawn(runtime.run());
        manager.ready().await;
        println!("READY");
        // Every run asks for every job again, under the same ids: a job
        // already started ignores it.
        for i in 0..JOBS {
            let msg = Msg::start(&job(i), 100 + (i * 53) % 400);
            let m = Message::new(msg)
                .topic("job.in.start")
                .id(EventId::from_u128(1_000 + i as u128));
            bus.send(m).await.expect("publish start");
        }
        loop {
            let mut done = true;
            for i in 0..JOBS {
                let saga_done = manager
                    .inspect(&job(i))
                    .expect("inspect")
                    .is_some_and(|s| s.finished && s.unpublished == 0);
                let handled = dedup.contains(emit_id("job", &job(i), 0)).await
                    && dedup.contains(emit_id("job", &job(i), 1)).await;
                done &= saga_done && handled;
            }
            if done {
                let mut out = std::io::stdout().lock();
                writeln!(out, "DONE").unwrap();
                out.flush().unwrap();
                std::process::exit(0);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// Runs one child; kills it `kill_after` after it is ready, or waits for DONE.
fn run_child(exe: &Path, dir: &Path, kill_after: Option<Duration>) -> bool {
    let mut child = Command::new(exe)
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.ends_with("READY") || line.ends_with("DONE") {
                let _ = tx.send(line);
            }
        }
    });
    let done = match kill_after {
        Some(after) => {
            let _ = rx.recv_timeout(Duration::from_secs(10));
            std::thread::sleep(after);
            child.kill().unwrap(); // SIGKILL
            false
        }
        None => {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let mut done = false;
            while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
                match rx.recv_timeout(left) {
                    Ok(line) if line.ends_with("DONE") => {
                        done = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let _ = child.kill();
            done
        }
    };
    child.wait().unwrap();
    lines.join().unwrap();
    done
}

#[test]
fn kill9_while_sagas_run_loses_and_repeats_nothing() {
    let cycles: u64 = std::env::var("BUSLINE_SAGA_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    for _ in 0..cycles {
        let after = Duration::from_millis(rng.random_range(0..500));
        run_child(&exe, tmp.path(), Some(after));
    }
    assert!(
        run_child(&exe, tmp.path(), None),
        "the last child did not finish the sagas"
    );

    let sagas = Log::open(tmp.path().join("sagas"), Default::default()).unwrap();
    let manager = SagaManager::<Job>::open(sagas).unwrap();
    let mut expected = BTreeSet::new();
    for i in 0..JOBS {
        let s = manager.inspect(&job(i)).unwrap().expect("saga exists");
        assert!(s.finished, "{}: {s:?}", job(i));
        assert_eq!(s.state.started, 1, "{}: started twice", job(i));
        assert_eq!(
            (
                s.state.work_emitted,
                s.state.finalize_emitted,
                s.emitted,
                s.unpublished
            ),
            (1, 1, 2, 0),
            "{}: emits",
            job(i)
        );
        assert_eq!(
            (s.state.fired, s.timeouts_fired, s.pending_timeouts),
            (1, 1, 0),
            "{}: timeout",
            job(i)
        );
        expected.insert((emit_id("job", &job(i), 0).to_string(), "work", job(i)));
        expected.insert((emit_id("job", &job(i), 1).to_string(), "finalize", job(i)));
    }

    let effects =
        Dedup::open(Log::open(tmp.path().join("effects"), Default::default()).unwrap()).unwrap();
    let mut seen = BTreeSet::new();
    for (id, e) in effects.effects::<Effect>().unwrap() {
        assert!(
            seen.insert((e.kind.clone(), e.job.clone())),
            "effect {e:?} recorded twice"
        );
        let key = (id.clone(), e.kind.as_str(), e.job.clone());
        assert!(
            expected.contains(&key),
            "effect {e:?} under id {id} was not emitted by a saga"
        );
    }
    println!(
        "saga crash test: cycles={cycles} sagas={JOBS} emits={} effects={}",
        expected.len(),
        seen.len()
    );
    assert_eq!(
        seen.len(),
        expected.len(),
        "an emitted command's effect is missing"
    );
}
