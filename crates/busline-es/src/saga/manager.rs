//! The saga manager: a busline [`Module`] that runs every instance of one saga type.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::Poll;

use busline::{BoxError, Context, Envelope, Module, RecvError, StartAt, Subscription};
use busline_log::Log;
use tokio::sync::watch;

use super::decision::Decision;
use super::instance::{Emit, Input, Instance, Pending, SagaRecord, Step};
use super::outbox::flush;
use super::timeout::{Clock, Timers};
use super::{Route, Saga};
use crate::aggregate::Aggregate;
use crate::event::Metadata;
use crate::store::{AggregateStore, StoreOptions};

/// Runs every instance of saga type `S` as one busline [`Module`]: add it
/// to a [`Runtime`](busline::Runtime), which supervises it (a handler that
/// panics fails the module, and the runtime restarts it per its policy).
/// Cheap to clone; clones share the store.
///
/// See the [module docs](super) for what it guarantees.
pub struct SagaManager<S: Saga> {
    name: String,
    store: AggregateStore<Instance<S>>,
    capacity: usize,
    /// Inputs read as named consumers of the bus's store (see
    /// [`SagaManager::durable_inputs`]).
    durable_inputs: bool,
    /// `true` while a `run` is subscribed and has recovered.
    ready: Arc<watch::Sender<bool>>,
}

impl<S: Saga> Clone for SagaManager<S> {
    fn clone(&self) -> Self {
        SagaManager {
            name: self.name.clone(),
            store: self.store.clone(),
            capacity: self.capacity,
            durable_inputs: self.durable_inputs,
            ready: self.ready.clone(),
        }
    }
}

impl<S: Saga> std::fmt::Debug for SagaManager<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaManager")
            .field("name", &self.name)
            .field("saga", &S::NAME)
            .field("store", &self.store)
            .finish()
    }
}

/// A saga instance as [`SagaManager::inspect`] sees it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SagaStatus<S> {
    /// The saga's state.
    pub state: S,
    /// Whether it finished.
    pub finished: bool,
    /// How many messages it has emitted.
    pub emitted: u64,
    /// How many of them are not marked published yet.
    pub unpublished: u64,
    /// How many timeouts are pending.
    pub pending_timeouts: usize,
    /// How many timeouts fired.
    pub timeouts_fired: u64,
    /// How many messages it handled.
    pub handled: usize,
}

impl<S: Saga> SagaManager<S> {
    /// Opens the sagas of type `S` stored in `log`, as a module named
    /// after [`Saga::NAME`]. Reads the log once (blocking). Other aggregate
    /// types' records in the log are skipped.
    pub fn open(log: Log) -> crate::Result<Self> {
        Ok(SagaManager {
            name: S::NAME.replace(['.', ' ', '*', '>'], "-"),
            store: AggregateStore::open(log, StoreOptions::default())?,
            capacity: 1024,
            durable_inputs: false,
            ready: Arc::new(watch::channel(false).0),
        })
    }

    /// Uses `name` as the module name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Reads its inputs from the bus's durable store, as named consumers
    /// (`<module name>.inputs.<i>`, one per [`Saga::topics`] pattern) that
    /// resume after their last handled input: a message published while no
    /// manager runs (before it starts, during a restart) or still queued when
    /// the process dies is handled when a manager runs again. Each input is
    /// committed after its step is stored; one handled but not committed
    /// when the process dies comes again and is ignored (its id is in the
    /// instance's state), so its effects still happen once.
    ///
    /// The bus must persist the saga's topics ([`Bus::persist`](busline::Bus::persist),
    /// e.g. with busline-log's `LogStore`): otherwise the manager fails at
    /// start, saying which pattern has no store.
    pub fn durable_inputs(mut self) -> Self {
        self.durable_inputs = true;
        self
    }

    /// The capacity of its (lossless) subscriptions (default 1024).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Waits until a running instance of the manager has subscribed and
    /// recovered (re-published its outbox, re-armed its timeouts): messages
    /// published after this are received.
    pub async fn ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Correlation ids of every saga stored.
    pub fn ids(&self) -> Vec<String> {
        self.store.ids()
    }

    /// The stored state of saga `id`, if it exists.
    pub fn inspect(&self, id: &str) -> crate::Result<Option<SagaStatus<S>>> {
        if self.store.version(id) == 0 {
            return Ok(None);
        }
        let i = self.store.load(id)?.state;
        Ok(Some(SagaStatus {
            emitted: i.next_emit,
            unpublished: i.next_emit - i.published(),
            pending_timeouts: i.pending.len(),
            timeouts_fired: i.fired,
            handled: i.handled.len(),
            finished: i.finished,
            state: i.state,
        }))
    }
}

impl<S: Saga> Module<S::Message> for SagaManager<S> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&mut self, ctx: Context<S::Message>) -> Result<(), BoxError> {
        self.ready.send_replace(false);
        let mut subs = Vec::new();
        for (i, pattern) in S::topics().into_iter().enumerate() {
            let sub = ctx.subscriber(&pattern).lossless(self.capacity);
            let sub = match self.durable_inputs {
                true => sub
                    .consumer(format!("{}.inputs.{i}", self.name))
                    .from(StartAt::Committed),
                false => sub,
            };
            subs.push(sub.subscribe()?);
        }
        let mut run = Running::<S>::recover(&ctx, self.store.clone()).await?;
        self.ready.send_replace(true);
        let _not_ready = NotReady(&self.ready);
        let mut turn = 0;
        loop {
            let next = run.timers.next_due().map(|due| run.clock.instant(due));
            tokio::select! {
                biased;
                _ = ctx.shutdown_requested() => return Ok(()),
                _ = sleep_until(next) => run.fire_due(&ctx).await?,
                r = recv_any(&mut subs, &mut turn) => match r {
                    Ok(env) => {
                        run.on_message(&ctx, &env).await?;
                        if self.durable_inputs {
                            // `turn` is one past the subscription it came from.
                            subs[turn - 1].commit(&env).await?;
                        }
                    }
                    Err(RecvError::Closed) => return Ok(()),
                    Err(e) => tracing::warn!(saga = S::NAME, error = %e, "saga input missed"),
                },
            }
        }
    }
}

/// Clears the ready flag when a run ends (return, error or panic).
struct NotReady<'a>(&'a watch::Sender<bool>);

impl Drop for NotReady<'_> {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The next message of any subscription, starting the search at a
/// rotating index so that a busy subscription does not starve the others.
async fn recv_any<T: Send + Sync + 'static>(
    subs: &mut [Subscription<T>],
    turn: &mut usize,
) -> Result<Arc<Envelope<T>>, RecvError> {
    std::future::poll_fn(|cx| {
        let n = subs.len();
        for k in 0..n {
            let i = (*turn + k) % n;
            if let Poll::Ready(r) = subs[i].poll_recv(cx) {
                *turn = i + 1;
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    })
    .await
}

/// The state of one `run`: every saga instance, rebuilt from the log.
struct Running<S: Saga> {
    store: AggregateStore<Instance<S>>,
    clock: Clock,
    timers: Timers,
    /// Instance and stream version, by correlation id.
    sagas: HashMap<String, (Instance<S>, u64)>,
}

impl<S: Saga> Running<S> {
    /// Loads every instance, publishes what its outbox still holds and
    /// arms its pending timeouts.
    async fn recover(
        ctx: &Context<S::Message>,
        store: AggregateStore<Instance<S>>,
    ) -> Result<Self, BoxError> {
        let mut run = Running {
            store,
            clock: Clock::start(),
            timers: Timers::default(),
            sagas: HashMap::new(),
        };
        for id in run.store.ids() {
            let loaded = run.store.load(&id)?;
            let mut instance = loaded.state;
            let version = flush(ctx, &run.store, &id, &mut instance, loaded.version).await?;
            for p in instance.pending.values() {
                run.timers.arm(p.due_ms, &id, p.seq);
            }
            run.sagas.insert(id, (instance, version));
        }
        Ok(run)
    }

    async fn on_message(
        &mut self,
        ctx: &Context<S::Message>,
        env: &Envelope<S::Message>,
    ) -> Result<(), BoxError> {
        let (id, start) = match S::route(&env.payload) {
            Route::Start(id) => (id, true),
            Route::Handle(id) => (id, false),
            Route::Ignore => return Ok(()),
        };
        let msg_id = env.id.to_string();
        if !self.sagas.contains_key(&id) {
            if !start {
                tracing::debug!(saga = S::NAME, id, topic = %env.topic, "no saga for message; ignored");
                return Ok(());
            }
            self.sagas.insert(id.clone(), (Instance::default(), 0));
        }
        let (instance, _) = &self.sagas[&id];
        if instance.finished || instance.handled.contains(&msg_id) {
            return Ok(());
        }
        let decision = instance.state.handle(&env.payload);
        self.step(ctx, &id, Input::Message(msg_id), decision).await
    }

    async fn fire_due(&mut self, ctx: &Context<S::Message>) -> Result<(), BoxError> {
        for (id, seq) in self.timers.take_due(self.clock.now_ms()) {
            let Some((instance, _)) = self.sagas.get(&id) else {
                continue;
            };
            // Cancelled, replaced or finished since it was armed.
            let Some(p) = instance.pending.get(&seq) else {
                continue;
            };
            let decision = instance.state.on_timeout(&p.timeout);
            self.step(ctx, &id, Input::Timeout(seq), decision).await?;
        }
        Ok(())
    }

    /// Stores one step in one append, then publishes its emits.
    async fn step(
        &mut self,
        ctx: &Context<S::Message>,
        id: &str,
        input: Input,
        decision: Decision<S>,
    ) -> Result<(), BoxError> {
        let (instance, version) = self.sagas.get_mut(id).expect("instance loaded");
        let step = build_step(instance, input, decision, &self.clock);
        let schedule: Vec<(u64, u64)> = step.schedule.iter().map(|p| (p.due_ms, p.seq)).collect();
        let record = SagaRecord::Step(step);
        let meta = Metadata::new().correlation_id(id);
        let appended = self
            .store
            .append(id, *version, vec![record.clone()], meta)
            .await?;
        *version = appended.version;
        instance.apply(&record);
        if !instance.finished {
            for (due, seq) in schedule {
                self.timers.arm(due, id, seq);
            }
        }
        *version = flush(ctx, &self.store, id, instance, *version).await?;
        Ok(())
    }
}

/// Turns a decision into the record of its step: numbers the emits and
/// timeouts, resolves timeout names to the pending ones they replace or cancel.
fn build_step<S: Saga>(
    instance: &Instance<S>,
    input: Input,
    d: Decision<S>,
    clock: &Clock,
) -> Step<S> {
    let named = |name: &str| -> Vec<u64> {
        instance
            .pending
            .values()
            .filter(|p| p.name == name)
            .map(|p| p.seq)
            .collect()
    };
    let mut cancel: Vec<u64> = d.cancel.iter().flat_map(|n| named(n)).collect();
    let mut schedule = Vec::with_capacity(d.schedule.len());
    for (i, (name, after, timeout)) in d.schedule.into_iter().enumerate() {
        cancel.extend(named(&name));
        schedule.push(Pending {
            seq: instance.next_timeout + i as u64,
            name,
            due_ms: clock.due_ms(after),
            timeout,
        });
    }
    let emits = d
        .emits
        .into_iter()
        .enumerate()
        .map(|(i, (topic, message))| Emit {
            seq: instance.next_emit + i as u64,
            topic,
            message,
        })
        .collect();
    cancel.sort_unstable();
    cancel.dedup();
    Step {
        input,
        events: d.events,
        emits,
        schedule,
        cancel,
        finished: d.finish,
    }
}
