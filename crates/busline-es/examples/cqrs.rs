//! Command/query separation: commands go to the event store; queries
//! (`GetById`, `FindByEmail`) are answered over busline request/reply by a
//! service that reads a projection following the log live.
//!
//! Run with `cargo run -p busline-es --example cqrs`.

#[path = "common/user.rs"]
mod user;

use std::collections::BTreeMap;
use std::time::Duration;

use busline::{Bus, Subscription};
use busline_es::{
    AggregateStore, Metadata, Projection, ProjectionHandle, ProjectionOptions, ProjectionRunner,
    Recorded, StoreOptions,
};
use busline_log::Log;
use serde::{Deserialize, Serialize};
use user::{User, UserCommand, UserEvent};

/// The read model: users by id, and an email index.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Directory {
    by_id: BTreeMap<String, UserView>,
    by_email: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct UserView {
    id: String,
    email: String,
    version: u64,
}

impl Projection for Directory {
    const AGGREGATE_TYPE: &'static str = "user";
    type Event = UserEvent;
    fn apply(&mut self, r: &Recorded<UserEvent>) {
        let id = r.aggregate_id.clone();
        match &r.event {
            UserEvent::Registered { email, .. } => {
                self.by_email.insert(email.clone(), id.clone());
                self.by_id.insert(
                    id.clone(),
                    UserView {
                        id,
                        email: email.clone(),
                        version: r.version,
                    },
                );
            }
            UserEvent::EmailChanged { from, to } => {
                self.by_email.remove(from);
                self.by_email.insert(to.clone(), id.clone());
                if let Some(u) = self.by_id.get_mut(&id) {
                    u.email = to.clone();
                    u.version = r.version;
                }
            }
            UserEvent::PasswordChanged { .. } => {
                if let Some(u) = self.by_id.get_mut(&id) {
                    u.version = r.version;
                }
            }
        }
    }
}

/// Messages of the query service.
#[derive(Debug, Clone)]
enum Query {
    GetById(String),
    FindByEmail(String),
    Answer(Option<UserView>),
}

/// Answers queries from the projection, never from the event store.
async fn query_service(
    bus: Bus<Query>,
    mut sub: Subscription<Query>,
    directory: ProjectionHandle<Directory>,
) {
    while let Ok(req) = sub.recv().await {
        let answer = directory.query(|d| match &req.payload {
            Query::GetById(id) => d.by_id.get(id).cloned(),
            Query::FindByEmail(email) => d
                .by_email
                .get(email)
                .and_then(|id| d.by_id.get(id))
                .cloned(),
            Query::Answer(_) => None,
        });
        let _ = bus.reply(&req, Query::Answer(answer)).await;
    }
}

async fn ask(bus: &Bus<Query>, q: Query) -> Option<UserView> {
    let reply = bus
        .request("users.query", q, Duration::from_secs(5))
        .await
        .expect("the query service answers");
    match &reply.payload {
        Query::Answer(a) => a.clone(),
        other => panic!("unexpected reply {other:?}"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let log = Log::open(tmp.path().join("log"), Default::default())?;

    // Command side.
    let users = AggregateStore::<User>::open(log.clone(), StoreOptions::default())?;
    // A user registered before the read model exists: the projection catches up.
    users
        .execute(
            "u1",
            UserCommand::Register {
                email: "grace@navy.mil".into(),
                password: "cobol-1959".into(),
            },
            Metadata::new(),
        )
        .await?;

    // Query side: a projection following the log, and a service over the bus.
    let runner = ProjectionRunner::<Directory>::open(
        log.clone(),
        tmp.path().join("directory.ckpt"),
        ProjectionOptions::default(),
    )?;
    let directory = runner.handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let projection = tokio::spawn(runner.run(async {
        let _ = stopped.await;
    }));
    let bus: Bus<Query> = Bus::new();
    // Subscribed before the first question is asked (in the task it could
    // come too late: the question would find no responder).
    let queries = bus.subscribe("users.query")?;
    let service = tokio::spawn(query_service(bus.clone(), queries, directory.clone()));

    let app = users
        .execute(
            "u2",
            UserCommand::Register {
                email: "ada@example.org".into(),
                password: "analytical".into(),
            },
            Metadata::new(),
        )
        .await?;
    // Read your own write: wait until the projection applied it.
    directory.wait_for(app.offsets.end - 1).await;
    let ada = ask(&bus, Query::FindByEmail("ada@example.org".into())).await;
    println!("FindByEmail(ada@example.org) = {ada:?}");
    assert_eq!(ada.as_ref().map(|u| u.id.as_str()), Some("u2"));

    let app = users
        .execute(
            "u2",
            UserCommand::ChangeEmail {
                email: "ada@lovelace.dev".into(),
            },
            Metadata::new(),
        )
        .await?;
    directory.wait_for(app.offsets.end - 1).await;
    let app = users
        .execute(
            "u2",
            UserCommand::ChangePassword {
                old: "analytical".into(),
                new: "engine-1843".into(),
            },
            Metadata::new(),
        )
        .await?;
    directory.wait_for(app.offsets.end - 1).await;
    let old = ask(&bus, Query::FindByEmail("ada@example.org".into())).await;
    let new = ask(&bus, Query::FindByEmail("ada@lovelace.dev".into())).await;
    let grace = ask(&bus, Query::GetById("u1".into())).await;
    println!("FindByEmail(old) = {old:?}\nFindByEmail(new) = {new:?}\nGetById(u1) = {grace:?}");
    assert_eq!(old, None);
    assert_eq!(new.map(|u| u.version), Some(3));
    assert_eq!(grace.map(|u| u.email), Some("grace@navy.mil".into()));

    // Stop the projection: it checkpoints, and a restart resumes from there.
    let _ = stop.send(());
    let runner = projection.await??;
    println!("projection checkpointed at offset {}", runner.committed());
    assert_eq!(runner.committed(), log.next_offset());
    bus.close();
    service.await?;
    println!("ok");
    Ok(())
}
