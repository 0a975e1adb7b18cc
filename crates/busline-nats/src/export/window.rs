//! The JetStream window: publishes sent and not yet acknowledged, the acks
//! that settle them, and the sweep that retries overdue ones.

use std::collections::VecDeque;
use std::sync::Arc;

use busline::Envelope;
use futures::StreamExt;
use serde::Serialize;

use super::{Exporter, Sink};
use crate::jetstream::publish::{acked_seq, parse_ack, AckInbox, AckReply};
use crate::shared::Ctx;
use crate::stats::inc;

/// Export sequence numbers handed out and not yet settled (acknowledged or
/// given up on), oldest first: settling is O(1), and everything below
/// [`Unsettled::below`] is settled.
#[derive(Default)]
pub(crate) struct Unsettled {
    base: u64,
    done: VecDeque<bool>,
}

impl Unsettled {
    /// The next sequence number, not yet settled.
    pub(crate) fn open(&mut self) -> u64 {
        self.done.push_back(false);
        self.base + self.done.len() as u64 - 1
    }

    pub(crate) fn settle(&mut self, seq: u64) {
        if let Some(d) = seq
            .checked_sub(self.base)
            .and_then(|i| self.done.get_mut(i as usize))
        {
            *d = true;
        }
        while self.done.front() == Some(&true) {
            self.done.pop_front();
            self.base += 1;
        }
    }

    /// Every sequence number below this one is settled.
    pub(crate) fn below(&self) -> u64 {
        self.base
    }

    /// The sequence number the next [`open`](Self::open) returns.
    pub(crate) fn next(&self) -> u64 {
        self.base + self.done.len() as u64
    }
}

/// A JetStream publish sent and not yet acknowledged.
pub(crate) struct Waiting<T> {
    env: Arc<Envelope<T>>,
    /// The sweep generation it was sent in.
    generation: u64,
}

impl<T> Waiting<T> {
    pub(crate) fn sent(env: &Arc<Envelope<T>>, generation: u64) -> Self {
        Waiting {
            env: env.clone(),
            generation,
        }
    }
}

/// Sweeps per ack timeout: an unanswered publish is retried between one and
/// one and a half timeouts after it was sent.
pub(crate) const SWEEPS_PER_ACK_TIMEOUT: u32 = 2;

impl<T: Serialize + Send + Sync + 'static> Exporter<T> {
    pub(crate) fn has_room(&self) -> bool {
        self.max_in_flight == 0 || self.in_flight.len() + self.waiting.len() < self.max_in_flight
    }

    /// Room for a batch worth a write (up to 64 publishes, or a quarter of
    /// the window): a full window opens one ack at a time, and taking one
    /// event per ack would make every publish a write of its own.
    pub(crate) fn has_room_for_a_batch(&self) -> bool {
        let want = (self.max_in_flight / 4).clamp(1, 64);
        self.max_in_flight == 0
            || self.in_flight.len() + self.waiting.len() + want <= self.max_in_flight
    }

    pub(crate) fn idle(&self) -> bool {
        self.in_flight.is_empty() && self.waiting.is_empty()
    }

    /// An answer on the ack inbox.
    pub(crate) fn on_ack(&mut self, ctx: &Ctx<T>, sink: &Sink, msg: async_nats::Message) {
        let Some(seq) = acked_seq(&msg) else {
            return;
        };
        // Absent: already given up on and retried (the retry is de-duplicated).
        let Some(w) = self.waiting.remove(&seq) else {
            return;
        };
        match parse_ack(msg.status, &msg.payload) {
            AckReply::Stored { duplicate } => {
                if duplicate {
                    inc(&ctx.counters.publish_duplicates);
                }
                inc(&ctx.counters.acked);
                self.unsettled.settle(seq);
            }
            AckReply::Failed(why) => self.retry(ctx, sink, w.env, seq, why),
        }
    }

    /// Retries publishes whose ack is overdue.
    pub(crate) fn sweep(&mut self, ctx: &Ctx<T>, sink: &Sink) {
        self.generation += 1;
        let cutoff = self
            .generation
            .saturating_sub(SWEEPS_PER_ACK_TIMEOUT as u64 + 1);
        let overdue: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.generation <= cutoff)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in overdue {
            if let Some(w) = self.waiting.remove(&seq) {
                self.retry(
                    ctx,
                    sink,
                    w.env,
                    seq,
                    "no ack within the ack timeout".into(),
                );
            }
        }
    }

    pub(crate) fn retry(
        &mut self,
        ctx: &Ctx<T>,
        sink: &Sink,
        env: Arc<Envelope<T>>,
        seq: u64,
        why: String,
    ) {
        if let Sink::Js(js) = sink {
            let c = ctx.counters.clone();
            self.in_flight
                .push(js.retry(env, ctx.codec, c, seq, Some(why)));
        }
    }

    /// Waits until another publish may be in flight.
    pub(crate) async fn make_room(
        &mut self,
        ctx: &Ctx<T>,
        sink: &Sink,
        sweep: &mut tokio::time::Interval,
    ) {
        while !self.has_room() {
            tokio::select! {
                biased;
                Some(done) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.unsettled.settle(done);
                }
                Some(msg) = next_ack(&mut self.acks) => self.on_ack(ctx, sink, msg),
                _ = sweep.tick() => self.sweep(ctx, sink),
            }
        }
    }
}

pub(crate) async fn next_ack(acks: &mut Option<AckInbox>) -> Option<async_nats::Message> {
    match acks {
        Some(a) => a.sub.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::Unsettled;

    #[test]
    fn unsettled_tracks_the_lowest_open_sequence() {
        let mut u = Unsettled::default();
        let (a, b, c) = (u.open(), u.open(), u.open());
        assert_eq!((a, b, c, u.below(), u.next()), (0, 1, 2, 0, 3));
        u.settle(b);
        assert_eq!(u.below(), 0);
        u.settle(a);
        assert_eq!(u.below(), 2);
        u.settle(a); // settled twice: ignored
        u.settle(c);
        assert_eq!((u.below(), u.next()), (3, 3));
        assert_eq!(u.open(), 3);
    }
}
