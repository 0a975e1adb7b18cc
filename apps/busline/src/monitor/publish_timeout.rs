//! How long an HTTP route that publishes what it receives waits for room on
//! the bus: `POST /api/events` ([`web`](super::web)) and `POST /v1/metrics`
//! ([`otlp`](super::otlp)) both answer 503 once it has passed. It lives
//! apart from both so neither depends on the other for it.

use std::time::Duration;

/// How long a publishing HTTP route waits for room on the bus before
/// answering 503 (a lossless subscriber is behind).
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
