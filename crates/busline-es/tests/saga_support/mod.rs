//! A job saga shared by the saga tests: `Start` emits `Work` and schedules
//! a deadline; `Done` records the work as done; the deadline emits
//! `Finalize` and finishes; `Abort` finishes at once (cancelling the
//! deadline); `Boom` panics in the handler.
#![allow(dead_code)]

use std::time::Duration;

use busline::{Bus, Context, Module};
use busline_es::saga::{Decision, Route, Saga, SagaManager};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    Start { job: String, after_ms: u64 },
    Work { job: String },
    Done { job: String },
    Finalize { job: String, done: bool },
    Abort { job: String },
    Boom { job: String },
    Other,
}

impl Msg {
    pub fn start(job: &str, after_ms: u64) -> Msg {
        Msg::Start {
            job: job.into(),
            after_ms,
        }
    }

    pub fn job(&self) -> &str {
        match self {
            Msg::Start { job, .. }
            | Msg::Work { job }
            | Msg::Done { job }
            | Msg::Finalize { job, .. }
            | Msg::Abort { job }
            | Msg::Boom { job } => job,
            Msg::Other => "",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobEvent {
    Started { job: String },
    WorkDone,
    Fired,
    Aborted,
}

/// Counts what it did, so the tests can check nothing happened twice.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub job: String,
    pub started: u32,
    pub work_emitted: u32,
    pub done: bool,
    pub fired: u32,
    pub finalize_emitted: u32,
    pub aborted: bool,
}

impl Saga for Job {
    const NAME: &'static str = "job";
    type Message = Msg;
    type Event = JobEvent;
    type Timeout = ();

    fn topics() -> Vec<String> {
        vec!["job.in.>".into()]
    }

    fn route(message: &Msg) -> Route {
        match message {
            Msg::Start { job, .. } => Route::Start(job.clone()),
            Msg::Done { job } | Msg::Abort { job } | Msg::Boom { job } => {
                Route::Handle(job.clone())
            }
            _ => Route::Ignore,
        }
    }

    fn handle(&self, message: &Msg) -> Decision<Self> {
        match message {
            Msg::Start { job, after_ms } if self.started == 0 => Decision::new()
                .apply(JobEvent::Started { job: job.clone() })
                .emit("job.work", Msg::Work { job: job.clone() })
                .schedule("deadline", Duration::from_millis(*after_ms), ()),
            Msg::Done { .. } if !self.done => Decision::new().apply(JobEvent::WorkDone),
            Msg::Abort { .. } => Decision::new().apply(JobEvent::Aborted).finish(),
            Msg::Boom { job } => panic!("boom requested for job {job}"),
            _ => Decision::new(),
        }
    }

    fn on_timeout(&self, _: &()) -> Decision<Self> {
        Decision::new()
            .apply(JobEvent::Fired)
            .emit(
                "job.finalize",
                Msg::Finalize {
                    job: self.job.clone(),
                    done: self.done,
                },
            )
            .finish()
    }

    fn apply(&mut self, event: &JobEvent) {
        match event {
            JobEvent::Started { job } => {
                self.job = job.clone();
                self.started += 1;
                self.work_emitted += 1;
            }
            JobEvent::WorkDone => self.done = true,
            JobEvent::Fired => {
                self.fired += 1;
                self.finalize_emitted += 1;
            }
            JobEvent::Aborted => self.aborted = true,
        }
    }
}

/// Topic a test publishes `msg` on to reach the saga.
pub fn input_topic(msg: &Msg) -> String {
    let kind = match msg {
        Msg::Start { .. } => "start",
        Msg::Done { .. } => "done",
        Msg::Abort { .. } => "abort",
        Msg::Boom { .. } => "boom",
        _ => "other",
    };
    format!("job.in.{kind}")
}

/// A manager running on a detached context over `bus`, ready; call the
/// returned function to stop it.
pub async fn spawn_manager(
    manager: &SagaManager<Job>,
    bus: &Bus<Msg>,
) -> (
    Box<dyn Fn() + Send>,
    tokio::task::JoinHandle<Result<(), busline::BoxError>>,
) {
    let ctx = Context::detached("job", bus.clone());
    let token = ctx.shutdown_token();
    let mut m = manager.clone();
    let task = tokio::spawn(async move { m.run(ctx).await });
    manager.ready().await;
    (Box::new(move || token.cancel()), task)
}

/// Publishes `msg` on its input topic.
pub async fn send(bus: &Bus<Msg>, msg: Msg) {
    bus.publish_to(&input_topic(&msg), msg)
        .await
        .expect("publish");
}
