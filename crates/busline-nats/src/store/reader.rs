//! Replays: the caller's iterator ([`Reader`]) asks the helper runtime's
//! reader task for batches, which reads them through an ordered consumer.

use std::collections::VecDeque;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use busline::Envelope;
use busline::StoreError;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::{retrying, Remote};
use crate::codec;

/// Decodes a stored message into an envelope with its offset.
pub(super) fn decode_stored<T: DeserializeOwned>(
    r: &Remote,
    subject: &str,
    headers: Option<&async_nats::HeaderMap>,
    payload: &[u8],
    seq: u64,
) -> Result<Envelope<T>, StoreError> {
    let topic = subject
        .strip_prefix(r.prefix.as_str())
        .and_then(|t| t.strip_prefix('.'))
        .unwrap_or(subject);
    codec::decode::<T>(topic, headers, payload, r.codec)
        .map(|e| e.with_offset(seq - 1))
        .map_err(|e| StoreError::new(format!("read offset {} of stream `{}`", seq - 1, r.name), e))
}

pub(super) fn gone(r: &Remote, offset: u64, first: u64) -> StoreError {
    StoreError::new(
        format!("read offset {offset} of stream `{}`", r.name),
        format!(
            "the event is no longer in the stream (removed by limits, a purge or a delete); the next stored offset is {first}"
        ),
    )
}

/// Events per round trip of a replay.
const BATCH: u64 = 256;

/// How long a replay waits for the next event before it checks that the
/// event is still in the stream.
const PROBE_AFTER: Duration = Duration::from_millis(500);

type Batch<T> = Vec<Result<Envelope<T>, StoreError>>;

/// A replay: asks the helper's reader task for batches.
pub(super) struct Reader<T> {
    next: u64,
    to: u64,
    buf: VecDeque<Result<Envelope<T>, StoreError>>,
    ask: mpsc::UnboundedSender<u64>,
    answers: std_mpsc::Receiver<Batch<T>>,
    wait: Duration,
    name: String,
    done: bool,
}

impl<T> Iterator for Reader<T> {
    type Item = Result<Envelope<T>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.buf.is_empty() {
            if self.next >= self.to {
                self.done = true;
                return None;
            }
            let n = (self.to - self.next).min(BATCH);
            let answer = if self.ask.send(n).is_ok() {
                self.answers.recv_timeout(self.wait).ok()
            } else {
                None
            };
            match answer {
                Some(batch) if !batch.is_empty() => self.buf.extend(batch),
                _ => {
                    self.done = true;
                    return Some(Err(StoreError::new(
                        format!("read offset {} of stream `{}`", self.next, self.name),
                        "no answer from the server in time",
                    )));
                }
            }
        }
        let item = self.buf.pop_front()?;
        match &item {
            Ok(_) => self.next += 1,
            Err(_) => self.done = true,
        }
        Some(item)
    }
}
impl<T: DeserializeOwned + Send + 'static> Reader<T> {
    /// A replay of offsets `from..to`, read on the helper runtime `handle`.
    pub(super) fn start(r: &Remote, handle: &tokio::runtime::Handle, from: u64, to: u64) -> Self {
        let (ask, asks) = mpsc::unbounded_channel();
        let (answer, answers) = std_mpsc::channel();
        handle.spawn(reader_task::<T>(r.clone(), from, asks, answer));
        Reader {
            next: from,
            to,
            buf: VecDeque::new(),
            ask,
            answers,
            wait: r.timeout * 2,
            name: r.name.clone(),
            done: false,
        }
    }
}

/// The ordered consumer of a replay from offset `from`.
async fn open_replay(r: &Remote, from: u64) -> Result<Ordered, String> {
    let consumer = retrying(r.timeout, || {
        let stream = r.stream.clone();
        async move {
            stream
                .create_consumer(OrderedConfig {
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: from + 1,
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("ordered consumer: {e}"))
        }
    })
    .await?;
    consumer.messages().await.map_err(|e| e.to_string())
}

/// The helper's side of a replay: an ordered consumer from `from`, batch by batch.
async fn reader_task<T: DeserializeOwned + Send + 'static>(
    r: Remote,
    from: u64,
    mut asks: mpsc::UnboundedReceiver<u64>,
    answers: std_mpsc::Sender<Batch<T>>,
) {
    let mut next = from;
    let mut messages = match open_replay(&r, from).await {
        Ok(m) => m,
        Err(e) => {
            let _ = answers.send(vec![Err(StoreError::new(what(&r, next), e))]);
            return;
        }
    };
    while let Some(n) = asks.recv().await {
        let mut batch = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let item = next_event(&r, &mut messages, next).await;
            let failed = item.is_err();
            batch.push(item);
            if failed {
                break;
            }
            next += 1;
        }
        let failed = batch.last().is_some_and(|b| b.is_err());
        if answers.send(batch).is_err() || failed {
            return;
        }
    }
}

fn what(r: &Remote, offset: u64) -> String {
    format!("read offset {offset} of stream `{}`", r.name)
}

/// The event at offset `next`, the next message of the replay; an error
/// if it is gone from the stream or does not come in time.
async fn next_event<T: DeserializeOwned>(
    r: &Remote,
    messages: &mut Ordered,
    next: u64,
) -> Result<Envelope<T>, StoreError> {
    // Nothing within a moment: if the wanted event is gone (deleted at the
    // end of the stream, so no later one shows the gap), say so now rather
    // than after the whole timeout.
    let quick = tokio::time::timeout(PROBE_AFTER.min(r.timeout), messages.next()).await;
    let next_msg = match quick {
        Ok(m) => Ok(m),
        Err(_) => match r.stream.get_raw_message(next + 1).await {
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                return Err(StoreError::new(
                    what(r, next),
                    "the event is no longer in the stream (removed by limits, a purge or a delete)",
                ));
            }
            _ => tokio::time::timeout(r.timeout, messages.next()).await,
        },
    };
    let m = match next_msg {
        Ok(Some(Ok(m))) => m,
        Ok(Some(Err(e))) => return Err(StoreError::new(what(r, next), e)),
        Ok(None) => return Err(StoreError::new(what(r, next), "the consumer ended")),
        Err(_) => {
            return Err(StoreError::new(
                what(r, next),
                format!("not delivered within {:?}", r.timeout),
            ))
        }
    };
    let seq = m
        .info()
        .map_err(|e| StoreError::new(what(r, next), e))?
        .stream_sequence;
    if seq != next + 1 {
        return Err(gone(r, next, seq - 1));
    }
    decode_stored(
        r,
        m.message.subject.as_str(),
        m.message.headers.as_ref(),
        &m.message.payload,
        seq,
    )
}
