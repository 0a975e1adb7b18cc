//! Publishing a breaker's transitions on a [`Bus`]:
//! [`CircuitBreaker::publish_to`].

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{CircuitBreaker, Transition};
use crate::{Bus, Message, Topic, TopicError};

impl CircuitBreaker {
    /// Publishes every state change on `bus`, on topic
    /// `$sys.breaker.<name>.<state>`, with payload `make(&transition)`, in
    /// the order the changes happened.
    ///
    /// Publishing does not hold up the call that changed the state: if the
    /// event cannot go at once (a lossless subscriber is full, or the topic
    /// is persisted and the store must acknowledge it first), it and every
    /// later change are published in order from a spawned task. Without a
    /// tokio runtime to spawn on, such an event is logged as lost. Fails if
    /// the breaker's name cannot be a topic token (it contains `.`, a space,
    /// `*` or `>`). The bus is held weakly: the hook stops once the bus is
    /// dropped.
    pub fn publish_to<T: Send + Sync + 'static>(
        &self,
        bus: &Bus<T>,
        make: impl Fn(&Transition) -> T + Send + Sync + 'static,
    ) -> Result<(), TopicError> {
        let name = &self.shared.name;
        if name.contains('.') {
            return Err(TopicError {
                input: name.to_string(),
                pattern: false,
                reason: "a breaker name is one topic token and cannot contain `.`".into(),
            });
        }
        Topic::new(&format!("$sys.breaker.{name}.open"))?;
        let weak = bus.downgrade();
        // Changes waiting for the publishing task, oldest first; `Some` while
        // that task runs (later changes queue behind it to keep the order).
        let backlog: Arc<Mutex<Option<VecDeque<Message<T>>>>> = Arc::new(Mutex::new(None));
        self.on_transition(move |t| {
            let Some(bus) = weak.upgrade() else { return };
            let msg = Message::new(make(t))
                .topic(format!("$sys.breaker.{}.{}", t.breaker, t.to))
                .source(format!("breaker.{}", t.breaker));
            let mut queue = backlog.lock();
            if let Some(q) = queue.as_mut() {
                q.push_back(msg);
                return;
            }
            let msg = match bus.try_send(msg) {
                Ok(_) | Err(crate::PublishError::Closed { .. }) => return,
                Err(e) => Message::new(e.into_event())
                    .topic(format!("$sys.breaker.{}.{}", t.breaker, t.to))
                    .source(format!("breaker.{}", t.breaker)),
            };
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                tracing::warn!(breaker = %t.breaker, from = %t.from, to = %t.to, "breaker transition not published: the bus could not take it at once and there is no tokio runtime to wait on");
                return;
            };
            *queue = Some(VecDeque::from([msg]));
            drop(queue);
            let backlog = backlog.clone();
            rt.spawn(async move {
                loop {
                    let next = {
                        let mut queue = backlog.lock();
                        match queue.as_mut().and_then(VecDeque::pop_front) {
                            Some(m) => m,
                            None => {
                                *queue = None;
                                return;
                            }
                        }
                    };
                    match bus.send(next).await {
                        Ok(_) | Err(crate::PublishError::Closed { .. }) => {}
                        Err(e) => tracing::warn!(error = %e, "breaker transition not published"),
                    }
                }
            });
        });
        Ok(())
    }
}
