//! The log-backed bus runs the shared conformance suite, including a restart
//! (the log reopened from disk) in the persistence test.

use std::sync::Arc;
use std::time::Duration;

use busline::conformance::{run, Features, Harness, Probe};
use busline::Bus;
use busline_log::{LogStore, Options};
use futures::future::BoxFuture;

struct LogHarness {
    dir: tempfile::TempDir,
    bus: Bus<Probe>,
}

fn open(dir: &std::path::Path) -> Result<Bus<Probe>, String> {
    let store = LogStore::<Probe>::open(dir, Options::default()).map_err(|e| e.to_string())?;
    let bus = Bus::new();
    bus.persist("conformance.>", Arc::new(store))
        .map_err(|e| e.to_string())?;
    Ok(bus)
}

impl Harness for LogHarness {
    fn publisher(&self) -> Bus<Probe> {
        self.bus.clone()
    }
    fn subscriber(&self) -> Bus<Probe> {
        self.bus.clone()
    }
    fn restart(&mut self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.bus.close();
            self.bus = Bus::new(); // drops the old bus and with it the log handle
                                   // A task of an earlier test may hold the old bus a moment longer.
            let mut last = String::new();
            for _ in 0..100 {
                match open(self.dir.path()) {
                    Ok(bus) => {
                        self.bus = bus;
                        return Ok(());
                    }
                    Err(e) => last = e,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(format!("reopening the log: {last}"))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_backed_bus_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path()).unwrap();
    let mut h = LogHarness { dir, bus };
    let report = run(&mut h, Features::all()).await;
    println!("{report}");
    assert!(report.failed.is_empty(), "{report}");
    assert_eq!(report.passed.len(), 9, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_consumer_resumes_after_restart_at_least_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let bus = open(dir.path()).unwrap();
        for n in 0..10 {
            bus.publish_to(
                "conformance.jobs",
                Probe {
                    publisher: 0,
                    n,
                    body: String::new(),
                },
            )
            .await
            .unwrap();
        }
        let mut c = bus
            .subscriber("conformance.jobs")
            .consumer("worker")
            .from(busline::StartAt::Committed)
            .subscribe()
            .unwrap();
        for _ in 0..4 {
            let e = c.recv().await.unwrap();
            c.commit(&e).await.unwrap();
        }
        // Handled the 5th but "crashed" before committing it.
        let _ = c.recv().await.unwrap();
        bus.close();
    }
    let bus = open(dir.path()).unwrap();
    let mut c = bus
        .subscriber("conformance.jobs")
        .consumer("worker")
        .from(busline::StartAt::Committed)
        .subscribe()
        .unwrap();
    let ns: Vec<u64> = (0..6)
        .map(|_| c.try_recv().unwrap().unwrap().payload.n)
        .collect();
    assert_eq!(
        ns,
        vec![4, 5, 6, 7, 8, 9],
        "resumes at the first uncommitted event"
    );
}

#[test]
fn a_corrupt_record_is_an_error_naming_its_offset() {
    let err = busline_log::event_store::decode::<Probe>(7, b"{not json").unwrap_err();
    assert!(err.to_string().contains("offset 7"), "{err}");
    let err = busline_log::event_store::decode::<Probe>(
        3,
        br#"{"id":"zz","topic":"a","ts_ns":0,"correlation":"00000000000000000000000000000001","payload":{"publisher":0,"n":0,"body":""}}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("field `id`"), "{err}");
}
