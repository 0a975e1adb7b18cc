//! Errors. Each says what happened and what state you are in; an error that
//! refuses an event hands the event back, so nothing is lost by failing.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A topic or pattern that does not follow the grammar in [`Topic`](crate::Topic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {} `{input}`: {reason}", if *.pattern { "pattern" } else { "topic" })]
pub struct TopicError {
    /// What was given.
    pub input: String,
    /// Whether it was given as a pattern (true) or a topic (false).
    pub pattern: bool,
    /// What is wrong with it.
    pub reason: String,
}

/// A store error: what was being done, and why it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("durable store: {context}: {message}")]
pub struct StoreError {
    /// What was being done (`append to /data/log`, `read offset 42`, …).
    pub context: String,
    /// The cause, as the store reports it.
    pub message: String,
}

impl StoreError {
    /// An error with context and cause.
    pub fn new(context: impl Into<String>, cause: impl fmt::Display) -> Self {
        StoreError {
            context: context.into(),
            message: cause.to_string(),
        }
    }
}

/// Why a subscription could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The pattern is malformed.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The bus was closed.
    #[error("the bus is closed")]
    Closed,
    /// The durable store failed while setting up a replay.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A capacity of zero, or low watermark above the high one.
    #[error("invalid subscription options for `{pattern}`: {reason}")]
    Options {
        /// The pattern subscribed to.
        pattern: String,
        /// What is wrong.
        reason: String,
    },
}

/// What a subscriber's receive reports instead of an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// A lossy subscriber fell behind: this many events were dropped (oldest
    /// first) since its last receive. The next receive goes on with the oldest
    /// event still queued.
    #[error("lagged: {0} events were dropped because this subscriber fell behind")]
    Lagged(u64),
    /// The bus is closed (or every publisher is gone) and everything queued for
    /// this subscriber has been received.
    #[error("the bus is closed and this subscription is drained")]
    Closed,
    /// Replaying from the durable store failed; the subscription goes on live.
    #[error(transparent)]
    Store(StoreError),
}

/// Why an event was not published. The event is handed back in every case.
#[non_exhaustive]
pub enum PublishError<T> {
    /// The topic is malformed.
    InvalidTopic {
        /// What is wrong with the topic.
        error: TopicError,
        /// The event, not published.
        event: T,
    },
    /// The bus was closed.
    Closed {
        /// The event, not published.
        event: T,
    },
    /// The durable store persisting this topic did not acknowledge the event
    /// (or `try_publish` was used on a persisted topic). No subscriber received it.
    Store {
        /// What the store said.
        error: StoreError,
        /// The event, not published.
        event: T,
    },
    /// `try_publish` only: a lossless subscriber (or queue group) has no room.
    /// No subscriber received the event.
    Full {
        /// The subscriber's name.
        subscriber: Arc<str>,
        /// The topic the event was published on.
        topic: String,
        /// The event, not published.
        event: T,
    },
}

impl<T> PublishError<T> {
    /// Takes the event back.
    pub fn into_event(self) -> T {
        match self {
            PublishError::InvalidTopic { event, .. }
            | PublishError::Store { event, .. }
            | PublishError::Closed { event }
            | PublishError::Full { event, .. } => event,
        }
    }
}

impl<T> fmt::Display for PublishError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::InvalidTopic { error, .. } => write!(f, "not published: {error}"),
            PublishError::Closed { .. } => f.write_str("not published: the bus is closed"),
            PublishError::Store { error, .. } => write!(f, "not published: {error}"),
            PublishError::Full {
                subscriber, topic, ..
            } => write!(
                f,
                "not published on `{topic}`: subscriber `{subscriber}` is full (lossless); no subscriber received it"
            ),
        }
    }
}

impl<T> fmt::Debug for PublishError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublishError({self})")
    }
}

impl<T> std::error::Error for PublishError<T> {}

/// Why a request got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Nothing subscribes to the topic: no one could answer.
    #[error("no responders for request on `{topic}`")]
    NoResponders {
        /// The request's topic.
        topic: String,
    },
    /// No reply came in time.
    #[error("request on `{topic}` timed out after {timeout:?}")]
    Timeout {
        /// The request's topic.
        topic: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// The topic is malformed.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The bus was closed.
    #[error("request on `{topic}` failed: the bus is closed")]
    Closed {
        /// The request's topic.
        topic: String,
    },
    /// The topic is persisted and its store did not take the request.
    #[error("request on `{topic}` not sent: {reason}")]
    Store {
        /// The request's topic.
        topic: String,
        /// The store's error.
        reason: String,
    },
}

/// Why a reply could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// The event was not a request (it has no reply-to topic).
    #[error("event {id} on `{topic}` is not a request: it has no reply-to topic")]
    NotARequest {
        /// The event's id.
        id: String,
        /// Its topic.
        topic: String,
    },
    /// The requester is gone (it timed out or was dropped) and no one else
    /// listens on the reply topic.
    #[error("the requester waiting on `{reply_to}` is gone (timed out or dropped)")]
    RequesterGone {
        /// The reply topic.
        reply_to: String,
    },
}
