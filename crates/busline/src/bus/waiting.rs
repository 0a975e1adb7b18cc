//! Requests waiting for their reply, by reply inbox number.
//!
//! Inbox numbers are handed out in order and most requests are answered
//! in about that order, so the registrations sit in a window over the
//! recent numbers: registering appends to it, and taking the oldest moves
//! its start past every slot already emptied. That costs an index, not a
//! hash-map insert and remove per request.
//!
//! A request that waits long (a long timeout, a slow responder) would hold
//! the window's start back while requests after it come and go; once the
//! window is more than twice as long as the requests still in it (plus a
//! constant), its oldest slots move on and the live ones among them go to
//! a map beside it. So memory stays proportional to the requests waiting,
//! whatever their timeouts, and each slot is moved at most once. A request
//! that registers after the window moved past its number (two requesters
//! racing) goes to the map too.

use std::collections::VecDeque;

use ahash::AHashMap;

/// Slots the window keeps beyond twice the live ones before it moves on.
const SLACK: usize = 1024;

/// Registrations (`S`: where the answer goes) by inbox number.
pub(super) struct Waiting<S> {
    /// Slots of inboxes `start..start + window.len()`; `None` once taken.
    /// Its first slot is never empty (the window starts after such slots).
    window: VecDeque<Option<S>>,
    /// The number of the window's first slot.
    start: u64,
    /// Registrations of numbers below `start`.
    older: AHashMap<u64, S>,
    /// Registrations held, in the window and in `older`.
    live: usize,
}

impl<S> Waiting<S> {
    pub(super) fn new() -> Self {
        Waiting {
            window: VecDeque::new(),
            start: 0,
            older: AHashMap::new(),
            live: 0,
        }
    }

    /// How many registrations are held.
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Registers inbox `n` (a number not registered before).
    pub(super) fn insert(&mut self, n: u64, s: S) {
        self.live += 1;
        let Some(i) = n.checked_sub(self.start) else {
            self.older.insert(n, s);
            return;
        };
        if self.window.is_empty() {
            // Nothing in the window to keep: it starts here.
            self.start = n;
            self.window.push_back(Some(s));
            return;
        }
        match usize::try_from(i) {
            Ok(i) if i < self.window.len() => self.window[i] = Some(s),
            Ok(i) if i - self.window.len() <= SLACK => {
                self.window.resize_with(i, || None);
                self.window.push_back(Some(s));
            }
            // Far ahead of the window (numbers skipped): start it afresh
            // there, keeping what it holds in `older`.
            _ => {
                self.retire(self.window.len());
                self.start = n;
                self.window.push_back(Some(s));
            }
        }
        self.bound();
    }

    /// Takes the registration of inbox `n`, if it is held.
    pub(super) fn remove(&mut self, n: u64) -> Option<S> {
        let s = match n.checked_sub(self.start) {
            None => self.older.remove(&n),
            // The oldest (the window's first slot is never empty): the
            // window starts after it, and after the taken slots behind it.
            Some(0) => {
                let first = self.window.pop_front()?;
                self.start += 1;
                self.skip_empty();
                first
            }
            Some(i) => usize::try_from(i)
                .ok()
                .and_then(|i| self.window.get_mut(i))
                .and_then(Option::take),
        }?;
        self.live -= 1;
        self.bound();
        Some(s)
    }

    /// Whether inbox `n` is registered.
    pub(super) fn contains(&self, n: u64) -> bool {
        match n.checked_sub(self.start) {
            None => self.older.contains_key(&n),
            Some(i) => usize::try_from(i)
                .ok()
                .and_then(|i| self.window.get(i))
                .is_some_and(Option::is_some),
        }
    }

    /// Drops every registration.
    pub(super) fn clear(&mut self) {
        self.window.clear();
        self.older.clear();
        self.live = 0;
    }

    /// Keeps the window at most twice as long as the registrations held,
    /// plus [`SLACK`].
    fn bound(&mut self) {
        if self.window.len() > 2 * self.live + SLACK {
            self.retire(self.window.len() - 2 * self.live);
        }
    }

    /// Moves the window's start past its taken slots.
    fn skip_empty(&mut self) {
        while let Some(None) = self.window.front() {
            self.window.pop_front();
            self.start += 1;
        }
    }

    /// Moves the window's start on by `k` slots, keeping their live
    /// registrations in `older`.
    fn retire(&mut self, k: usize) {
        for _ in 0..k {
            if let Some(Some(s)) = self.window.pop_front() {
                self.older.insert(self.start, s);
            }
            self.start += 1;
        }
        self.skip_empty();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{Waiting, SLACK};

    /// A small deterministic generator (xorshift), so a failure replays.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Against a plain map: registrations made slightly out of order, taken
    /// in any order, some kept for a long time, numbers skipped now and
    /// then; every registration is found until it is taken, and never after.
    #[test]
    fn every_registration_is_found_until_taken_whatever_the_order() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut w = Waiting::new();
        let mut model = BTreeMap::new();
        let mut next = 0u64;
        let mut held_back = Vec::new();
        for step in 0..200_000u64 {
            match rng.below(10) {
                // Register, sometimes after a later number did (racing
                // requesters), sometimes skipping numbers.
                0..=4 => {
                    let n = if !held_back.is_empty() && rng.below(3) == 0 {
                        held_back.swap_remove(0)
                    } else {
                        next += 1 + if rng.below(500) == 0 { 5_000 } else { 0 };
                        if rng.below(8) == 0 {
                            held_back.push(next);
                            continue;
                        }
                        next
                    };
                    w.insert(n, step);
                    model.insert(n, step);
                }
                // Take a recent one, the oldest, or one that is not held.
                5..=7 => {
                    let n = match rng.below(4) {
                        0 => model.keys().next().copied().unwrap_or(0),
                        1 => next + 1,
                        _ => next.saturating_sub(rng.below(64)),
                    };
                    assert_eq!(w.remove(n), model.remove(&n), "take {n} at {step}");
                }
                _ => {
                    let n = next.saturating_sub(rng.below(4096));
                    assert_eq!(w.contains(n), model.contains_key(&n), "{n} at {step}");
                }
            }
            assert_eq!(w.len(), model.len());
            assert!(w.window.len() <= 2 * w.len() + SLACK, "{}", w.window.len());
        }
        for (n, s) in std::mem::take(&mut model) {
            assert_eq!(w.remove(n), Some(s));
        }
        assert_eq!(w.len(), 0);
        assert!(w.window.is_empty() && w.older.is_empty());
    }

    /// One request that waits while a million others come and go keeps the
    /// window short: memory follows the requests waiting, not the ones made.
    #[test]
    fn a_request_waiting_long_does_not_hold_the_window_open() {
        let mut w = Waiting::new();
        w.insert(0, 0u64);
        for n in 1..1_000_000 {
            w.insert(n, n);
            assert_eq!(w.remove(n), Some(n));
            assert!(w.window.len() <= 2 + SLACK, "{}", w.window.len());
        }
        assert!(w.contains(0));
        assert_eq!(w.remove(0), Some(0));
        assert_eq!(w.len(), 0);
    }
}
