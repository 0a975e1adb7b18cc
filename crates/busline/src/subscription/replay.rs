//! Replay then live: a subscription that starts in the past reads the
//! durable store up to the end it saw when it subscribed, then goes on with
//! live events, skipping those the replay gave already (see
//! [`EventStore`](crate::EventStore)). A named consumer commits its position there.

use std::sync::Arc;
use std::task::{Context, Poll};

use super::Subscription;
use crate::envelope::Envelope;
use crate::error::RecvError;

impl<T: Send + Sync + 'static> Subscription<T> {
    pub(super) fn poll_inner(
        &mut self,
        mut cx: Option<&mut Context<'_>>,
    ) -> Poll<Result<Arc<Envelope<T>>, RecvError>> {
        if let Some(rare) = self.rare.as_deref_mut() {
            if let Some(replay) = &mut rare.replay {
                for item in replay.events.by_ref() {
                    match item {
                        Ok(env) => {
                            let sub = &*self.shared;
                            if sub.pattern.matches(&env.topic) && sub.accepts(&env) {
                                return Poll::Ready(Ok(Arc::new(env)));
                            }
                        }
                        Err(e) => {
                            rare.skip_below = Some(replay.end);
                            rare.replay = None;
                            return Poll::Ready(Err(RecvError::Store(e)));
                        }
                    }
                }
                rare.skip_below = Some(replay.end);
                rare.replay = None;
            }
        }
        let skip_below = self.rare.as_ref().and_then(|r| r.skip_below);
        loop {
            let r = self.poll_live(cx.as_deref_mut());
            if let (Poll::Ready(Ok(e)), Some(end)) = (&r, skip_below) {
                if e.offset().is_some_and(|o| o < end) {
                    continue; // replayed already
                }
            }
            return r;
        }
    }

    /// Durably records that this named consumer has handled `env`: after a
    /// restart, `from(StartAt::Committed)` resumes with the event after it.
    ///
    /// The future owns what it needs (it does not borrow the subscription), so
    /// it is `Send` and can be awaited in a spawned task or a module.
    pub fn commit(
        &self,
        env: &Envelope<T>,
    ) -> impl std::future::Future<Output = Result<(), crate::error::StoreError>> + Send + 'static
    {
        use crate::error::StoreError;
        let target = (|| {
            let durable = self.rare.as_ref().and_then(|r| r.durable.as_ref());
            let name = durable.and_then(|d| d.consumer.as_ref());
            let (Some(d), Some(name)) = (durable, name) else {
                return Err(StoreError::new(
                    format!("commit on subscription `{}`", self.shared.name),
                    "it was not made with .consumer(name)",
                ));
            };
            let Some(offset) = env.offset() else {
                return Err(StoreError::new(
                    format!("commit of event {} by consumer `{name}`", env.id),
                    "the event has no store offset (its topic is not persisted)",
                ));
            };
            Ok((d.store.clone(), name.clone(), offset))
        })();
        // A keyed group's members commit the group's position (see
        // `queue::keyed::log`): the lowest offset not handled yet.
        let group = target.as_ref().ok().and_then(|&(_, _, offset)| {
            let mut st = self.shared.state.lock();
            let log = st.log_mut()?.log.as_mut()?;
            log.committed(offset);
            Some((log.written.clone(), self.shared.clone()))
        });
        async move {
            let (store, name, offset) = target?;
            let Some((written, shared)) = group else {
                return store.commit_offset(&name, offset + 1).await;
            };
            let mut written = written.lock().await;
            let position = shared
                .state
                .lock()
                .log_mut()
                .and_then(|k| k.log.as_ref().map(|l| l.position()));
            match position {
                Some(p) if p > *written => {
                    store.commit_offset(&name, p).await?;
                    *written = p;
                    Ok(())
                }
                _ => Ok(()),
            }
        }
    }
}
