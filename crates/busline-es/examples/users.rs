//! Users kept as events: register, change email, change password; the
//! audit trail, and the state at an earlier version and an earlier time.
//!
//! Run with `cargo run -p busline-es --example users`.

#[path = "common/user.rs"]
mod user;

use std::time::Duration;

use busline_es::{AggregateStore, ExecuteError, Metadata, StoreOptions};
use busline_log::Log;
use user::{hash, User, UserCommand, UserError};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let log = Log::open(tmp.path().join("log"), Default::default())?;
    let users = AggregateStore::<User>::open(log, StoreOptions::default().snapshot_every(2))?;
    let meta = |req: &str| {
        Metadata::new()
            .correlation_id(req)
            .causation_id(format!("cmd-{req}"))
            .header("actor", "example")
    };

    let id = "user-42";
    users
        .execute(
            id,
            UserCommand::Register {
                email: "ada@example.org".into(),
                password: "correct horse".into(),
            },
            meta("r1"),
        )
        .await?;
    // Let the clock move on so the time query below has two distinct moments.
    tokio::time::sleep(Duration::from_millis(20)).await;
    users
        .execute(
            id,
            UserCommand::ChangeEmail {
                email: "ada@lovelace.dev".into(),
            },
            meta("r2"),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    users
        .execute(
            id,
            UserCommand::ChangePassword {
                old: "correct horse".into(),
                new: "battery staple".into(),
            },
            meta("r3"),
        )
        .await?;

    // A rejected command is the aggregate's own typed error; nothing is stored.
    let err = users
        .execute(
            id,
            UserCommand::ChangePassword {
                old: "guess".into(),
                new: "whatever123".into(),
            },
            meta("r4"),
        )
        .await
        .unwrap_err();
    println!("rejected: {err}");
    assert!(matches!(
        err,
        ExecuteError::Rejected(UserError::WrongPassword)
    ));

    let now = users.load(id)?;
    println!(
        "now (version {}, from snapshot: {}): {:?}",
        now.version, now.from_snapshot, now.state
    );
    assert_eq!(now.state.email.as_deref(), Some("ada@lovelace.dev"));
    assert_eq!(now.state.password_hash, hash("battery staple"));
    assert_eq!(now.state, users.load_full(id)?.state);

    println!("history:");
    let history = users.history(id)?;
    for r in &history {
        println!(
            "  v{} @{} offset {} {} (schema v{}) correlation={} causation={} {:?}",
            r.version,
            r.timestamp_ms,
            r.offset,
            r.event_type,
            r.schema_version,
            r.metadata.correlation_id.as_deref().unwrap_or("-"),
            r.metadata.causation_id.as_deref().unwrap_or("-"),
            r.event
        );
    }
    assert_eq!(history.len(), 3);

    let v1 = users.load_at_version(id, 1)?;
    println!("at version 1: {:?}", v1.state);
    assert_eq!(v1.state.email.as_deref(), Some("ada@example.org"));

    // As of the moment of the email change: new email, old password.
    let then = users.load_as_of(id, history[1].timestamp())?;
    println!("as of {:?}: {:?}", history[1].timestamp(), then.state);
    assert_eq!(then.state.email.as_deref(), Some("ada@lovelace.dev"));
    if history[1].timestamp_ms < history[2].timestamp_ms {
        assert_eq!(then.state.password_hash, hash("correct horse"));
    }
    println!("ok");
    Ok(())
}
