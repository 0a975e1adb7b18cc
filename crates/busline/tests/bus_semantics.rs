//! Tests that try to break the bus: loss, duplication, ordering, closing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use busline::{Bus, Message, PublishError, RecvError, RequestError, SubscribeError};
use proptest::prelude::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// For a lossy subscriber, received + reported lag == published, exactly,
    /// whatever the interleaving of publishes and receives.
    #[test]
    fn lossy_received_plus_lag_equals_published(
        capacity in 1usize..40,
        ops in proptest::collection::vec(0u8..4, 1..600),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let bus = Bus::<u64>::new();
            let mut sub = bus.subscriber("t").lossy(capacity).subscribe().unwrap();
            let (mut published, mut received, mut lag) = (0u64, 0u64, 0u64);
            let mut last_seen: Option<u64> = None;
            for op in ops {
                if op < 3 {
                    bus.try_publish_to("t", published).unwrap();
                    published += 1;
                } else {
                    match sub.try_recv() {
                        Ok(Some(e)) => {
                            // Order kept, and no event comes back twice.
                            if let Some(l) = last_seen { prop_assert!(e.payload > l); }
                            last_seen = Some(e.payload);
                            received += 1;
                        }
                        Ok(None) => {}
                        Err(RecvError::Lagged(n)) => lag += n,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            drop(bus);
            loop {
                match sub.recv().await {
                    Ok(e) => {
                        if let Some(l) = last_seen { prop_assert!(e.payload > l); }
                        last_seen = Some(e.payload);
                        received += 1;
                    }
                    Err(RecvError::Lagged(n)) => lag += n,
                    Err(RecvError::Closed) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            prop_assert_eq!(received + lag, published);
            Ok(())
        })?;
    }
}

/// A lossless subscriber that stalls again and again loses nothing over
/// 1,000,000 events, while a lossy one beside it keeps running.
#[test]
fn stalled_lossless_loses_nothing_over_a_million_events() {
    const N: u64 = 1_000_000;
    rt().block_on(async {
        let bus = Bus::<u64>::new();
        let mut lossless = bus
            .subscriber("m.>")
            .lossless(256)
            .name("slow")
            .subscribe()
            .unwrap();
        let mut lossy = bus
            .subscriber("m.*")
            .lossy(64)
            .name("fast")
            .subscribe()
            .unwrap();
        let slow = tokio::spawn(async move {
            let mut next = 0u64;
            loop {
                match lossless.recv().await {
                    Ok(e) => {
                        assert_eq!(e.payload, next, "lossless order or loss");
                        next += 1;
                        if next % 100_000 == 0 {
                            // Stall: the publisher must wait, not drop.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    Err(RecvError::Closed) => break,
                    Err(e) => panic!("lossless subscriber got {e}"),
                }
            }
            next
        });
        let fast = tokio::spawn(async move {
            let (mut got, mut lag, mut last) = (0u64, 0u64, None);
            loop {
                match lossy.recv().await {
                    Ok(e) => {
                        assert!(last.is_none_or(|l| e.payload > l));
                        last = Some(e.payload);
                        got += 1;
                    }
                    Err(RecvError::Lagged(n)) => lag += n,
                    Err(RecvError::Closed) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            (got, lag)
        });
        let stats_bus = bus.clone();
        let publisher = tokio::spawn(async move {
            for i in 0..N {
                bus.publish_to("m.x", i).await.unwrap();
            }
        });
        publisher.await.unwrap();
        let stats = stats_bus.stats();
        drop(stats_bus);
        assert_eq!(slow.await.unwrap(), N);
        let (got, lag) = fast.await.unwrap();
        assert_eq!(got + lag, N);
        assert_eq!(stats.published, N);
        let slow = stats.subscriber("slow").unwrap();
        assert_eq!(slow.delivered, N);
        assert_eq!(slow.dropped, 0);
        assert!(
            slow.blocked > Duration::ZERO,
            "the publisher waited on the stalled subscriber"
        );
        assert_eq!(stats.subscriber("fast").unwrap().dropped, lag);
    });
}

/// Queue groups: each event exactly once across members while members come and go.
#[test]
fn queue_group_delivers_each_event_once_under_churn() {
    const N: u64 = 20_000;
    rt().block_on(async {
        let bus = Bus::<u64>::new();
        // One member stays for the whole run so the group always exists.
        let anchor = bus
            .subscriber("jobs.*")
            .queue("workers")
            .capacity(64)
            .subscribe()
            .unwrap();
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for w in 0..6u64 {
            let bus = bus.clone();
            let seen = seen.clone();
            tasks.push(tokio::spawn(async move {
                // Join, take a few, leave; again and again.
                for round in 0..40u64 {
                    let mut m = bus
                        .subscriber("jobs.*")
                        .queue("workers")
                        .subscribe()
                        .unwrap();
                    let take = 1 + (w * 7 + round * 3) % 25;
                    for _ in 0..take {
                        match tokio::time::timeout(Duration::from_millis(50), m.recv()).await {
                            Ok(Ok(e)) => seen.lock().push(e.payload),
                            Ok(Err(RecvError::Closed)) => return,
                            Ok(Err(e)) => panic!("{e}"),
                            Err(_) => break,
                        }
                    }
                    drop(m);
                    tokio::task::yield_now().await;
                }
            }));
        }
        let publisher = {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in 0..N {
                    bus.publish_to("jobs.a", i).await.unwrap();
                }
            })
        };
        let mut anchor = anchor;
        let seen2 = seen.clone();
        let drainer = tokio::spawn(async move {
            while let Ok(e) = anchor.recv().await {
                seen2.lock().push(e.payload);
            }
        });
        publisher.await.unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        drop(bus);
        drainer.await.unwrap();
        let seen = seen.lock();
        let unique: HashSet<u64> = seen.iter().copied().collect();
        assert_eq!(
            seen.len() as u64,
            N,
            "some event was delivered twice or lost"
        );
        assert_eq!(unique.len() as u64, N);
    });
}

#[tokio::test(start_paused = true)]
async fn request_times_out_in_virtual_time() {
    let bus = Bus::<u32>::new();
    let _silent = bus.subscribe("svc.slow").unwrap();
    let start = tokio::time::Instant::now();
    let err = bus
        .request("svc.slow", 1, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RequestError::Timeout {
            topic: "svc.slow".into(),
            timeout: Duration::from_secs(30)
        }
    );
    assert_eq!(start.elapsed(), Duration::from_secs(30));
}

/// A reply goes to its request's inbox and carries its lineage: caused by
/// the request, in the conversation the request started; `reply` and
/// `reply_msg` make the same envelope.
#[tokio::test]
async fn a_reply_is_caused_by_its_request_and_goes_to_its_inbox() {
    let bus = Bus::<u32>::new();
    let mut svc = bus.subscribe("svc.>").unwrap();
    let b = bus.clone();
    let responder = tokio::spawn(async move {
        let mut seen = Vec::new();
        for with_msg in [false, true] {
            let req = svc.recv().await.unwrap();
            let inbox = req.reply_to().cloned().unwrap();
            let answer = req.payload * 2;
            if with_msg {
                b.reply_msg(&req, Message::new(answer)).await.unwrap();
            } else {
                b.reply(&req, answer).await.unwrap();
            }
            seen.push((req.id, req.correlation_id, inbox));
        }
        seen
    });
    let mut replies = Vec::new();
    for n in [21, 5] {
        let reply = bus.request("svc.double", n, Duration::from_secs(5));
        replies.push(reply.await.unwrap());
    }
    let seen = responder.await.unwrap();
    for ((reply, (id, correlation, inbox)), want) in replies.iter().zip(seen).zip([42, 10]) {
        assert_eq!(reply.payload, want);
        assert_eq!(correlation, id, "a request starts its own conversation");
        assert_eq!(reply.causation_id(), Some(id));
        assert_eq!(reply.correlation_id, correlation);
        assert_eq!(reply.topic, inbox);
        assert!(inbox.as_str().starts_with("_INBOX."), "{inbox}");
        assert!(reply.source.is_none());
        assert!(reply.reply_to().is_none());
    }
}

#[tokio::test(start_paused = true)]
async fn request_answered_before_timeout_and_late_reply_is_refused() {
    let bus = Bus::<u32>::new();
    let mut svc = bus.subscribe("svc.echo").unwrap();
    let b = bus.clone();
    let responder = tokio::spawn(async move {
        let first = svc.recv().await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        b.reply(&first, first.payload + 1).await.unwrap();
        let second = svc.recv().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        // The requester gave up at 5 s: the reply is refused, not lost silently.
        b.reply(&second, 0).await.unwrap_err()
    });
    let r = bus
        .request("svc.echo", 41, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r.payload, 42);
    assert!(r.causation_id().is_some());
    let err = bus
        .request("svc.echo", 1, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::Timeout { .. }));
    let late = responder.await.unwrap();
    assert!(late.to_string().contains("gone"), "{late}");
}

#[tokio::test]
async fn no_responders_is_immediate() {
    let bus = Bus::<u32>::new();
    let err = bus
        .request("nobody.home", 1, Duration::from_secs(3600))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RequestError::NoResponders {
            topic: "nobody.home".into()
        }
    );
}

#[tokio::test]
async fn per_publisher_order_holds_with_concurrent_publishers() {
    let bus = Bus::<(u8, u32)>::new();
    let mut sub = bus.subscriber("p.*").lossless(16).subscribe().unwrap();
    let mut pubs = Vec::new();
    for p in 0..4u8 {
        let bus = bus.clone();
        pubs.push(tokio::spawn(async move {
            for i in 0..5_000u32 {
                bus.publish_to(&format!("p.{p}"), (p, i)).await.unwrap();
            }
        }));
    }
    let mut next = [0u32; 4];
    for _ in 0..20_000 {
        let e = sub.recv().await.unwrap();
        let (p, i) = e.payload;
        assert_eq!(i, next[p as usize], "publisher {p} out of order");
        next[p as usize] += 1;
    }
    for p in pubs {
        p.await.unwrap();
    }
}

#[tokio::test]
async fn dropping_a_full_subscriber_releases_a_waiting_publisher() {
    let bus = Bus::<u32>::new();
    let sub = bus.subscriber("x").lossless(1).subscribe().unwrap();
    bus.publish_to("x", 0).await.unwrap();
    let b = bus.clone();
    let waiting = tokio::spawn(async move { b.publish_to("x", 1).await });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    drop(sub);
    let r = waiting.await.unwrap().unwrap();
    assert_eq!(r.subscribers, 0);
    assert_eq!(bus.stats().discarded, 1, "the unreceived event is counted");
}

#[tokio::test]
async fn cancelled_publish_delivers_to_no_one() {
    let bus = Bus::<u32>::new();
    let mut full = bus.subscriber("x").lossless(1).subscribe().unwrap();
    let mut other = bus.subscriber("x").lossy(8).subscribe().unwrap();
    bus.publish_to("x", 0).await.unwrap();
    // Times out while waiting for room: the future is dropped.
    let r = tokio::time::timeout(Duration::from_millis(20), bus.publish_to("x", 1)).await;
    assert!(r.is_err());
    assert_eq!(full.recv().await.unwrap().payload, 0);
    assert_eq!(other.recv().await.unwrap().payload, 0);
    assert!(
        other.try_recv().unwrap().is_none(),
        "all or nothing: no partial delivery"
    );
    assert_eq!(bus.stats().cancelled, 1);
}

#[tokio::test]
async fn try_publish_full_names_the_subscriber_and_returns_the_event() {
    let bus = Bus::<String>::new();
    let _a = bus.subscriber("x").lossy(1).subscribe().unwrap();
    let _b = bus
        .subscriber("x")
        .lossless(1)
        .name("archive")
        .subscribe()
        .unwrap();
    bus.try_publish_to("x", "one".into()).unwrap();
    let err = bus.try_publish_to("x", "two".into()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not published on `x`: subscriber `archive` is full (lossless); no subscriber received it"
    );
    assert_eq!(err.into_event(), "two");
}

#[tokio::test]
async fn invalid_topics_are_errors_that_hand_the_event_back() {
    let bus = Bus::<u32>::new();
    let err = bus.publish_to("a..b", 7).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "not published: invalid topic `a..b`: token 2 is empty"
    );
    assert!(matches!(err, PublishError::InvalidTopic { event: 7, .. }));
    let err = bus.subscribe("a.>.b").unwrap_err();
    assert!(err
        .to_string()
        .contains("`>` is only allowed as the last token"));
    let err = bus.send(Message::new(1)).await.unwrap_err();
    assert!(err.to_string().contains("it is empty"), "{err}");
}

#[tokio::test]
async fn subscribers_come_and_go_routes_follow() {
    let bus = Bus::<u32>::new();
    assert_eq!(bus.publish_to("a.b", 0).await.unwrap().subscribers, 0);
    let mut s1 = bus.subscribe("a.*").unwrap();
    assert_eq!(bus.publish_to("a.b", 1).await.unwrap().subscribers, 1);
    let s2 = bus.subscribe("a.>").unwrap();
    assert_eq!(bus.publish_to("a.b", 2).await.unwrap().subscribers, 2);
    drop(s2);
    assert_eq!(bus.publish_to("a.b", 3).await.unwrap().subscribers, 1);
    let got: Vec<u32> = (0..3)
        .map(|_| s1.try_recv().unwrap().unwrap().payload)
        .collect();
    assert_eq!(got, vec![1, 2, 3]);
    assert_eq!(bus.stats().unrouted, 1);
}

#[tokio::test]
async fn one_envelope_shared_by_sixteen_subscribers() {
    let bus = Bus::<Vec<u8>>::new();
    let mut subs: Vec<_> = (0..16).map(|_| bus.subscribe("big").unwrap()).collect();
    bus.publish_to("big", vec![0u8; 1 << 20]).await.unwrap();
    let first = subs[0].recv().await.unwrap();
    for s in &mut subs[1..] {
        assert!(Arc::ptr_eq(&first, &s.recv().await.unwrap()));
    }
}

#[tokio::test]
async fn filters_run_on_top_of_the_pattern_and_are_counted() {
    let bus = Bus::<u32>::new();
    let mut even = bus
        .subscriber("n.>")
        .filter(|e| e.payload % 2 == 0)
        .subscribe()
        .unwrap();
    for i in 0..10 {
        bus.publish_to("n.x", i).await.unwrap();
    }
    drop(bus);
    let mut got = Vec::new();
    while let Ok(e) = even.recv().await {
        got.push(e.payload);
    }
    assert_eq!(got, vec![0, 2, 4, 6, 8]);
    assert_eq!(even.stats().filtered, 5);
}

/// Each subscriber's filter decides for it alone, wherever on the route
/// the refusing subscriber is (first, between, last) and when no filter
/// refuses: every other subscriber still gets the event, and `filtered`
/// counts exactly the refusals.
#[tokio::test]
async fn each_filter_refuses_for_its_own_subscriber_only() {
    let bus = Bus::<u32>::new();
    let mut all = bus.subscribe("f").unwrap();
    let mut picky: Vec<_> = (0..4u32)
        .map(|k| {
            bus.subscriber("f")
                .filter(move |e| e.payload != k)
                .subscribe()
                .unwrap()
        })
        .collect();
    for i in 0..8 {
        let r = bus.publish_to("f", i).await.unwrap();
        assert_eq!(r.subscribers, if i < 4 { 4 } else { 5 }, "event {i}");
    }
    drop(bus);
    let mut got = Vec::new();
    while let Ok(e) = all.recv().await {
        got.push(e.payload);
    }
    assert_eq!(got, (0..8).collect::<Vec<_>>());
    for (k, s) in (0..4u32).zip(&mut picky) {
        let mut got = Vec::new();
        while let Ok(e) = s.recv().await {
            got.push(e.payload);
        }
        let want: Vec<u32> = (0..8).filter(|&i| i != k).collect();
        assert_eq!(got, want, "subscriber refusing {k}");
        assert_eq!(s.stats().filtered, 1, "subscriber refusing {k}");
    }
}

#[tokio::test]
async fn closing_the_bus_ends_streams_after_draining() {
    use futures::StreamExt;
    let bus = Bus::<u32>::new();
    let sub = bus.subscribe("s").unwrap();
    for i in 0..3 {
        bus.publish_to("s", i).await.unwrap();
    }
    bus.close();
    assert!(matches!(
        bus.publish_to("s", 9).await,
        Err(PublishError::Closed { event: 9 })
    ));
    assert!(bus.subscribe("s").is_err());
    let got: Vec<u32> = sub.map(|r| r.unwrap().payload).collect().await;
    assert_eq!(got, vec![0, 1, 2]);
}

#[tokio::test]
async fn backpressure_signal_has_hysteresis() {
    let bus = Bus::<u32>::new();
    let mut sub = bus
        .subscriber("w")
        .lossless(10)
        .watermarks(8, 2)
        .subscribe()
        .unwrap();
    let mut bp = bus.backpressure();
    for i in 0..8 {
        assert!(!bp.is_high(), "raised early at {i}");
        bus.try_publish_to("w", i).unwrap();
    }
    assert!(bp.is_high());
    // Receiving some brings the backlog below high but not to low: still raised.
    for _ in 0..4 {
        sub.try_recv().unwrap().unwrap();
    }
    assert_eq!(sub.len(), 4);
    assert!(bp.is_high());
    // Capacity still counts what the subscriber holds: it is a hard bound.
    let mut next = 8;
    while bus.try_publish_to("w", next).is_ok() {
        next += 1;
        assert!(sub.len() <= 10, "capacity exceeded: {}", sub.len());
    }
    assert!(next >= 10, "room for at least what was received");
    let mut got = Vec::new();
    while let Some(e) = sub.try_recv().unwrap() {
        got.push(e.payload);
    }
    assert_eq!(got, (4..next).collect::<Vec<_>>());
    assert!(!bp.is_high(), "drained to the low watermark");
    bp.wait_low().await;
    assert_eq!(sub.stats().peak, 10);
}

#[cfg(feature = "metrics")]
#[tokio::test]
async fn stats_export_through_the_metrics_facade() {
    let bus = Bus::<u32>::new();
    let mut s = bus
        .subscriber("m")
        .lossy(2)
        .name("dash")
        .subscribe()
        .unwrap();
    for i in 0..5 {
        bus.publish_to("m", i).await.unwrap();
    }
    assert_eq!(s.recv().await.unwrap_err(), RecvError::Lagged(3));
    let stats = bus.stats();
    assert_eq!(stats.published, 5);
    assert_eq!(stats.dropped, 3);
    let d = stats.subscriber("dash").unwrap();
    assert_eq!((d.delivered, d.dropped, d.queued), (5, 3, 2));
    // No recorder installed: exporting is a no-op and must not panic.
    stats.export();
}

// ----- subscribers sharing a ring ---------------------------------------------
//
// Unfiltered lossless or lossy subscribers with the same pattern, policy,
// capacity and watermarks read one ring at their own cursors. These tests
// check that sharing changes nothing a subscriber can observe.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Lossy members of one ring, joining and leaving at any time, each see
    /// exactly received + reported lag == events published since they joined,
    /// in order, and their `dropped` counter equals the lag reported to them.
    #[test]
    fn ring_members_each_account_for_every_event(
        capacity in 1usize..24,
        ops in proptest::collection::vec((0u8..8, 0usize..4), 1..500),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let bus = Bus::<u64>::new();
            // (subscription, published when it joined, received, lag, last seen)
            type Slot = Option<(busline::Subscription<u64>, u64, u64, u64, Option<u64>)>;
            let mut members: Vec<Slot> = (0..4).map(|_| None).collect();
            let mut published = 0u64;
            let check = |m: &(busline::Subscription<u64>, u64, u64, u64, Option<u64>),
                         published: u64| -> Result<(), TestCaseError> {
                let (sub, joined, received, lag, _) = m;
                let waiting = sub.len() as u64;
                // `dropped` counts the lost events reported so far and those
                // the next receive will report.
                let st = sub.stats();
                prop_assert_eq!(received + st.dropped + waiting, published - joined,
                    "received {} dropped {} waiting {} published {} joined {}",
                    received, st.dropped, waiting, published, joined);
                prop_assert_eq!(st.delivered, published - joined);
                prop_assert!(st.dropped >= *lag);
                Ok(())
            };
            for (op, who) in ops {
                match op {
                    0..=3 => {
                        bus.try_publish_to("r", published).unwrap();
                        published += 1;
                    }
                    4 | 5 => {
                        if let Some((sub, _, received, lag, last)) = members[who].as_mut() {
                            match sub.try_recv() {
                                Ok(Some(e)) => {
                                    prop_assert!(last.is_none_or(|l| e.payload > l));
                                    *last = Some(e.payload);
                                    *received += 1;
                                }
                                Ok(None) => {}
                                Err(RecvError::Lagged(n)) => *lag += n,
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                    6 => {
                        // Join (all with the same settings: one ring).
                        if members[who].is_none() {
                            let sub = bus
                                .subscriber("r")
                                .lossy(capacity)
                                .name(format!("m{who}"))
                                .subscribe()
                                .unwrap();
                            members[who] = Some((sub, published, 0, 0, None));
                        }
                    }
                    _ => {
                        if let Some(m) = members[who].take() {
                            check(&m, published)?;
                        }
                    }
                }
            }
            let stats = bus.stats();
            let live: u64 = stats.subscribers.iter().map(|s| s.delivered).sum();
            prop_assert!(stats.delivered >= live);
            drop(bus);
            for m in members.iter_mut().flatten() {
                check(m, published)?;
                let (sub, joined, received, lag, last) = m;
                loop {
                    match sub.recv().await {
                        Ok(e) => {
                            prop_assert!(last.is_none_or(|l| e.payload > l));
                            *last = Some(e.payload);
                            *received += 1;
                        }
                        Err(RecvError::Lagged(n)) => *lag += n,
                        Err(RecvError::Closed) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                prop_assert_eq!(*received + *lag, published - *joined);
                prop_assert_eq!(sub.stats().dropped, *lag);
            }
            Ok(())
        })?;
    }
}

/// A fast and a stalled lossless subscriber on one ring: both get every
/// event in order; the publisher's waiting is charged to the stalled one.
#[test]
fn ring_members_lossless_fast_and_stalled() {
    const N: u64 = 200_000;
    rt().block_on(async {
        let bus = Bus::<u64>::new();
        let mk = |name: &str| {
            bus.subscriber("s.>")
                .lossless(128)
                .name(name)
                .subscribe()
                .unwrap()
        };
        let (mut fast, mut slow) = (mk("fast"), mk("slow"));
        let reader = |mut sub: busline::Subscription<u64>, stall: bool| {
            tokio::spawn(async move {
                let mut next = 0u64;
                loop {
                    match sub.recv().await {
                        Ok(e) => {
                            assert_eq!(e.payload, next, "{}: order or loss", sub.name());
                            next += 1;
                            if stall && next % 20_000 == 0 {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                        Err(RecvError::Closed) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                next
            })
        };
        let (f, s) = (
            reader(std::mem::replace(&mut fast, mk("spare")), false),
            reader(std::mem::replace(&mut slow, mk("spare2")), true),
        );
        drop((fast, slow)); // the spares leave: the ring goes on with two members
        let stats_bus = bus.clone();
        for i in 0..N {
            bus.publish_to("s.x", i).await.unwrap();
        }
        let stats = stats_bus.stats();
        drop(bus);
        drop(stats_bus);
        assert_eq!(f.await.unwrap(), N);
        assert_eq!(s.await.unwrap(), N);
        let slow = stats.subscriber("slow").unwrap();
        let fast = stats.subscriber("fast").unwrap();
        assert_eq!((slow.delivered, fast.delivered), (N, N));
        assert!(
            slow.blocked > Duration::ZERO,
            "the publisher waited on `slow`"
        );
        assert_eq!(stats.subscribers.len(), 2);
    });
}

/// Dropping the slowest member of a shared lossless ring releases the
/// publisher waiting on it; its unread events are counted as discarded and
/// the other member still gets every one of them.
#[tokio::test]
async fn dropping_the_slowest_ring_member_releases_the_publisher() {
    let bus = Bus::<u32>::new();
    let mut keen = bus
        .subscriber("t")
        .lossless(4)
        .name("keen")
        .subscribe()
        .unwrap();
    let idle = bus
        .subscriber("t")
        .lossless(4)
        .name("idle")
        .subscribe()
        .unwrap();
    for i in 0..4 {
        bus.publish_to("t", i).await.unwrap();
    }
    for i in 0..4 {
        assert_eq!(keen.recv().await.unwrap().payload, i);
    }
    assert!(keen.try_recv().unwrap().is_none()); // back at the ring: only `idle` is behind
    let b = bus.clone();
    let waiting = tokio::spawn(async move { b.publish_to("t", 4).await.unwrap().subscribers });
    tokio::task::yield_now().await;
    match bus.try_publish_to("t", 99) {
        Err(PublishError::Full { subscriber, .. }) => assert_eq!(&*subscriber, "idle"),
        other => panic!("{other:?}"),
    }
    drop(idle);
    assert_eq!(waiting.await.unwrap(), 1, "delivered to `keen` alone");
    assert_eq!(keen.recv().await.unwrap().payload, 4);
    let stats = bus.stats();
    assert_eq!(stats.discarded, 4, "idle's four unread events");
    assert_eq!(stats.delivered, 5 + 4, "keen's five and idle's four");
}

/// Threads racing on shared rings: three publishers, lossless and lossy
/// members that join, read at different speeds and leave while events flow.
/// Every member sees each publisher's events in order, never twice, and its
/// counters add up: delivered == received + dropped + discarded. A lost
/// wake-up would hang this test (it is bounded by a timeout).
#[test]
fn ring_members_race_with_publishers_and_account_for_everything() {
    const PUBLISHERS: u32 = 3;
    const PER: u64 = 30_000;
    rt().block_on(async {
        let bus = Bus::<(u32, u64)>::new();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut members = Vec::new();
        for m in 0..8u32 {
            let bus = bus.clone();
            let stop = stop.clone();
            members.push(tokio::spawn(async move {
                let mut generation = 0u32;
                let (mut checked, mut lost) = (0u64, 0u64);
                loop {
                    // Lossless and lossy members, two ring settings each.
                    let b = bus.subscriber("race.>").name(format!("m{m}-{generation}"));
                    let b = match m % 4 {
                        0 => b.lossless(64),
                        1 => b.lossless(256),
                        2 => b.lossy(32),
                        _ => b.lossy(128),
                    };
                    let mut sub = match b.subscribe() {
                        Ok(sub) => sub,
                        // The publishers finished and the bus closed after
                        // this member last looked at `stop`.
                        Err(SubscribeError::Closed) => return (checked, lost),
                        Err(e) => panic!("{e}"),
                    };
                    let mut last = [None::<u64>; PUBLISHERS as usize];
                    let (mut received, mut lag) = (0u64, 0u64);
                    let quota = 2_000 + 1_000 * m as u64;
                    let end = loop {
                        if received >= quota {
                            break false;
                        }
                        match sub.recv().await {
                            Ok(e) => {
                                let (p, n) = e.payload;
                                let l = &mut last[p as usize];
                                assert!(l.is_none_or(|l| n > l), "member {m}: {p}/{n} after {l:?}");
                                *l = Some(n);
                                received += 1;
                                if m % 2 == 1 && received % 500 == 0 {
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                }
                            }
                            Err(RecvError::Lagged(n)) => lag += n,
                            Err(RecvError::Closed) => break true,
                            Err(e) => panic!("{e}"),
                        }
                    };
                    let st = sub.stats();
                    let waiting = st.queued as u64; // taken with the counters, under one lock
                    assert!(st.dropped >= lag);
                    assert_eq!(
                        st.delivered,
                        received + st.dropped + waiting,
                        "member {m} gen {generation}: {st:?}, received {received}, waiting {waiting}"
                    );
                    if m % 4 < 2 {
                        assert_eq!(st.dropped, 0, "lossless member {m} lost events");
                    }
                    checked += st.delivered;
                    lost += st.dropped;
                    drop(sub); // leaves; the ring goes on for the others
                    generation += 1;
                    if end || stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return (checked, lost);
                    }
                }
            }));
        }
        let mut pubs = Vec::new();
        for p in 0..PUBLISHERS {
            let bus = bus.clone();
            pubs.push(tokio::spawn(async move {
                for n in 0..PER {
                    bus.publish_to(&format!("race.p{p}"), (p, n)).await.unwrap();
                }
            }));
        }
        let all = async {
            for p in pubs {
                p.await.unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            bus.close();
            let (mut total, mut lost) = (0, 0);
            for m in members {
                let (t, l) = m.await.unwrap();
                total += t;
                lost += l;
            }
            (total, lost)
        };
        let (total, lost) = tokio::time::timeout(Duration::from_secs(120), all)
            .await
            .expect("a member or publisher hung (lost wake-up?)");
        assert!(total > 0);
        let stats = bus.stats();
        assert_eq!(stats.published, PUBLISHERS as u64 * PER);
        assert!(stats.subscribers.is_empty(), "every member left");
        // Gone members' counters stay in the bus totals, lag not yet
        // reported to them included. (At least what each member's last
        // snapshot said: publishers ran on between it and the member leaving.)
        assert!(stats.delivered >= total, "{} < {total}", stats.delivered);
        assert!(stats.dropped >= lost, "{} < {lost}", stats.dropped);
    });
}

/// A queue group member whose `recv` gave up (a timeout, a `select!`) stays
/// a member; the group's next event must still reach a member that waits.
#[tokio::test(start_paused = true)]
async fn a_cancelled_queue_group_recv_never_keeps_an_event_from_a_waiting_member() {
    let bus = Bus::<u32>::new();
    let mut a = bus.subscriber("jobs").queue("g").subscribe().unwrap();
    let mut b = bus.subscriber("jobs").queue("g").subscribe().unwrap();
    // A waits, then gives up before anything comes.
    assert!(tokio::time::timeout(Duration::from_millis(10), a.recv())
        .await
        .is_err());
    let hb = tokio::spawn(async move { b.recv().await.map(|e| e.payload) });
    tokio::task::yield_now().await; // B waits now
    bus.publish_to("jobs", 7).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), hb)
        .await
        .expect("B never got the job")
        .unwrap();
    assert_eq!(got.unwrap(), 7);

    // A is woken for a job, and gives up its recv before it runs (staying a
    // member): the wake-up goes on to the other waiting member.
    let mut b = bus.subscriber("jobs").queue("g").subscribe().unwrap();
    let (give_up, gave_up) = tokio::sync::oneshot::channel::<()>();
    let ha = tokio::spawn(async move {
        tokio::select! {
            biased;
            _ = gave_up => {}
            _ = a.recv() => panic!("A was to give up first"),
        }
        a // still a member
    });
    tokio::task::yield_now().await; // A waits first
    let hb = tokio::spawn(async move { b.recv().await.map(|e| e.payload) });
    tokio::task::yield_now().await; // then B
    bus.publish_to("jobs", 8).await.unwrap(); // wakes A
    give_up.send(()).unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), hb)
        .await
        .expect("the job stayed queued with B waiting")
        .unwrap();
    assert_eq!(got.unwrap(), 8);
    let a = ha.await.unwrap();
    assert_eq!(a.stats().members, 1, "A is still in the group");
}

/// A publisher waiting for room gets it as soon as a subscriber takes an
/// event, before any later publisher: in a queue group and in a lossless
/// ring (where the subscriber takes its whole backlog in one batch).
#[tokio::test(start_paused = true)]
async fn a_waiting_publisher_is_woken_as_soon_as_there_is_room() {
    for group in [true, false] {
        let bus = Bus::<u32>::new();
        let b = bus.subscriber("t");
        let mut s = if group {
            b.queue("g").capacity(4)
        } else {
            b.lossless(4)
        }
        .subscribe()
        .unwrap();
        for i in 0..4 {
            bus.try_publish_to("t", i).unwrap();
        }
        let bus2 = bus.clone();
        let p = tokio::spawn(async move { bus2.publish_to("t", 4).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert!(!p.is_finished(), "the queue is full");
        assert_eq!(s.recv().await.unwrap().payload, 0);
        tokio::time::timeout(Duration::from_secs(5), p)
            .await
            .unwrap_or_else(|_| panic!("group {group}: the waiting publisher was not woken"))
            .unwrap()
            .unwrap();
        assert!(
            matches!(bus.try_publish_to("t", 5), Err(PublishError::Full { .. })),
            "group {group}: the room went to the waiting publisher"
        );
        for i in 1..5 {
            assert_eq!(s.recv().await.unwrap().payload, i);
        }
    }
}

/// `delivered == received + dropped + queued` for a ring subscriber part way
/// through what it was sent, read through the subscription and the bus.
#[tokio::test]
async fn a_ring_members_counters_add_up_as_it_reads() {
    let bus = Bus::<u32>::new();
    let mut s = bus.subscriber("t").lossless(16).subscribe().unwrap();
    for i in 0..4 {
        bus.try_publish_to("t", i).unwrap();
    }
    assert_eq!(s.recv().await.unwrap().payload, 0);
    let check = |st: &busline::SubscriberStats, received: u64, queued: usize| {
        assert_eq!(
            (st.delivered, st.received, st.queued),
            (4, received, queued),
            "{st:?}"
        );
        assert_eq!(
            st.delivered,
            st.received + st.dropped + st.queued as u64,
            "{st:?}"
        );
    };
    check(&s.stats(), 1, 3);
    check(&bus.stats().subscribers[0], 1, 3);
    for _ in 1..4 {
        s.recv().await.unwrap();
    }
    check(&s.stats(), 4, 0);
    check(&bus.stats().subscribers[0], 4, 0);
    assert!(s.try_recv().unwrap().is_none());
    check(&bus.stats().subscribers[0], 4, 0);
}
