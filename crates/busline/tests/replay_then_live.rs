//! Replay-then-live: no gap and no duplicate at the switch-over, even while
//! publishers keep publishing.

use std::sync::Arc;
use std::time::Duration;

use busline::MemoryStore;
use busline::{Bus, PublishError, StartAt};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn replay_then_live_has_no_gap_and_no_duplicate(
        per_publisher in 200u32..2000,
        join_after in 0u32..2000,
        capacity in 1usize..64,
        publishers in 1u8..4,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let bus = Bus::<(u8, u32)>::new();
            bus.persist("t.>", Arc::new(MemoryStore::new())).unwrap();
            // Keeps the publishers going while the late subscriber joins.
            let _live = bus.subscriber("t.>").lossy(8).subscribe().unwrap();
            let mut tasks = Vec::new();
            for p in 0..publishers {
                let bus = bus.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..per_publisher {
                        bus.publish_to(&format!("t.{p}"), (p, i)).await.unwrap();
                        if i % 97 == 0 { tokio::task::yield_now().await; }
                    }
                }));
            }
            // Join somewhere in the middle of the stream.
            while bus.stats().published < join_after.min(per_publisher) as u64 {
                tokio::task::yield_now().await;
            }
            let mut late = bus.subscriber("t.>").lossless(capacity).from(StartAt::Beginning).subscribe().unwrap();
            let total = per_publisher as usize * publishers as usize;
            let mut next = vec![0u32; publishers as usize];
            let mut offsets = Vec::with_capacity(total);
            for _ in 0..total {
                let e = tokio::time::timeout(Duration::from_secs(20), late.recv()).await
                    .expect("an event is missing (gap)").unwrap();
                let (p, i) = e.payload;
                prop_assert_eq!(i, next[p as usize], "publisher {} out of order or duplicated", p);
                next[p as usize] += 1;
                offsets.push(e.offset().unwrap());
            }
            // A publisher may still wait for room in `late`'s ring, full of
            // live copies of events it already got from the store (they are
            // skipped as it reads): keep reading while the publishers finish.
            // Anything `recv` returns now is an event too many.
            let mut done = std::pin::pin!(async { for t in tasks { t.await.unwrap(); } });
            loop {
                tokio::select! {
                    _ = &mut done => break,
                    r = late.recv() => prop_assert!(false, "an event after the last one: {:?}", r.map(|e| e.payload)),
                }
            }
            prop_assert!(late.try_recv().unwrap().is_none(), "a duplicate after the last event");
            offsets.sort_unstable();
            offsets.dedup();
            prop_assert_eq!(offsets.len(), total);
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn start_at_offset_and_time() {
    let bus = Bus::<u32>::new();
    bus.persist("m.>", Arc::new(MemoryStore::new())).unwrap();
    for i in 0..5 {
        bus.publish_to("m.a", i).await.unwrap();
    }
    let mut s = bus
        .subscriber("m.>")
        .from(StartAt::Offset(3))
        .subscribe()
        .unwrap();
    assert_eq!(s.recv().await.unwrap().payload, 3);
    assert_eq!(s.recv().await.unwrap().payload, 4);
    assert!(s.try_recv().unwrap().is_none());
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    let mut s = bus
        .subscriber("m.>")
        .from(StartAt::Time(later))
        .subscribe()
        .unwrap();
    assert!(s.try_recv().unwrap().is_none());
    let mut s = bus
        .subscriber("m.>")
        .from(StartAt::Time(std::time::UNIX_EPOCH))
        .subscribe()
        .unwrap();
    assert_eq!(s.recv().await.unwrap().payload, 0);
}

#[tokio::test]
async fn replay_respects_pattern_and_filter() {
    let bus = Bus::<u32>::new();
    bus.persist(">", Arc::new(MemoryStore::new())).unwrap();
    for i in 0..10 {
        bus.publish_to(if i % 2 == 0 { "a.x" } else { "b.x" }, i)
            .await
            .unwrap();
    }
    let mut s = bus
        .subscriber("a.*")
        .filter(|e| e.payload > 2)
        .from(StartAt::Beginning)
        .subscribe()
        .unwrap();
    let mut got = Vec::new();
    while let Some(e) = s.try_recv().unwrap() {
        got.push(e.payload);
    }
    assert_eq!(got, vec![4, 6, 8]);
}

#[tokio::test]
async fn misuse_is_a_clear_error() {
    let bus = Bus::<u32>::new();
    let err = bus
        .subscriber("a")
        .from(StartAt::Beginning)
        .subscribe()
        .unwrap_err();
    assert!(err.to_string().contains("needs a durable store"), "{err}");
    bus.persist("a", Arc::new(MemoryStore::new())).unwrap();
    let err = bus
        .subscriber("a")
        .from(StartAt::Committed)
        .subscribe()
        .unwrap_err();
    assert!(err.to_string().contains("consumer name"), "{err}");
    let s = bus.subscribe("a").unwrap();
    bus.publish_to("a", 1).await.unwrap();
    let mut s2 = bus
        .subscriber("a")
        .from(StartAt::Beginning)
        .subscribe()
        .unwrap();
    let e = s2.recv().await.unwrap();
    assert!(s
        .commit(&e)
        .await
        .unwrap_err()
        .to_string()
        .contains(".consumer(name)"));
    match bus.try_publish_to("a", 2) {
        Err(PublishError::Store { event, error }) => {
            assert_eq!(event, 2);
            assert!(error.to_string().contains("use publish"));
        }
        other => panic!("{other:?}"),
    }
}
