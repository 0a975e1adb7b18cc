//! A keyed queue group on persisted topics: the replay it starts with, and
//! the position it commits for the group as a whole.
//!
//! The group replays once, when its first member subscribes with a store
//! (`.consumer(name)`, `.from(..)`): the stored events go through the same
//! key routing as live ones, read a batch at a time by members that have
//! nothing queued, and live events wait behind the replay (they count
//! against the group's capacity, so publishers wait rather than pile up).
//! Live events the replay already read (offset below its end) are skipped.
//!
//! Members commit the events they handled ([`Subscription::commit`]); the
//! group's position is the lowest offset handed to a member and not
//! committed (or the end of what was handed out), written for the group's
//! consumer name whenever it moves forward. After a restart the group
//! replays from there: every key's events again in order, none missing;
//! events handled after the last commit that moved the position come again
//! (at least once: handlers de-duplicate by event id when that matters).
//!
//! [`Subscription::commit`]: crate::Subscription::commit

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use smallvec::SmallVec;

use super::Keyed;
use crate::envelope::Envelope;
use crate::error::StoreError;
use crate::queue::SubShared;
use crate::store::Replay;

/// What a keyed group on persisted topics keeps besides its queues.
pub(crate) struct GroupLog<T> {
    replay: Replaying<T>,
    /// Live events that came while replaying, with their keys.
    held: VecDeque<(u64, Arc<Envelope<T>>)>,
    /// Live events below this offset were replayed.
    skip_below: u64,
    /// Offsets handed to members and not committed yet.
    outstanding: BTreeSet<u64>,
    /// One past the highest offset handed out.
    next: u64,
    /// The position last written (serializes the group's commits).
    pub(crate) written: Arc<futures::lock::Mutex<u64>>,
}

enum Replaying<T> {
    /// The first member is reading the store's end: live events wait.
    Starting,
    Reading(Replay<T>),
    Done,
}

impl<T> GroupLog<T> {
    pub(crate) fn new() -> Self {
        GroupLog {
            replay: Replaying::Starting,
            held: VecDeque::new(),
            skip_below: 0,
            outstanding: BTreeSet::new(),
            next: 0,
            written: Arc::new(futures::lock::Mutex::new(0)),
        }
    }

    /// Live events waiting behind the replay.
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    /// The group's position: every offset below it was committed.
    pub(crate) fn position(&self) -> u64 {
        self.outstanding.first().copied().unwrap_or(self.next)
    }

    /// A member handled the event at `offset`.
    pub(crate) fn committed(&mut self, offset: u64) {
        self.outstanding.remove(&offset);
    }

    fn handed_out(&mut self, env: &Envelope<T>) {
        if let Some(o) = env.offset() {
            self.outstanding.insert(o);
            self.next = self.next.max(o + 1);
        }
    }
}

impl<T> Keyed<T> {
    /// Starts the group's replay (`None`: it goes live at once, committing
    /// from `start`).
    pub(crate) fn start_replay(&mut self, replay: Option<Replay<T>>, start: u64) {
        if let Some(log) = &mut self.log {
            log.next = log.next.max(start);
            *log.written
                .try_lock()
                .expect("no commit before the group starts") = start;
            match replay {
                Some(r) => {
                    log.skip_below = r.end;
                    log.replay = Replaying::Reading(r);
                }
                None => {
                    self.release_held();
                }
            }
        }
    }

    /// A live event for a group with a log: held behind the replay, dropped
    /// if the replay had it, else recorded as handed out. `false`: not to
    /// be queued now.
    pub(crate) fn admit_live(&mut self, key: u64, env: &Arc<Envelope<T>>) -> bool {
        let Some(log) = &mut self.log else {
            return true;
        };
        if !matches!(log.replay, Replaying::Done) {
            log.held.push_back((key, env.clone()));
            return false;
        }
        if env.offset().is_some_and(|o| o < log.skip_below) {
            return false;
        }
        log.handed_out(env);
        true
    }

    /// While replaying and `member` has nothing queued: reads stored events
    /// into the members' queues until it has one, the group is full, or the
    /// replay ends. Returns the other members given events (to wake).
    pub(crate) fn pump(
        &mut self,
        member: u64,
        sub: &SubShared<T>,
    ) -> Result<SmallVec<[u64; 4]>, StoreError> {
        let mut woken = SmallVec::new();
        let key = sub.key.as_ref().expect("a keyed group has a key function");
        loop {
            if self.has_queued(member) || self.len >= sub.capacity {
                return Ok(woken);
            }
            let Some(Replaying::Reading(replay)) = self.log.as_mut().map(|l| &mut l.replay) else {
                return Ok(woken);
            };
            match replay.events.next() {
                Some(Ok(env)) => {
                    if !sub.pattern.matches(&env.topic) || !sub.accepts(&env) {
                        continue;
                    }
                    let env = Arc::new(env);
                    if let Some(log) = &mut self.log {
                        log.handed_out(&env);
                    }
                    let to = self.push(key(&env), env);
                    if to != member && !woken.contains(&to) {
                        woken.push(to);
                    }
                }
                Some(Err(e)) => {
                    self.release_held();
                    return Err(e);
                }
                None => {
                    woken.extend(self.release_held());
                    return Ok(woken);
                }
            }
        }
    }

    /// The replay is over: the live events held behind it take their turn.
    fn release_held(&mut self) -> SmallVec<[u64; 4]> {
        let Some(log) = &mut self.log else {
            return SmallVec::new();
        };
        log.replay = Replaying::Done;
        let held = std::mem::take(&mut log.held);
        let admitted: Vec<_> = held
            .into_iter()
            .filter(|(key, env)| self.admit_live(*key, env))
            .collect();
        self.push_all(admitted)
    }
}
