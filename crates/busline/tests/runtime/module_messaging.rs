//! What a module publishes carries its name and lineage; it receives its
//! own events only if it opts in; its queue groups and replies work.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busline::{BoxError, Bus, Context, Message, Module};

use crate::runtime;

/// Publishes `enriched` for each `raw` event, and `bye` at shutdown.
#[derive(Clone)]
struct Enricher;

impl Module<u32> for Enricher {
    fn name(&self) -> &str {
        "enricher"
    }
    async fn run(&mut self, ctx: Context<u32>) -> Result<(), BoxError> {
        let mut raw = ctx.subscribe("raw")?;
        loop {
            tokio::select! {
                ev = raw.recv() => {
                    let ev = ev?;
                    ctx.publish_to("enriched", ev.payload * 10).await?;
                }
                _ = ctx.shutdown_requested() => {
                    ctx.publish_to("bye", 0).await?;
                    return Ok(());
                }
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn events_published_while_handling_carry_lineage() {
    let bus = Bus::new();
    let mut enriched = bus.subscribe("enriched").unwrap();
    let mut bye = bus.subscribe("bye").unwrap();
    let mut rt = runtime(bus.clone());
    rt.add(Enricher);
    let handle = rt.handle();
    let run = tokio::spawn(rt.run());
    tokio::task::yield_now().await;

    let conversation = busline::EventId::from_u128(42);
    let first = bus
        .send(
            Message::new(1)
                .topic("raw")
                .correlation_id(conversation)
                .source("test"),
        )
        .await
        .unwrap();
    let second = bus.publish_to("raw", 2).await.unwrap();
    let e1 = enriched.recv().await.unwrap();
    assert_eq!(e1.payload, 10);
    assert_eq!(e1.causation_id(), Some(first.id));
    assert_eq!(e1.correlation_id, conversation);
    assert_eq!(e1.source.as_deref(), Some("enricher"));
    let e2 = enriched.recv().await.unwrap();
    assert_eq!(e2.causation_id(), Some(second.id));
    assert_eq!(e2.correlation_id, second.id, "a new conversation");

    handle.shutdown();
    run.await.unwrap().unwrap();
    let b = bye.recv().await.unwrap();
    assert_eq!(
        b.causation_id(),
        None,
        "not handling anything when it stopped"
    );
    assert_eq!(b.correlation_id, b.id);
}

/// Publishes `enriched` for each `raw` event through one `Publisher`,
/// made before it receives anything.
#[derive(Clone)]
struct HandleEnricher;

impl Module<u32> for HandleEnricher {
    fn name(&self) -> &str {
        "handle-enricher"
    }
    async fn run(&mut self, ctx: Context<u32>) -> Result<(), BoxError> {
        let mut raw = ctx.subscribe("raw")?;
        let mut enriched = ctx.publisher("enriched")?;
        loop {
            tokio::select! {
                ev = raw.recv() => {
                    enriched.publish(ev?.payload * 10).await?;
                }
                _ = ctx.shutdown_requested() => return Ok(()),
            }
        }
    }
}

/// A module's `Publisher` stamps what it publishes as the module's own
/// publishes are: its name, and the event it was handling as the cause.
#[tokio::test(start_paused = true)]
async fn a_module_publisher_stamps_name_and_lineage() {
    let bus = Bus::new();
    let mut enriched = bus.subscribe("enriched").unwrap();
    let mut rt = runtime(bus.clone());
    rt.add(HandleEnricher);
    let handle = rt.handle();
    let run = tokio::spawn(rt.run());
    tokio::task::yield_now().await;

    let conversation = busline::EventId::from_u128(7);
    let first = bus
        .send(Message::new(1).topic("raw").correlation_id(conversation))
        .await
        .unwrap();
    let second = bus.publish_to("raw", 2).await.unwrap();
    let e1 = enriched.recv().await.unwrap();
    assert_eq!(
        (e1.payload, e1.source.as_deref()),
        (10, Some("handle-enricher"))
    );
    assert_eq!(e1.causation_id(), Some(first.id));
    assert_eq!(e1.correlation_id, conversation);
    let e2 = enriched.recv().await.unwrap();
    assert_eq!(e2.causation_id(), Some(second.id));
    assert_eq!(e2.correlation_id, second.id);

    handle.shutdown();
    run.await.unwrap().unwrap();
}

/// Echoes every `chat` event it receives back onto `chat`.
#[derive(Clone)]
struct Echo {
    include_own: bool,
    received: Arc<AtomicU32>,
}

impl Module<u32> for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    async fn run(&mut self, ctx: Context<u32>) -> Result<(), BoxError> {
        let mut chat = ctx
            .subscriber("chat")
            .include_own(self.include_own)
            .subscribe()?;
        loop {
            let ev = tokio::select! {
                ev = chat.recv() => ev?,
                _ = ctx.shutdown_requested() => return Ok(()),
            };
            self.received.fetch_add(1, Ordering::SeqCst);
            if ev.payload < 3 {
                ctx.publish_to("chat", ev.payload + 1).await?;
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_module_does_not_receive_its_own_events_unless_it_opts_in() {
    for (include_own, expected) in [(false, 1), (true, 4)] {
        let bus = Bus::new();
        let mut chat = bus.subscribe("chat").unwrap();
        let received = Arc::new(AtomicU32::new(0));
        let mut rt = runtime(bus.clone());
        rt.add(Echo {
            include_own,
            received: received.clone(),
        });
        let handle = rt.handle();
        let run = tokio::spawn(rt.run());
        tokio::task::yield_now().await;
        bus.publish_to("chat", 0).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            received.load(Ordering::SeqCst),
            expected,
            "include_own={include_own}"
        );
        let mut seen = Vec::new();
        while let Ok(Some(ev)) = chat.try_recv() {
            seen.push(ev.payload);
        }
        let want: Vec<u32> = if include_own {
            vec![0, 1, 2, 3]
        } else {
            vec![0, 1]
        };
        assert_eq!(seen, want);
        handle.shutdown();
        let report = run.await.unwrap().unwrap();
        assert!(report.aborted.is_empty());
    }
}

#[tokio::test]
async fn queue_group_members_get_their_own_module_events() {
    let bus = Bus::new();
    let a = Context::detached("a", bus.clone());
    let b = Context::detached("b", bus.clone());
    let mut qa = a.subscriber("jobs").queue("workers").subscribe().unwrap();
    let _qb = b.subscriber("jobs").queue("workers").subscribe().unwrap();
    // Not filtered on `a`: the group's queue is shared with module `b`.
    let r = a.publish_to("jobs", 7).await.unwrap();
    assert_eq!(r.subscribers, 1);
    let got = qa.try_recv().unwrap().unwrap();
    assert_eq!((got.payload, got.source.as_deref()), (7, Some("a")));
    assert_eq!(a.handling(), Some(got.id), "try_recv marks it as handled");
    a.end_handling();
    assert_eq!(a.handling(), None);
}

/// An actor: private count, answers `count.get` with the count.
#[derive(Clone, Default)]
struct Tally {
    n: u32,
}

impl Module<u32> for Tally {
    fn name(&self) -> &str {
        "tally"
    }
    async fn run(&mut self, ctx: Context<u32>) -> Result<(), BoxError> {
        let mut inbox = ctx.subscribe("count.>")?;
        loop {
            let ev = tokio::select! {
                ev = inbox.recv() => ev?,
                _ = ctx.shutdown_requested() => return Ok(()),
            };
            match ev.topic.as_str() {
                "count.add" => self.n += ev.payload,
                "count.get" => ctx.reply(&ev, self.n).await?,
                _ => {}
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_actor_answers_requests_with_its_private_state() {
    let bus = Bus::new();
    let mut rt = runtime(bus.clone());
    rt.add(Tally::default());
    let handle = rt.handle();
    let run = tokio::spawn(rt.run());
    tokio::time::sleep(Duration::from_millis(1)).await;
    for n in [1, 2, 3] {
        bus.publish_to("count.add", n).await.unwrap();
    }
    let req = Message::new(0)
        .topic("count.get")
        .correlation_id(busline::EventId::from_u128(7));
    let reply = bus.request_msg(req, Duration::from_secs(1)).await.unwrap();
    assert_eq!(reply.payload, 6);
    assert_eq!(reply.source.as_deref(), Some("tally"));
    assert_eq!(reply.correlation_id, busline::EventId::from_u128(7));
    assert!(reply.causation_id().is_some());
    handle.shutdown();
    run.await.unwrap().unwrap();
}
