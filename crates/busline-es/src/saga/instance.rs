//! One saga instance as stored: its log records and the state they fold into.
//!
//! A saga instance is an aggregate of type [`Saga::NAME`] whose id is the
//! correlation id. Its stream holds two kinds of records:
//!
//! - `Step`: one handled input (a message id or a fired timeout), with the
//!   saga's state events, the messages it emits (the outbox), the timeouts
//!   it schedules and cancels, and whether it finished, all in one record
//!   (one log append, checked as one unit on recovery);
//! - `Published`: the outbox dispatcher's progress mark: every emit with a
//!   lower sequence number has been handed to the bus.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::Saga;
use crate::aggregate::Aggregate;

/// What a step handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Input {
    /// A bus message, by its event id.
    Message(String),
    /// A timeout, by its sequence number in the saga.
    Timeout(u64),
}

/// A message in the outbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct Emit<S: Saga> {
    /// Sequence number of the emit in its saga (0, 1, ...): with the saga
    /// type and correlation id it makes the emit's stable id.
    pub seq: u64,
    pub topic: String,
    pub message: S::Message,
}

/// A scheduled timeout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct Pending<S: Saga> {
    /// Sequence number of the timeout in its saga.
    pub seq: u64,
    pub name: String,
    /// When it is due, unix milliseconds (see the timeout clock).
    pub due_ms: u64,
    pub timeout: S::Timeout,
}

/// One handled input and everything it caused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct Step<S: Saga> {
    pub input: Input,
    pub events: Vec<S::Event>,
    pub emits: Vec<Emit<S>>,
    pub schedule: Vec<Pending<S>>,
    /// Sequence numbers of the timeouts cancelled.
    pub cancel: Vec<u64>,
    pub finished: bool,
}

/// A record of a saga's stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) enum SagaRecord<S: Saga> {
    Step(Step<S>),
    Published {
        /// Every emit with `seq < upto` has been published.
        upto: u64,
    },
}

impl<S: Saga> crate::event::DomainEvent for SagaRecord<S> {
    const TYPES: &'static [&'static str] = &["Step", "Published"];
}

/// A saga instance: the user's state plus the bookkeeping of its inputs,
/// outbox and timeouts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct Instance<S: Saga> {
    pub state: S,
    pub finished: bool,
    /// Ids of the messages already handled (a redelivered one is ignored).
    pub handled: BTreeSet<String>,
    pub next_emit: u64,
    /// Emits not yet marked published, in sequence order.
    pub outbox: Vec<Emit<S>>,
    pub next_timeout: u64,
    pub pending: BTreeMap<u64, Pending<S>>,
    /// How many timeouts fired.
    pub fired: u64,
}

impl<S: Saga> Default for Instance<S> {
    fn default() -> Self {
        Instance {
            state: S::default(),
            finished: false,
            handled: BTreeSet::new(),
            next_emit: 0,
            outbox: Vec::new(),
            next_timeout: 0,
            pending: BTreeMap::new(),
            fired: 0,
        }
    }
}

impl<S: Saga> Instance<S> {
    /// Emits up to this sequence number have been published.
    pub(crate) fn published(&self) -> u64 {
        self.outbox.first().map_or(self.next_emit, |e| e.seq)
    }

    fn apply_step(&mut self, step: &Step<S>) {
        match &step.input {
            Input::Message(id) => {
                self.handled.insert(id.clone());
            }
            Input::Timeout(seq) => {
                self.pending.remove(seq);
                self.fired += 1;
            }
        }
        for e in &step.events {
            self.state.apply(e);
        }
        for e in &step.emits {
            self.next_emit = self.next_emit.max(e.seq + 1);
            self.outbox.push(e.clone());
        }
        for c in &step.cancel {
            self.pending.remove(c);
        }
        for p in &step.schedule {
            self.next_timeout = self.next_timeout.max(p.seq + 1);
            self.pending.insert(p.seq, p.clone());
        }
        if step.finished {
            self.finished = true;
            self.pending.clear();
        }
    }
}

impl<S: Saga> Aggregate for Instance<S> {
    const TYPE: &'static str = S::NAME;
    type Command = SagaRecord<S>;
    type Event = SagaRecord<S>;
    type Error = std::convert::Infallible;

    fn handle(&self, record: SagaRecord<S>) -> Result<Vec<SagaRecord<S>>, Self::Error> {
        Ok(vec![record])
    }

    fn apply(&mut self, record: &SagaRecord<S>) {
        match record {
            SagaRecord::Step(step) => self.apply_step(step),
            SagaRecord::Published { upto } => self.outbox.retain(|e| e.seq >= *upto),
        }
    }
}
