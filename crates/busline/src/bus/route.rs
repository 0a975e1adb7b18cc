//! Routing: the subscribers a topic goes to, found in the pattern index and
//! kept in a cache (and, per thread, the route last published on) until
//! the subscribers or persist rules change.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::{Bus, BusInner};
use crate::envelope::Envelope;
use crate::error::PublishError;
use crate::message::Message;
use crate::queue::{Ring, SubShared, Targets};
use crate::store::EventStore;
use crate::topic::Topic;

/// Routes kept in the topic cache before it is cleared.
const ROUTE_CACHE_LIMIT: usize = 4096;

pub(crate) struct Route<T> {
    pub(super) epoch: u64,
    pub(super) topic: Topic,
    /// Sorted by id: publishers lock them in this order.
    subs: Box<[Arc<SubShared<T>>]>,
    /// Whether any of them has a filter.
    filtered: bool,
    /// The durable store events on this topic go to first, if any.
    pub(super) store: Option<Arc<dyn EventStore<T>>>,
}

impl<T> Route<T> {
    /// The subscribers `env` goes to: the whole route, or those whose filter
    /// takes it. When every filter takes it (a module's subscription
    /// refuses only the module's own events), that is the whole route too,
    /// without a list to make; each filter runs once either way.
    #[inline]
    pub(super) fn targets(&self, env: &Envelope<T>) -> Targets<'_, T> {
        if !self.filtered {
            return Targets::All(&self.subs);
        }
        match self.subs.iter().position(|s| !s.accepts(env)) {
            None => Targets::All(&self.subs),
            Some(i) => {
                let rest = self.subs[i + 1..].iter().filter(|s| s.accepts(env));
                Targets::Filtered(self.subs[..i].iter().chain(rest).collect())
            }
        }
    }

    /// The ring of the route's only subscriber, if that has a single
    /// reader: a publish loop here takes turns with that reader (see
    /// `budget::budget_due`).
    #[inline]
    pub(super) fn lone_reader_ring(&self) -> Option<&Ring<T>> {
        match &self.subs[..] {
            [s] => s.lone_reader_ring(),
            _ => None,
        }
    }

    /// Leaves `waker` with the route's lone ring member, if it has one,
    /// to be woken when that member parks.
    #[cold]
    pub(super) fn hand_off(&self, waker: &std::task::Waker) {
        if let [s] = &self.subs[..] {
            if let Some(ring) = s.lone_reader_ring() {
                ring.hand_off(waker);
            }
        }
    }

    /// Counts the event as `filtered` for the route's subscribers whose filter
    /// refused it: once it is delivered (a publish that fails or is retried
    /// counts nothing).
    pub(super) fn count_filtered(&self, targets: &Targets<'_, T>) {
        if let Targets::Filtered(taken) = targets {
            let mut k = 0;
            for s in self.subs.iter() {
                if taken.get(k).is_some_and(|t| Arc::ptr_eq(t, s)) {
                    k += 1;
                } else {
                    s.count_filtered();
                }
            }
        }
    }
}

/// The route this thread published on last (a publisher usually repeats
/// its topic): found without the cache's lock and hash. Valid while the
/// bus (by its random node id) and its routing epoch are the same. Weak:
/// it keeps no subscriber or store alive once the bus's cache lets go.
/// `route` is a `Weak<Route<T>>` for the bus's `T`, boxed: a reference to
/// it is checked for its type (one compare) without taking the `Weak` out.
struct LastRoute {
    bus: u64,
    epoch: u64,
    topic: Box<str>,
    route: Box<dyn std::any::Any>,
}

thread_local! {
    static LAST_ROUTE: std::cell::RefCell<Option<LastRoute>> = const { std::cell::RefCell::new(None) };
}

/// Why an event could not be routed.
pub(super) enum RouteError {
    Closed,
    Topic(crate::TopicError),
}

/// An event wrapped in its envelope, with the subscribers it goes to.
pub(super) type Prepared<T> = (Arc<Route<T>>, Arc<Envelope<T>>);

impl<T: Send + Sync + 'static> Bus<T> {
    /// The route for `topic`, unless the bus is closed or the topic is malformed.
    pub(super) fn route_checked(&self, topic: &str) -> Result<Arc<Route<T>>, RouteError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(RouteError::Closed);
        }
        self.route(topic).map_err(RouteError::Topic)
    }

    /// Wraps the message in its envelope, or hands it back with why it can't be routed.
    pub(super) fn wrap(
        &self,
        route: Result<Arc<Route<T>>, RouteError>,
        msg: Message<T>,
    ) -> Result<Prepared<T>, PublishError<T>> {
        let route = match route {
            Ok(r) => r,
            Err(e) => return Err(e.refuse(msg.payload)),
        };
        let env = self.envelope(route.topic.clone(), msg);
        Ok((route, env))
    }

    /// [`wrap`](Self::wrap) for a bare event (the common publish): its
    /// envelope is made without a [`Message`] in between.
    pub(super) fn wrap_event(
        &self,
        route: Result<Arc<Route<T>>, RouteError>,
        event: T,
    ) -> Result<Prepared<T>, PublishError<T>> {
        let route = match route {
            Ok(r) => r,
            Err(e) => return Err(e.refuse(event)),
        };
        let env = self.event_envelope(route.topic.clone(), event);
        Ok((route, env))
    }

    /// [`wrap_event`](Self::wrap_event) with what `set` adds to the
    /// envelope, on a bus without a stamp (see [`Bus::plain_envelope`]).
    pub(super) fn wrap_plain(
        &self,
        route: Result<Arc<Route<T>>, RouteError>,
        event: T,
        set: impl FnOnce(&mut Envelope<T>),
    ) -> Result<Prepared<T>, PublishError<T>> {
        debug_assert!(self.stamp().is_none(), "a stamped bus stamps its events");
        let route = match route {
            Ok(r) => r,
            Err(e) => return Err(e.refuse(event)),
        };
        let env = self.plain_envelope(route.topic.clone(), event, set);
        Ok((route, env))
    }

    /// The subscribers matching `topic`, from the cache when it is current.
    pub(super) fn route(&self, topic: &str) -> Result<Arc<Route<T>>, crate::TopicError> {
        let inner = &*self.inner;
        let epoch = inner.epoch.load(Ordering::Acquire);
        if let Some(r) = LAST_ROUTE.with(|c| {
            let c = c.borrow();
            let e = c.as_ref()?;
            if e.bus == inner.node && e.epoch == epoch && same_text(&e.topic, topic) {
                e.route.downcast_ref::<Weak<Route<T>>>()?.upgrade()
            } else {
                None
            }
        }) {
            return Ok(r);
        }
        if let Some(r) = inner.cache.read().get(topic) {
            if r.epoch == epoch {
                let r = r.clone();
                LAST_ROUTE.with(|c| {
                    *c.borrow_mut() = Some(LastRoute {
                        bus: inner.node,
                        epoch,
                        topic: topic.into(),
                        route: Box::new(Arc::downgrade(&r)),
                    })
                });
                return Ok(r);
            }
        }
        let topic = Topic::new(topic)?;
        let reg = inner.registry.read();
        let epoch = inner.epoch.load(Ordering::Acquire);
        let mut ids = Vec::new();
        reg.trie.matches(topic.as_str(), &mut ids);
        ids.sort_unstable();
        ids.dedup();
        let subs: Box<[_]> = ids.iter().map(|id| reg.subs[id].clone()).collect();
        drop(reg);
        let store = inner
            .stores
            .read()
            .iter()
            .find(|(p, _)| p.matches(&topic))
            .map(|(_, s)| s.clone());
        let route = Arc::new(Route {
            epoch,
            topic: topic.clone(),
            filtered: subs.iter().any(|s| s.filter.is_some()),
            store,
            subs,
        });
        let mut cache = inner.cache.write();
        if cache.len() >= ROUTE_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(topic.as_str().into(), route.clone());
        Ok(route)
    }
}

/// `a == b`, for the short strings topics are without a call to `memcmp`:
/// up to 32 bytes, as overlapping 8-byte words.
#[inline]
fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], i: usize| u64::from_ne_bytes(s[i..i + 8].try_into().expect("8 bytes"));
    match n {
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        17..=32 => {
            word(a, 0) == word(b, 0)
                && word(a, 8) == word(b, 8)
                && word(a, n - 16) == word(b, n - 16)
                && word(a, n - 8) == word(b, n - 8)
        }
        _ => a == b,
    }
}

impl RouteError {
    /// The publish error for an event that could not be routed (it comes back in it).
    fn refuse<T>(self, event: T) -> PublishError<T> {
        match self {
            RouteError::Closed => PublishError::Closed { event },
            RouteError::Topic(error) => PublishError::InvalidTopic { error, event },
        }
    }
}

impl<T> BusInner<T> {
    /// The routes cached now (for tests).
    #[cfg(test)]
    pub(super) fn cached_routes(&self) -> usize {
        self.cache.read().len()
    }
}

#[cfg(test)]
mod tests {
    use super::same_text;

    #[test]
    fn same_text_tells_every_differing_byte_at_every_length() {
        let text = "abcdefghijklmnopqrstuvwxyz0123456789.ABCDEFGH";
        for n in 0..=text.len() {
            let a = &text[..n];
            assert!(same_text(a, &String::from(a)), "{a:?} against itself");
            for i in 0..n {
                let mut b = a.as_bytes().to_vec();
                b[i] = b'_';
                let b = String::from_utf8(b).expect("ascii");
                assert!(!same_text(a, &b), "{a:?} against {b:?}");
            }
            if n > 0 {
                assert!(!same_text(a, &text[..n - 1]), "{a:?} against a shorter one");
            }
        }
    }
}
