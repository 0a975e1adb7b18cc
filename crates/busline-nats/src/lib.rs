//! busline-nats: scale a busline [`Bus`](busline::Bus) out over NATS.
//!
//! When one process is not enough, point the bus at a NATS server: local
//! events on the topics you **export** go out as NATS subjects of the same
//! name, and NATS messages on the subjects you **import** arrive on the local
//! bus as if published locally, with their envelope metadata intact. NATS is
//! the distributed engine; busline does not grow a broker.
//!
//! ```
//! use busline::Bus;
//! use busline_nats::{server::NatsServer, JetStreamConfig, NatsConfig, NatsTransport};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), busline_nats::NatsError> {
//! # let server = NatsServer::start().expect("nats-server"); let url = server.url();
//! // Process A: its `metrics.>` events go out to NATS.
//! let a: Bus<String> = Bus::new();
//! let to_nats = NatsTransport::connect(&a, NatsConfig::new(&url)
//!     .export("metrics.>")
//!     .jetstream(JetStreamConfig::default()))     // at-least-once; `.core()` = at-most-once
//!     .await?;
//!
//! // Process B: `metrics.>` from NATS arrives on its bus.
//! let b: Bus<String> = Bus::new();
//! let mut dashboard = b.subscribe("metrics.>").unwrap();
//! let _from_nats = NatsTransport::connect(&b, NatsConfig::new(&url)
//!     .import("metrics.>")
//!     .jetstream(JetStreamConfig { durable: "dashboard".into(), ..Default::default() }))
//!     .await?;
//!
//! a.publish_to("metrics.cpu", "42".to_string()).await.unwrap();
//! to_nats.flush().await?;                        // acknowledged by the server
//! let env = dashboard.recv().await.unwrap();
//! assert_eq!((env.topic.as_str(), env.payload.as_str()), ("metrics.cpu", "42"));
//! assert!(env.header(busline_nats::IMPORTED).is_some());
//! # Ok(()) }
//! ```
//!
//! | module | what |
//! | --- | --- |
//! | [`transport`] | connect, export, import, no echo, request/reply across processes, status |
//! | [`jetstream`] | at-least-once: pipelined acked publishes, de-duplication, durable consumers, dead letters, the server's durability |
//! | [`core`] | at-most-once core NATS |
//! | [`store`] | [`JetStreamStore`]: a durable [`EventStore`](busline::EventStore) for [`Bus::persist`](busline::Bus::persist) in a JetStream stream, replay-then-live and named consumers from the server |
//! | [`codec`] | payload codecs (JSON, postcard) and the header layout of the envelope |
//! | [`config`] | servers, credentials, TLS, modes |
//! | `server` | a managed `nats-server` for tests and benchmarks (feature `test-util`, never on by default) |
//!
//! # Delivery guarantees
//!
//! | mode | export | import | after a server restart |
//! | --- | --- | --- | --- |
//! | [JetStream](crate::jetstream) | acked by the server, retried until acked, de-duplicated by `Nats-Msg-Id` within the duplicate window | durable consumer, acked after local delivery, redelivered otherwise | nothing acknowledged is lost |
//! | [`core`] | fire and forget | whatever arrives while connected | messages in flight are lost |
//!
//! Exports read the local bus through one lossless subscription: an event
//! counts as handed over when [`NatsTransport::flush`] returns (JetStream: the
//! server has acknowledged it). An event still queued in the process when the
//! *process* dies is lost with the process, like any event on the in-memory
//! bus; use the durable log for that.
//!
//! [`NatsTransport::shutdown`] sends what the exporter holds and, on
//! JetStream, waits for its acks, for at most
//! [`NatsConfig::shutdown_timeout`] (default 30 s) even with the server
//! away. It returns the final [`TransportStats`]: every event the exporter
//! was handed was sent or is counted in `abandoned` (given up on at the
//! deadline, or published while the exporter closed its queue), never lost
//! silently.
//!
//! ## Keyed groups
//!
//! A keyed queue group ([`SubscriptionBuilder::key`](busline::SubscriptionBuilder::key))
//! lives on one bus. Imported events reach it in the order they arrive
//! (JetStream: the stream's order; core NATS: one publisher's order per
//! subject) and are spread by key over that bus's members, each key in order
//! at one member. On a bus persisted to a [`JetStreamStore`], the group's
//! committed position is kept on the server and the group resumes from it
//! after a restart (the conformance suite's `keyed_group_resumes`). NATS has
//! no keyed queue groups across processes: its queue groups ignore keys.
//! To spread keys over processes, partition the subjects on the server
//! (subject mapping `partition(n, ...)`) and let each process import its
//! partitions.
//!
//! ## Redelivery and duplicates
//!
//! At-least-once means an event may arrive twice, never zero times. Duplicates
//! are suppressed at both ends: the server drops a re-sent publish whose
//! `Nats-Msg-Id` it saw within the stream's `duplicate_window` (default
//! 2 minutes; a retry later than that is stored twice), and each import
//! drops redelivered messages whose id it delivered recently. A process that
//! restarts forgets its recent ids, so a message delivered but not yet acked
//! before a crash is delivered again.
//!
//! ## The server's durability
//!
//! An acknowledged event is one the server has *accepted*. With JetStream's
//! default `sync_interval` (2 minutes) the file store is fsynced lazily, so a
//! power loss or kernel crash of the server machine can lose events that were
//! acknowledged, even though busline did everything right. Configure the
//! server with `jetstream { sync_interval: always }`, or a replicated stream,
//! when that matters. Killing only the `nats-server` process loses nothing
//! acknowledged (tested: `tests/faults.rs`), with file storage (the
//! default). A memory stream (`file_storage: false`) is gone when its server
//! restarts, with everything acknowledged in it; the transport then makes
//! its streams again when an export or an import finds one missing, and
//! goes on (tested: `tests/reconnect.rs`).
//!
//! # Backpressure and reconnects
//!
//! After a successful start, a lost connection is retried forever with a
//! bounded backoff (the exporter's own connection too). Outgoing events
//! wait in bounded buffers (the exporter's bus queue, [`NatsConfig::buffer`],
//! and its write buffer, 64 KiB; on JetStream at most
//! [`max_in_flight`](JetStreamConfig::max_in_flight) unacknowledged); when
//! they are full, local publishers to exported topics wait, exactly as for
//! any slow lossless subscriber. Nothing is dropped. The client
//! connection's state is always observable via [`NatsTransport::status`]
//! and, if the event type allows it ([`NatsConfig::status_events`]), as
//! `$sys.nats.*` events on the bus (the exporter's own connection reports
//! through logs and flush results, see [`transport`]).
//!
//! # Payload limit
//!
//! Every event is checked against the server's `max_payload` (from the
//! connection's server info, default 1 MiB) before it is sent. A larger one
//! is not sent; the exporter logs [`NatsError::PayloadTooLarge`] (naming the
//! subject, the id, the size and the limit) and counts it as `rejected`.
//!
//! # Throughput
//!
//! Exports do not go through `async-nats`. Its header path allocates per
//! message (a `HashMap` entry, a `Vec` and a `String` per header) and its
//! connection task serializes the headers again into a growing buffer:
//! with the envelope's metadata (id, time, type, source, correlation,
//! causation) that is most of the cost of a core NATS publish. Instead the
//! exporter encodes each event straight into a buffer as the protocol's
//! `HPUB` text (the same headers, no map, no per-message allocation once
//! the buffers have grown) and writes up to 1024 events or 64 KiB at once
//! to a second connection it opens itself with the same server,
//! credentials and TLS settings (see [`transport`], *The exporter's own
//! connection*). Imports, JetStream acks and retries, reply inboxes and
//! status stay on the `async-nats` client.
//!
//! On JetStream the server's work per message (storing it, acking it, a
//! de-duplication entry per `Nats-Msg-Id`) dominates. The exporter skips
//! `async-nats`'s per-publish request machinery as well (an inbox subject,
//! a response channel and timers per message): its publishes, written the
//! same way, carry a reply subject on one ack inbox of its own (see
//! [`jetstream`]).
//!
//! `busline bench nats` measures the transport against bare `async-nats`,
//! with and without the same headers, in one run against one server; the
//! README has the figures and the command.
//!
//! # Authentication and TLS
//!
//! [`Auth`] picks one of: user and password, token, nkey seed, or a `.creds`
//! file (JWT + seed). [`Tls`] can require TLS, add a private CA and present a
//! client certificate; giving a CA implies `required`. A wrong credential, an
//! untrusted certificate or a server without TLS when TLS is required fails
//! [`NatsTransport::connect`] with [`NatsError::Connect`], naming the server and
//! the [`ConnectCause`]. There is no fallback to anonymous access or
//! plaintext.

#![warn(unreachable_pub, missing_debug_implementations)]

pub mod codec;
pub mod config;
mod connection;
pub mod core;
mod dedup;
pub mod error;
mod export;
mod import;
mod inboxes;
pub mod jetstream;
mod request;
#[cfg(any(test, feature = "test-util"))]
pub mod server;
mod shared;
mod stats;
mod status;
pub mod store;
pub mod transport;

pub use codec::Codec;
pub use config::{Auth, JetStreamConfig, Mode, NatsConfig, Tls};
pub use error::{ConnectCause, NatsError};
pub use store::{JetStreamStore, JetStreamStoreConfig};
pub use transport::{ConnState, NatsTransport, Status, StatusEvent, TransportStats, IMPORTED};
