//! Subscribing: a subscription's options checked, its queue found or made
//! (see `registry`), and a replay from the store set up before it goes live.

use std::sync::Arc;

use super::SubscriptionBuilder;
use super::{Bus, Stamp};
use crate::error::SubscribeError;
use crate::queue::Policy;
use crate::store::{Durable, EventStore, Replay, StartAt};
use crate::subscription::Subscription;
use crate::topic::Pattern;

impl<T: Send + Sync + 'static> Bus<T> {
    // ----- subscribing -------------------------------------------------------

    /// Subscribes to `pattern` with the default policy (lossless, default capacity).
    pub fn subscribe(&self, pattern: &str) -> Result<Subscription<T>, SubscribeError> {
        self.subscriber(pattern).subscribe()
    }

    /// Starts building a subscription to `pattern` with chosen options.
    pub fn subscriber(&self, pattern: &str) -> SubscriptionBuilder<'_, T> {
        SubscriptionBuilder {
            bus: self,
            pattern: pattern.to_string(),
            policy: Policy::Lossless,
            capacity: None,
            name: None,
            filter: None,
            key: None,
            watermarks: None,
            start: StartAt::Now,
            consumer: None,
            store: None,
            include_own: false,
        }
    }

    pub(crate) fn subscribe_with(
        &self,
        mut b: SubscriptionBuilder<'_, T>,
    ) -> Result<Subscription<T>, SubscribeError> {
        let pattern = Pattern::new(&b.pattern)?;
        let stamp = self.stamp().cloned();
        if let Some(stamp) = &stamp {
            as_module(&mut b, stamp);
        }
        let start = std::mem::replace(&mut b.start, StartAt::Now);
        let consumer = b.consumer.take();
        let explicit = b.store.take();
        let store = match (&start, &consumer, explicit) {
            (StartAt::Now, None, _) => None,
            (_, _, s) => match self.replay_store(&pattern, s) {
                Ok(s) => Some(s),
                Err(reason) => {
                    return Err(SubscribeError::Options {
                        pattern: b.pattern.clone(),
                        reason,
                    })
                }
            },
        };
        if start == StartAt::Committed && consumer.is_none() {
            return Err(SubscribeError::Options {
                pattern: b.pattern.clone(),
                reason: "StartAt::Committed needs a consumer name (.consumer(name))".into(),
            });
        }
        let mut sub = self.register(b, pattern, store.is_some())?;
        if let Some(stamp) = stamp {
            let rare = sub.rare_mut();
            rare.discard_counter = Some(stamp.discarded.clone());
            rare.handling = Some(stamp.handling.clone());
        }
        let Some(store) = store else {
            return Ok(sub);
        };
        // Live first, then the store's end: see the `store` module docs.
        let end = store.end();
        let from = start_offset(&*store, &start, consumer.as_deref())?;
        if sub.shared.key.is_some() {
            start_keyed_group(&sub, &*store, from, end)?;
        } else if let Some(from) = from {
            let events = store
                .read(from.min(end), end)
                .map_err(SubscribeError::Store)?;
            sub.rare_mut().replay = Some(Replay { events, end });
        }
        sub.rare_mut().durable = Some(Durable { store, consumer });
        Ok(sub)
    }

    /// The store a subscription on `pattern` replays from: the one its
    /// topics are persisted to, which must be one store for all of them, so
    /// that the replay and the live events' offsets are of the same log.
    /// `explicit` (`.store(..)`) must be that store too, unless none of the
    /// pattern's topics is persisted (a store read for its history only).
    fn replay_store(
        &self,
        pattern: &Pattern,
        explicit: Option<Arc<dyn EventStore<T>>>,
    ) -> Result<Arc<dyn EventStore<T>>, String> {
        let stores = self.inner.stores.read();
        // Each topic goes to the first rule matching it: the first rule that
        // overlaps the pattern must take all of its topics.
        let first = stores.iter().find(|(p, _)| p.overlaps(pattern));
        let same = |a: &Arc<dyn EventStore<T>>, b: &Arc<dyn EventStore<T>>| {
            std::ptr::eq(Arc::as_ptr(a) as *const (), Arc::as_ptr(b) as *const ())
        };
        match (first, explicit) {
            (Some((p, _)), _) if !p.covers(pattern) => Err(format!(
                "its topics are not all persisted by one rule (`{p}` takes only some of them), so one log cannot replay them: subscribe to a narrower pattern"
            )),
            (Some((_, s)), None) => Ok(s.clone()),
            (Some((p, s)), Some(x)) if same(s, &x) => {
                let _ = p;
                Ok(x)
            }
            (Some((p, _)), Some(_)) => Err(format!(
                "its topics are persisted (by `{p}`) to another store than the one given with .store(..)"
            )),
            (None, Some(x)) => Ok(x),
            (None, None) if stores.is_empty() => Err(
                "starting in the past or as a named consumer needs a durable store, and the bus persists no topic".into(),
            ),
            (None, None) => Err(
                "starting in the past or as a named consumer needs a durable store, and none of its topics is persisted (name one with .store(..))".into(),
            ),
        }
    }
}

/// Where a subscription starting at `start` reads the store from (`None`:
/// live only).
fn start_offset<T: 'static>(
    store: &dyn EventStore<T>,
    start: &StartAt,
    consumer: Option<&str>,
) -> Result<Option<u64>, SubscribeError> {
    Ok(match start {
        StartAt::Now => None,
        StartAt::Beginning => Some(0),
        StartAt::Offset(o) => Some(*o),
        StartAt::Time(t) => Some(store.offset_for_time(*t)?),
        StartAt::Committed => Some(
            store
                .committed_offset(consumer.unwrap_or_default())?
                .unwrap_or(0),
        ),
    })
}

/// A keyed group on persisted topics replays once, through the group, when
/// its first member subscribes (see `queue::keyed::log`); a member joining
/// later reads what the group hands it.
fn start_keyed_group<T: 'static>(
    sub: &Subscription<T>,
    store: &dyn EventStore<T>,
    from: Option<u64>,
    end: u64,
) -> Result<(), SubscribeError> {
    let mut st = sub.shared.state.lock();
    let Some(group) = st.log_mut() else {
        return Err(SubscribeError::Options {
            pattern: sub.shared.pattern.to_string(),
            reason: format!(
                "{} was made without a store: a member joining it cannot replay or commit (give every member the same .consumer(name))",
                sub.shared.policy
            ),
        });
    };
    if sub.shared.id != sub.member {
        return Ok(());
    }
    let replay = match from {
        Some(from) => Some(Replay {
            events: store.read(from.min(end), end)?,
            end,
        }),
        None => None,
    };
    group.start_replay(replay, from.unwrap_or(end));
    // Members that came meanwhile wait for the replay: it has begun.
    let rx = st.receivers_mut().expect("a queue group has receivers");
    let wake: Vec<_> = rx.wakers.drain(..).map(|(_, w)| w).collect();
    drop(st);
    wake.into_iter().for_each(std::task::Waker::wake);
    Ok(())
}

/// A module's subscription (see `stamp`): named after the module unless it
/// says otherwise, and without the module's own events unless it opts in.
/// A queue group's filter is shared by all its members (possibly other
/// modules), so it gets no per-module filter.
fn as_module<T: 'static>(b: &mut SubscriptionBuilder<'_, T>, stamp: &Arc<Stamp>) {
    if b.name.is_none() {
        b.name = Some(stamp.name.to_string());
    }
    if b.include_own || matches!(b.policy, Policy::Queue(_)) {
        return;
    }
    let me = stamp.clone();
    let user = b.filter.take();
    b.filter = Some(Arc::new(move |env: &crate::Envelope<T>| {
        !me.is_own(env) && user.as_ref().is_none_or(|f| f(env))
    }));
}
