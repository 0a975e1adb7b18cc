//! Startup errors name what failed: an import that cannot be set up names
//! the server and the consumer.

mod common;

use busline::Bus;
use busline_nats::{JetStreamConfig, NatsConfig, NatsTransport};
use common::*;

/// A JetStream import that cannot be set up is an error naming the server,
/// the pattern and the consumer.
#[tokio::test]
async fn an_import_that_cannot_be_set_up_names_the_server_and_consumer() {
    let srv = server();
    let bus: Bus<Ev> = Bus::new();
    let cfg = JetStreamConfig {
        subjects: vec!["other.>".into()],
        ..js("d")
    };
    let e = NatsTransport::connect(
        &bus,
        NatsConfig::new(srv.url()).import("a.>").jetstream(cfg),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(&srv.url()) && e.contains("`a.>`") && e.contains("`d_a_GT`"),
        "{e}"
    );
}
