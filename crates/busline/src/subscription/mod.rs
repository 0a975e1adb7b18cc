//! Subscriptions: what a subscriber holds, and the delivery policy it chose.
//!
//! Every subscriber has its own queue (or, for a queue group, the group has
//! one) and its own policy; one bus serves any mix of them. See the crate docs
//! for the semantics of each policy.
//!
//! - [`Subscription`], the handle, and what dropping it does (this file);
//! - `receive`: receiving (`recv`, `try_recv`, `Stream`) from the queue the
//!   subscriber reads (see the `queue` module);
//! - `replay`: replay from a durable store, then live; committing a named
//!   consumer's position.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use crate::envelope::Envelope;
use crate::lineage::Handling;
use crate::queue::{Left, Reader, SubShared};
use crate::topic::Pattern;

mod receive;
mod replay;

pub use crate::queue::{Filter, Policy};

/// Where a subscription is registered (its bus), which it leaves when dropped.
pub(crate) trait Registrar<T>: Send + Sync {
    /// Runs `leave` (a member leaving its queue) under the registry's lock,
    /// then keeps a departed ring member's counters and unregisters a queue
    /// nobody reads any more.
    fn leave(&self, shared: &Arc<SubShared<T>>, leave: &mut dyn FnMut() -> Left) -> Left;
}

/// A subscriber's handle: receive with [`recv`](Self::recv), or use it as a
/// [`Stream`](futures::Stream). Dropping it unsubscribes; this never blocks
/// or fails a publisher.
pub struct Subscription<T> {
    pub(crate) shared: Arc<SubShared<T>>,
    pub(crate) bus: Weak<dyn Registrar<T>>,
    /// Lossless and lossy: its place in the ring.
    pub(crate) reader: Option<Reader>,
    /// This subscriber's id (its member id in a ring or queue group).
    pub(crate) member: u64,
    /// How many polls in a row found nothing and yielded instead of parking.
    pub(crate) yielded: u8,
    /// Ring events read since it last found none or read a request
    /// (saturating; see `receive::STREAK`).
    pub(crate) streak: u8,
    /// What only some subscriptions use (boxed: an idle subscriber without
    /// any of it costs one pointer).
    pub(crate) rare: Option<Box<Rare<T>>>,
}

/// The parts of a [`Subscription`] that only some have: a keyed group
/// member's batch, a replay, a store, a module's bookkeeping.
pub(crate) struct Rare<T> {
    /// Its name, where it is not its queue's (a ring's member that joined
    /// later, a queue group's member named apart from its group).
    pub(crate) name: Option<Arc<str>>,
    /// A keyed group member: events it took and has not received yet.
    pub(crate) local: VecDeque<Arc<Envelope<T>>>,
    /// Events still to replay from the store before going live.
    pub(crate) replay: Option<crate::store::Replay<T>>,
    pub(crate) durable: Option<crate::store::Durable<T>>,
    /// Live events with a store offset below this were replayed already.
    pub(crate) skip_below: Option<u64>,
    /// Where dropping it adds the number of events it discards (a module's
    /// count), computed under the same lock as the bus's own count.
    pub(crate) discard_counter: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// A module's subscription: where it records the event being handled.
    pub(crate) handling: Option<Handling>,
}

impl<T> Default for Rare<T> {
    fn default() -> Self {
        Rare {
            name: None,
            local: VecDeque::new(),
            replay: None,
            durable: None,
            skip_below: None,
            discard_counter: None,
            handling: None,
        }
    }
}

impl<T> Rare<T> {
    /// Nothing here changes how it receives: no replay (or replayed events
    /// to skip), no batch of its own and no module's bookkeeping.
    pub(crate) fn is_plain(&self) -> bool {
        self.reads_live() && self.handling.is_none() && self.local.is_empty()
    }

    /// It receives from the live queue (or its own batch): no replay, and
    /// no replayed events to skip.
    pub(crate) fn reads_live(&self) -> bool {
        self.replay.is_none() && self.skip_below.is_none()
    }
}

impl<T> fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("name", &self.own_name())
            .field("pattern", &self.shared.pattern)
            .field("policy", &self.shared.policy)
            .finish()
    }
}

impl<T> Subscription<T> {
    /// The handle of subscriber `member` on `shared` (a ring member reads with `reader`).
    pub(crate) fn new(
        shared: Arc<SubShared<T>>,
        bus: Weak<dyn Registrar<T>>,
        reader: Option<Reader>,
        member: u64,
        name: Arc<str>,
    ) -> Self {
        let mut sub = Subscription {
            shared,
            bus,
            reader,
            member,
            yielded: 0,
            streak: 0,
            rare: None,
        };
        if *name != *sub.shared.name {
            sub.rare_mut().name = Some(name);
        }
        sub
    }

    /// Its name: its own, or else its queue's.
    fn own_name(&self) -> &str {
        let own = self.rare.as_ref().and_then(|r| r.name.as_deref());
        own.unwrap_or(&self.shared.name)
    }

    /// Its [`Rare`] parts, made on first use.
    pub(crate) fn rare_mut(&mut self) -> &mut Rare<T> {
        self.rare.get_or_insert_with(Default::default)
    }
}

impl<T: Send + Sync + 'static> Subscription<T> {
    /// The subscriber's name.
    pub fn name(&self) -> &str {
        self.own_name()
    }

    /// The pattern subscribed to.
    pub fn pattern(&self) -> &Pattern {
        &self.shared.pattern
    }

    /// The delivery policy.
    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// This subscriber's counters (one consistent snapshot).
    pub fn stats(&self) -> crate::stats::SubscriberStats {
        use crate::stats::SubscriberStats;
        if let Policy::Lossless | Policy::Lossy = self.shared.policy {
            let st = self.shared.state.lock();
            if let Some(m) = st.readers().iter().find(|m| m.id == self.member) {
                return SubscriberStats::of_member(&self.shared, &st, m);
            }
        }
        let mut all = SubscriberStats::of(&self.shared);
        let i = all.iter().position(|s| s.id == self.member).unwrap_or(0);
        all.swap_remove(i)
    }

    /// Ends the subscription, as dropping it does, and returns how many
    /// events it had been handed and never received. Those are discarded and
    /// counted in the bus's `discarded`, as on drop. Use it to learn what
    /// was lost: drain with [`try_recv`](Self::try_recv), then unsubscribe.
    /// A queue group member returns 0: what the group holds stays with the
    /// other members, and only the last one to leave discards it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus: busline::Bus<u32> = busline::Bus::new();
    /// let sub = bus.subscriber("a").subscribe().unwrap();
    /// bus.publish_to("a", 1).await.unwrap();
    /// bus.publish_to("a", 2).await.unwrap();
    /// assert_eq!(sub.unsubscribe(), 2);
    /// assert_eq!(bus.stats().discarded, 2);
    /// # }
    /// ```
    pub fn unsubscribe(mut self) -> u64 {
        use std::sync::atomic::AtomicU64;
        let mine = Arc::new(AtomicU64::new(0));
        let outer = self.rare_mut().discard_counter.replace(mine.clone());
        drop(self);
        let n = mine.load(Ordering::Relaxed);
        if let Some(c) = outer {
            c.fetch_add(n, Ordering::Relaxed);
        }
        n
    }
}

impl<T> Subscription<T> {
    /// Events waiting for this subscriber.
    pub fn len(&self) -> usize {
        let queued = match (&self.reader, &self.shared.policy) {
            (Some(r), _) => {
                let ring = self.shared.ring();
                let tail = ring.tail();
                tail.saturating_sub(r.cursor.max(ring.oldest(tail))) as usize
            }
            (None, Policy::Lossless | Policy::Lossy) => 0,
            _ => self.shared.state.lock().depth(&self.shared),
        };
        queued + self.rare.as_ref().map_or(0, |r| r.local.len())
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        let (local, counter) = match self.rare.as_deref_mut() {
            Some(r) => (std::mem::take(&mut r.local), r.discard_counter.as_ref()),
            None => (Default::default(), None),
        };
        let mut local = Some(local);
        let (shared, member) = (&self.shared, self.member);
        // Counted while the bus's registry is locked, as the bus counts its own.
        let mut leave = || {
            let left = shared.leave(member, local.take().unwrap_or_default());
            if let Some(c) = counter {
                c.fetch_add(left.lost, Ordering::Relaxed);
            }
            left
        };
        let left = match self.bus.upgrade() {
            Some(bus) => bus.leave(shared, &mut leave),
            None => leave(),
        };
        for w in left.wake {
            w.wake();
        }
    }
}
