//! Core NATS: at-most-once, for throw-away streams.
//!
//! Nothing is stored and nothing is acknowledged: an event exported while no
//! process subscribes is gone; when the connection drops, what the client
//! had not yet written to the server is gone (a
//! [`flush`](crate::NatsTransport::flush) covering it then fails with
//! [`NatsError::Reconnected`](crate::NatsError::Reconnected) instead of
//! confirming); an importer that falls behind the server's limits loses
//! messages (reported as `$sys.nats.slow_consumer`). Use it for live
//! metrics where the next value replaces a lost one; use
//! [JetStream](crate::jetstream) for events that must arrive.
//!
//! Undecodable messages go to `<dead_letter_prefix>.<subject>` with the same
//! headers as on JetStream, published with core NATS.
