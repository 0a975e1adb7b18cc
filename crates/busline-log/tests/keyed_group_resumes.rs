//! A keyed queue group on the log-backed bus resumes after a restart from
//! the group's committed position: every key's events again in order, none
//! missing, only the uncommitted ones seen twice.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use busline::StartAt;
use busline::{Bus, Subscription};
use busline_log::{LogStore, Options};

/// An event: its key, and its number among that key's events.
type Step = (u32, u32);

const KEYS: u32 = 20;

fn open(dir: &Path) -> Bus<Step> {
    // (The closed bus's last handles may go a moment later.)
    let store = (0..100)
        .find_map(|_| {
            LogStore::<Step>::open(dir, Options::default())
                .inspect_err(|_| std::thread::sleep(Duration::from_millis(20)))
                .ok()
        })
        .expect("the log reopens");
    let bus = Bus::new();
    bus.persist("orders.>", Arc::new(store)).unwrap();
    bus
}

fn member(bus: &Bus<Step>) -> Subscription<Step> {
    bus.subscriber("orders.>")
        .queue("billing")
        .key(|e| e.payload.0)
        .consumer("billing")
        .from(StartAt::Committed)
        .subscribe()
        .unwrap()
}

async fn publish(bus: &Bus<Step>, steps: std::ops::Range<u32>) {
    for step in steps {
        for key in 0..KEYS {
            bus.publish_to("orders.step", (key, step)).await.unwrap();
        }
    }
}

/// Members take events until `total` were handled between them; each
/// commits those `commit` accepts. Returns what was handled, in order.
async fn handle(
    members: Vec<Subscription<Step>>,
    total: usize,
    commit: fn(Step) -> bool,
) -> Vec<Step> {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks: Vec<_> = members
        .into_iter()
        .map(|mut sub| {
            let seen = seen.clone();
            tokio::spawn(async move {
                while seen.lock().unwrap().len() < total {
                    let next = tokio::time::timeout(Duration::from_millis(200), sub.recv());
                    let Ok(Ok(e)) = next.await else { continue };
                    seen.lock().unwrap().push(e.payload);
                    if commit(e.payload) {
                        sub.commit(&e).await.unwrap();
                    }
                }
            })
        })
        .collect();
    let all = async {
        for t in tasks {
            t.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .unwrap_or_else(|_| panic!("only {} of {total} handled", seen.lock().unwrap().len()));
    let seen = seen.lock().unwrap().clone();
    seen
}

/// Each key's steps in the order the group handled them.
fn per_key(seen: &[Step]) -> HashMap<u32, Vec<u32>> {
    let mut m: HashMap<u32, Vec<u32>> = HashMap::new();
    for &(k, s) in seen {
        m.entry(k).or_default().push(s);
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_group_resumes_from_its_committed_position_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();

    // Three members handle steps 0..30 of every key; steps from 20 on are
    // handled but never committed (the process dies before it commits).
    let bus = open(dir.path());
    let members = (0..3).map(|_| member(&bus)).collect();
    publish(&bus, 0..30).await;
    let first = handle(members, (KEYS * 30) as usize, |(_, step)| step < 20).await;
    for (key, steps) in per_key(&first) {
        assert_eq!(
            steps,
            (0..30).collect::<Vec<_>>(),
            "key {key} before the restart"
        );
    }
    bus.close();
    drop(bus);

    // Reopened with two members: the group replays from its position (the
    // first uncommitted step, 20), then goes live (steps 30..40), every
    // key in order.
    let bus = open(dir.path());
    let members = (0..2).map(|_| member(&bus)).collect();
    publish(&bus, 30..40).await;
    let second = handle(members, (KEYS * 20) as usize, |_| true).await;
    let second = per_key(&second);
    assert_eq!(second.len(), KEYS as usize);
    for (key, steps) in second {
        assert_eq!(
            steps,
            (20..40).collect::<Vec<_>>(),
            "key {key} after the restart"
        );
    }

    // Everything committed: a third start replays nothing.
    bus.close();
    drop(bus);
    let bus = open(dir.path());
    let mut late = member(&bus);
    let nothing = tokio::time::timeout(Duration::from_millis(300), late.recv()).await;
    assert!(nothing.is_err(), "replayed again: {nothing:?}");
}

/// A member joining a group that was made without a store is told so.
#[tokio::test]
async fn a_member_with_a_store_cannot_join_a_group_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path());
    let _plain = bus
        .subscriber("orders.>")
        .queue("billing")
        .key(|e| e.payload.0)
        .subscribe()
        .unwrap();
    let err = bus
        .subscriber("orders.>")
        .queue("billing")
        .key(|e| e.payload.0)
        .consumer("billing")
        .subscribe()
        .unwrap_err();
    assert!(err.to_string().contains("without a store"), "{err}");
}
