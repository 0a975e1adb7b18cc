//! The in-memory bus runs the shared conformance suite.

use busline::conformance::{run, Features, MemoryHarness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_bus_passes_the_conformance_suite() {
    let report = run(&mut MemoryHarness::new(), Features::all()).await;
    println!("{report}");
    assert!(report.failed.is_empty(), "{report}");
    assert_eq!(report.skipped.len(), 0);
    assert_eq!(report.passed.len(), 9);
}
