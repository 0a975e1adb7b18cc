//! busline: a typed event bus for tokio.
//!
//! Publishers put events on dot-separated [topics](Topic); every subscriber
//! whose pattern matches gets the event, shared as an `Arc<Envelope<T>>`, under
//! the delivery policy *it* chose. Nothing is dropped silently: every event a
//! subscriber misses is counted and reported to it.
//!
//! ```
//! use std::borrow::Cow;
//! use busline::{Bus, Event};
//!
//! #[derive(Debug, Clone, PartialEq)]
//! enum Metric { Request { path: String, latency_ms: u64 }, Error { message: String } }
//!
//! impl Event for Metric {
//!     fn topic(&self) -> Cow<'_, str> {
//!         match self {
//!             Metric::Request { .. } => "metrics.request".into(),
//!             Metric::Error { .. } => "metrics.error".into(),
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let bus = Bus::new();
//! let mut logger = bus.subscribe("metrics.>").unwrap();            // lossless
//! let mut errors = bus.subscriber("metrics.error").lossy(64).subscribe().unwrap();
//!
//! bus.publish(Metric::Request { path: "/api".into(), latency_ms: 42 }).await.unwrap();
//! bus.publish(Metric::Error { message: "db down".into() }).await.unwrap();
//!
//! assert!(matches!(logger.recv().await.unwrap().payload, Metric::Request { .. }));
//! assert!(matches!(logger.recv().await.unwrap().payload, Metric::Error { .. }));
//! assert!(matches!(errors.recv().await.unwrap().payload, Metric::Error { .. }));
//! # }
//! ```
//!
//! # Modules
//!
//! The bus is the core; the rest builds on it and each part has a cargo
//! feature (all on by default; `default-features = false` gives the bus alone).
//!
//! | where | what it holds | feature |
//! | --- | --- | --- |
//! | [`Bus`] | publish, request/reply, persist, backpressure, stats | — |
//! | [`Publisher`] | publishing to one topic in a loop, its route kept between publishes | — |
//! | [`Subscription`] | receiving, and its options ([`SubscriptionBuilder`], [`Policy`]) | — |
//! | [`Topic`], [`Pattern`] | the topic syntax and wildcards (`*`, `>`) | — |
//! | [`EventStore`] | replay then live, named consumers ([`MemoryStore`], [`StartAt`]) | — |
//! | [`Runtime`], [`Module`], [`Context`] | modules started, supervised and stopped | `runtime` |
//! | [`stream`] | operators on any `Stream`: windows, batches, throttle, priority lanes (import `busline::stream::StreamOpsExt`) | `stream` |
//! | [`middleware`] | retry, timeout, circuit breaker, dead letters for handlers (tower) | `middleware` |
//! | [`Config`] | TOML configuration of a runtime's modules | `config` |
//! | — | `BusStats::export` to the `metrics` facade | `metrics` |
//! | `conformance`, `test_util` | the behaviour suite every transport runs; test helpers | `test-util` (off by default) |
//!
//! A newcomer writing an application starts with the runtime: a [`Module`]
//! gets a [`Context`], publishes through it and subscribes with it.
//!
//! - **A module does not receive its own events** on a context
//!   subscription unless it opts in
//!   ([`include_own(true)`](SubscriptionBuilder::include_own)); they
//!   are counted as `filtered`. Queue group subscriptions are never filtered
//!   that way.
//! - **The default restart policy** is [`Restart::OnFailure`]: a module whose
//!   `run` returns an error or panics is started again (a fresh instance)
//!   after a backoff of 100 ms doubling to 30 s with 20 % jitter, at most 5
//!   times within 60 s, after which the run ends with
//!   [`RuntimeError::RestartLimit`]. A module that returns `Ok(())` stays
//!   stopped. See [`Supervision`].
//!
//! # Public API
//!
//! Every public item has exactly one path. The bus, its subscriptions,
//! topics, stores, errors, statistics, the runtime and its configuration
//! are at the crate root (`busline::Bus`, `busline::Context`,
//! `busline::Runtime`), in one re-export list at the end of `lib.rs`; the
//! type pages hold the semantics (the runtime's on [`Runtime`], the
//! stores' on [`EventStore`], the topic syntax on [`Topic`]). The two
//! operator libraries are modules of their own: [`stream`] and
//! [`middleware`] (and, for tests, `conformance` and `test_util`).
//!
#![cfg_attr(
    not(feature = "runtime"),
    doc = "[`Runtime`]: crate#modules
[`Module`]: crate#modules
[`Context`]: crate#modules
[`Restart::OnFailure`]: crate#modules
[`RuntimeError::RestartLimit`]: crate#modules
[`Supervision`]: crate#modules"
)]
#![cfg_attr(not(feature = "stream"), doc = "[`stream`]: crate#modules")]
#![cfg_attr(not(feature = "middleware"), doc = "[`middleware`]: crate#modules")]
#![cfg_attr(not(feature = "config"), doc = "[`Config`]: crate#modules")]
//!
//! # Delivery policies
//!
//! | policy | queue | when it is full | the subscriber sees |
//! | --- | --- | --- | --- |
//! | [`lossless`](SubscriptionBuilder::lossless) (default) | bounded | `publish` waits, `try_publish` fails with `Full` | every event |
//! | [`lossy`](SubscriptionBuilder::lossy) | bounded | the oldest is dropped | `Lagged(n)`, then the rest |
//! | [`latest`](SubscriptionBuilder::latest) | one per topic | the older value is replaced | the newest value per topic |
//! | [`queue(group)`](SubscriptionBuilder::queue) | bounded, shared by the group | `publish` waits | each event at exactly one member |
//! | [`queue(group)`](SubscriptionBuilder::queue) + [`key`](SubscriptionBuilder::key) | bounded, shared by the group | `publish` waits | each event at exactly one member; a key's events at one member, in order |
//!
//! # Ordering
//!
//! Events from one publisher (one task calling `publish` in sequence) reach
//! each subscriber in publish order. Across concurrent publishers there is no
//! global order: each subscriber sees some interleaving of them. Sequence
//! numbers (`Envelope::seq`) are unique per bus and increase per publisher.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let bus = busline::Bus::<u32>::new();
//! let mut sub = bus.subscribe("n").unwrap();
//! for i in 0..100 { bus.publish_to("n", i).await.unwrap(); }
//! for i in 0..100 { assert_eq!(sub.recv().await.unwrap().payload, i); }
//! # }
//! ```
//!
//! # Lag
//!
//! A lossy subscriber that falls behind loses the *oldest* queued events. Its
//! next receive returns [`RecvError::Lagged(n)`](RecvError::Lagged) with the
//! exact number lost since its previous receive; after that it continues with
//! the oldest event still queued. Publishers never wait for a lossy subscriber
//! to make room (one that writes over the very event a subscriber is taking
//! at that instant lets that one read finish first). The lost events count
//! in the subscriber's `dropped` as they are written over, before its next
//! receive reports them. So for a lossy subscriber, events received + the sum of reported lag ==
//! events published to it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use busline::RecvError;
//! let bus = busline::Bus::<u32>::new();
//! let mut slow = bus.subscriber("n").lossy(4).subscribe().unwrap();
//! for i in 0..10 { bus.publish_to("n", i).await.unwrap(); } // never waits
//! assert_eq!(slow.recv().await.unwrap_err(), RecvError::Lagged(6));
//! for i in 6..10 { assert_eq!(slow.recv().await.unwrap().payload, i); }
//! assert_eq!(slow.stats().dropped, 6);
//! # }
//! ```
//!
//! # Fan-out
//!
//! Lossless and lossy subscribers read a ring: the publisher appends each
//! event once and every subscriber reads it at its own cursor, taking all
//! that is new in one go. Unfiltered subscribers with the same pattern,
//! policy, capacity and watermarks share one ring, so publishing to sixteen
//! of them costs what publishing to one does. Sharing is invisible otherwise:
//! each keeps its own lag, counters and name, and a lossy one that falls
//! behind loses events for itself alone.
//!
//! The ring's protocol (locks, cursors, and who wakes whom) is model-checked
//! with loom: `tests/loom/` runs publishers, receivers, closing and
//! dropping through every interleaving up to a preemption bound, with the
//! bus's locks and atomics swapped for loom's (`RUSTFLAGS="--cfg
//! busline_loom"`; `scripts/test` runs it).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use busline::RecvError;
//! let bus = busline::Bus::<u32>::new();
//! let mut keen = bus.subscriber("n").lossy(4).name("keen").subscribe().unwrap();
//! let mut idle = bus.subscriber("n").lossy(4).name("idle").subscribe().unwrap();
//! for i in 0..4 { bus.publish_to("n", i).await.unwrap(); }
//! for i in 0..4 { assert_eq!(keen.recv().await.unwrap().payload, i); }
//! for i in 4..10 { bus.publish_to("n", i).await.unwrap(); }
//! assert_eq!(keen.recv().await.unwrap_err(), RecvError::Lagged(2)); // 4 and 5 were overwritten
//! assert_eq!(idle.recv().await.unwrap_err(), RecvError::Lagged(6)); // it had read nothing
//! assert_eq!(keen.recv().await.unwrap().payload, 6);
//! assert_eq!(idle.recv().await.unwrap().payload, 6);
//! assert_eq!((keen.stats().dropped, idle.stats().dropped), (2, 6));
//! # }
//! ```
//!
//! # Backpressure
//!
//! A lossless subscriber's queue is bounded. When it is full, `publish` waits
//! until the subscriber makes room; the time spent waiting is counted on that
//! subscriber (`SubscriberStats::blocked`). A waiting publisher is woken once
//! an eighth of the queue is free (at least one slot), so a publisher paced
//! by a slow subscriber is woken for a run of events rather than for each
//! one; a publish that finds room goes ahead at once. `try_publish` never waits: it
//! returns [`PublishError::Full`] naming the full subscriber and hands the
//! event back. Delivery is all or nothing: a publish that waits has delivered
//! to no one yet, so dropping its future loses nothing and duplicates nothing.
//!
//! Lossless and lossy subscribers read their queue (a ring the publisher
//! appends each event to once) without taking its lock: the publisher and a
//! reader meet only on the slot they both touch, and the lock is taken only
//! to park and to wake (see the `queue` module's source). Capacity is a hard
//! bound on the events waiting for a subscriber.
//!
//! ## Watermarks
//!
//! Each lossless queue has a high and a low watermark (default ¾ and ¼ of its
//! capacity). When a queue reaches its high watermark the bus's
//! [`Backpressure`] signal goes high, and it stays high until that queue
//! drains to its low watermark (and no other queue is above its high one).
//! The slowest subscriber checks the backlog as it reads once the signal is
//! raised, so the signal clears as soon as that queue is down to its low
//! watermark.
//! Publishers that can slow down or shed load at the source watch it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use busline::PublishError;
//! let bus = busline::Bus::<u32>::new();
//! let mut sub = bus.subscriber("n").lossless(4).watermarks(3, 1).name("db").subscribe().unwrap();
//! let pressure = bus.backpressure();
//! for i in 0..4 { bus.try_publish_to("n", i).unwrap(); }
//! assert!(pressure.is_high());
//! match bus.try_publish_to("n", 4) {
//!     Err(PublishError::Full { subscriber, event, .. }) => {
//!         assert_eq!(&*subscriber, "db");
//!         assert_eq!(event, 4); // handed back, not lost
//!     }
//!     other => panic!("{other:?}"),
//! }
//! for _ in 0..4 { sub.recv().await.unwrap(); }
//! assert!(sub.try_recv().unwrap().is_none()); // back at its queue: it is empty
//! assert!(!pressure.is_high()); // drained to the low watermark
//! # }
//! ```
//!
//! # Closing
//!
//! When the bus is closed ([`Bus::close`]) or its last handle is dropped,
//! each subscriber first receives everything already queued for it, then
//! [`RecvError::Closed`] (a subscription used as a `Stream` ends). Publishing
//! to a closed bus fails with [`PublishError::Closed`], handing the event back.
//! Dropping a subscription unsubscribes it at once; a publisher waiting on its
//! full queue is released, never blocked or panicked; events left in its queue
//! are counted as `discarded`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use busline::RecvError;
//! let bus = busline::Bus::<u32>::new();
//! let mut sub = bus.subscribe("n").unwrap();
//! bus.publish_to("n", 1).await.unwrap();
//! drop(bus); // the last handle
//! assert_eq!(sub.recv().await.unwrap().payload, 1); // drained first
//! assert_eq!(sub.recv().await.unwrap_err(), RecvError::Closed);
//! # }
//! ```
//!
//! # Queue groups
//!
//! Subscribers that join the same group on the same pattern compete: each
//! event goes to exactly one member. Members can join and leave at any time;
//! events waiting in the group's queue stay there when a member leaves (a
//! member takes one event at a time, so it never holds events others could
//! have had). When the last member leaves the group is gone, and events still
//! queued are counted as `discarded`.
//!
//! The group has one queue, with its first member's filter, capacity and
//! watermarks: a member joining with a filter of its own, or with other
//! capacity or watermarks, is refused with an error saying so.
//!
//! An event arriving wakes one waiting member. A `recv` that gives up (a
//! timeout, the other branch of a `select!`) withdraws its member from the
//! waiting line, and passes on a wake-up it got for an event it did not
//! take, so the event reaches another member that waits. A member read as a
//! [`Stream`](futures::Stream) that stops being polled while it stays
//! subscribed can hold one such wake-up: drop it, or read with `recv`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let bus = busline::Bus::<u32>::new();
//! let mut a = bus.subscriber("jobs").queue("workers").subscribe().unwrap();
//! let mut b = bus.subscriber("jobs").queue("workers").subscribe().unwrap();
//! for i in 0..4 { bus.publish_to("jobs", i).await.unwrap(); }
//! let mut got = vec![
//!     a.recv().await.unwrap().payload, b.recv().await.unwrap().payload,
//!     a.recv().await.unwrap().payload,
//! ];
//! drop(a); // leaves; the last job stays with the group
//! got.push(b.recv().await.unwrap().payload);
//! got.sort();
//! assert_eq!(got, vec![0, 1, 2, 3]); // each exactly once
//! # }
//! ```
//!
//! ## Keyed groups
//!
//! A group whose members give a [`key`](SubscriptionBuilder::key) (an order
//! id, a device id) spreads keys over its members instead of events:
//!
//! - **Ordering per key.** Every event of a key goes to one member, in
//!   publish order (for events from one publisher, as in
//!   [Ordering](#ordering)), and a key's events are handled one batch at a
//!   time: a member takes what it holds (up to 32 events) and handles it
//!   until it comes back for more; meanwhile that key's new events wait for
//!   it, even when another member is idle.
//! - **Rebalancing.** A key stays with its member while the member holds
//!   events of it. Once it has handled them all, the key's next event goes
//!   to the member the key hashes to among the members of that moment
//!   (rendezvous hashing: a member joining takes about 1/n of the keys as
//!   they fall idle; one leaving moves only its own). A member leaving
//!   hands what it had not received, in order, to the members its keys now
//!   hash to. So no key is reordered or handled twice by the group,
//!   whoever joins or leaves.
//! - **On persisted topics** (members with a store: `.consumer(name)`,
//!   `.from(..)`), the group replays once, through the same key routing,
//!   when its first member subscribes, then goes live; members
//!   [`commit`](Subscription::commit) what they handled, and the group's
//!   position (the lowest offset handed out and not committed) is stored for
//!   its consumer name. After a restart the group resumes from there: at
//!   least once, every key in order (see `queue::keyed::log`).
//! - **Over NATS** a keyed group lives on one bus: the events a bus imports
//!   (JetStream keeps a stream's order; core NATS keeps one publisher's
//!   order per subject) are spread by key over that bus's members with the
//!   guarantees above, and a bus persisted to a JetStream stream
//!   (busline-nats' `JetStreamStore`) keeps the group's position on the
//!   server. NATS has no keyed queue groups across processes (its queue
//!   groups ignore keys): to spread keys over processes, partition the
//!   subjects (NATS subject mapping `partition(n, ...)`) and let each
//!   process import its partitions.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let bus = busline::Bus::<(char, u32)>::new();
//! let member = || bus.subscriber("orders").queue("billing").key(|e| e.payload.0);
//! let (a, mut b) = (member().subscribe().unwrap(), member().subscribe().unwrap());
//! for n in 0..3 {
//!     for order in ['x', 'y', 'z'] { bus.publish_to("orders", (order, n)).await.unwrap(); }
//! }
//! drop(a); // what `a` held goes to `b`, each order's events still in order
//! let mut seen = Vec::new();
//! while let Ok(Some(e)) = b.try_recv() { seen.push(e.payload) }
//! for order in ['x', 'y', 'z'] {
//!     let ns: Vec<u32> = seen.iter().filter(|p| p.0 == order).map(|p| p.1).collect();
//!     assert_eq!(ns, [0, 1, 2]);
//! }
//! # }
//! ```
//!
//! # Latest
//!
//! A `latest` subscriber keeps only the newest event per topic: state and
//! configuration, where only the current value matters. Replaced values are
//! counted as `superseded`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let bus = busline::Bus::<u32>::new();
//! let mut cfg = bus.subscriber("config.*").latest().subscribe().unwrap();
//! bus.publish_to("config.a", 1).await.unwrap();
//! bus.publish_to("config.b", 10).await.unwrap();
//! bus.publish_to("config.a", 2).await.unwrap();
//! assert_eq!(cfg.recv().await.unwrap().payload, 2);
//! assert_eq!(cfg.recv().await.unwrap().payload, 10);
//! assert_eq!(cfg.stats().superseded, 1);
//! # }
//! ```
//!
//! # Request/reply
//!
//! [`Bus::request`] publishes an event with a reply-to topic and waits for one
//! reply; a responder answers with [`Bus::reply`]. With no subscriber on the
//! topic the request fails at once with [`RequestError::NoResponders`]; with
//! no answer in time, [`RequestError::Timeout`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::time::Duration;
//! use busline::RequestError;
//! let bus = busline::Bus::<u32>::new();
//! let mut doubler = bus.subscribe("math.double").unwrap();
//! let responder = bus.clone();
//! tokio::spawn(async move {
//!     while let Ok(req) = doubler.recv().await {
//!         responder.reply(&req, req.payload * 2).await.unwrap();
//!     }
//! });
//! let reply = bus.request("math.double", 21, Duration::from_secs(1)).await.unwrap();
//! assert_eq!(reply.payload, 42);
//! let err = bus.request("math.triple", 1, Duration::from_secs(1)).await.unwrap_err();
//! assert_eq!(err, RequestError::NoResponders { topic: "math.triple".into() });
//! # }
//! ```
//!
//! # Filters
//!
//! A predicate on top of the pattern runs on the publisher's side, so
//! filtered events never take room in the subscriber's queue; they are
//! counted as `filtered`.

#![warn(unreachable_pub, missing_debug_implementations)]

mod bus;
mod clock;
#[cfg(feature = "test-util")]
pub mod conformance;
#[cfg(any(feature = "runtime", feature = "middleware"))]
mod delay;
mod envelope;
mod error;
mod event_id;
mod lineage;
mod message;
#[cfg(feature = "middleware")]
pub mod middleware;
mod queue;
mod router;
#[cfg(feature = "runtime")]
mod runtime;
mod stats;
mod store;
#[cfg(feature = "stream")]
pub mod stream;
mod subscription;
mod sync;
#[cfg(feature = "test-util")]
pub mod test_util;
mod topic;

/// The README's example, compiled and run as a doc test (so it stays true).
#[cfg(all(doctest, feature = "runtime", feature = "stream", feature = "config"))]
#[doc = include_str!("../../../README.md")]
mod readme {}

pub use bus::{
    Backpressure, Bus, BusBuilder, Publisher, Receipt, SubscriptionBuilder, WeakBus,
    DEFAULT_CAPACITY,
};
pub use envelope::{Envelope, Headers};
pub use error::{
    PublishError, RecvError, ReplyError, RequestError, StoreError, SubscribeError, TopicError,
};
pub use event_id::EventId;
pub use message::{Event, Message};
#[cfg(feature = "config")]
pub use runtime::config::{Config, ConfigError, ModuleSettings, RESERVED_KEYS};
#[cfg(feature = "runtime")]
pub use runtime::context::Context;
#[cfg(feature = "runtime")]
pub use runtime::module::{BoxError, Module};
#[cfg(feature = "runtime")]
pub use runtime::status::{ModuleState, ModuleStatus};
#[cfg(feature = "runtime")]
pub use runtime::supervisor::{Backoff, Restart, Supervision};
#[cfg(feature = "runtime")]
pub use runtime::{
    ModuleSpec, Report, Runtime, RuntimeError, RuntimeHandle, StopReason, SystemEvent,
    SHUTDOWN_TOPIC, STATUS_TOPIC,
};
pub use stats::{BusStats, SubscriberStats};
pub use store::{EventStore, MemoryStore, StartAt, StoredEvents};
pub use subscription::{Filter, Policy, Subscription};
pub use topic::{Pattern, Topic, MAX_LEN as MAX_TOPIC_LEN};
