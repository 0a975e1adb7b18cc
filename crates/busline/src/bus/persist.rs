//! Persisted topics: events on them are appended to a durable store first,
//! then delivered (see [`EventStore`](crate::EventStore)).

use std::sync::Arc;

use super::deliver::{unwrap_env, Receipt};
use super::route::Route;
use super::Bus;
use crate::envelope::Envelope;
use crate::error::PublishError;
use crate::store::EventStore;
use crate::topic::{Pattern, Topic};

/// Topics matching the pattern are persisted to the store.
pub(super) type PersistRule<T> = (Pattern, Arc<dyn EventStore<T>>);

impl<T: Send + Sync + 'static> Bus<T> {
    /// Appends to the route's store first (if the topic is persisted), then delivers.
    pub(super) async fn persist_and_deliver(
        &self,
        route: Arc<Route<T>>,
        mut env: Arc<Envelope<T>>,
    ) -> Result<Receipt, PublishError<T>> {
        let Some(store) = route.store.clone() else {
            return self.deliver(&route, env).await;
        };
        match store.append(&env).await {
            Ok(offset) => Arc::get_mut(&mut env)
                .expect("an undelivered envelope has a single owner")
                .set_offset(offset),
            Err(error) => {
                return Err(PublishError::Store {
                    error,
                    event: unwrap_env(env),
                })
            }
        }
        // Route again now that the event is durable: a subscriber that
        // registered meanwhile (say, one switching from replay to live) must
        // get it live, since it read the store's end before this offset.
        let route = match self.route(route.topic.as_str()) {
            Ok(r) => r,
            Err(_) => route,
        };
        self.deliver(&route, env).await
    }

    /// Persists events on topics matching `pattern` to `store` before they are
    /// delivered (see [`EventStore`](crate::EventStore)). The first matching pattern wins.
    pub fn persist(
        &self,
        pattern: &str,
        store: Arc<dyn EventStore<T>>,
    ) -> Result<(), crate::TopicError> {
        let pattern = Pattern::new(pattern)?;
        let inner = &*self.inner;
        let _reg = inner.registry.write();
        inner.stores.write().push((pattern, store));
        inner.routes_changed();
        Ok(())
    }

    /// The persist rules, in the order they were added (the first matching
    /// one wins): each pattern with its store.
    pub fn persisted(&self) -> Vec<(Pattern, Arc<dyn EventStore<T>>)> {
        self.inner.stores.read().clone()
    }

    /// The store persisting `topic`, if any.
    pub fn store_for(&self, topic: &str) -> Option<Arc<dyn EventStore<T>>> {
        let topic = Topic::new(topic).ok()?;
        self.inner
            .stores
            .read()
            .iter()
            .find(|(p, _)| p.matches(&topic))
            .map(|(_, s)| s.clone())
    }
}
