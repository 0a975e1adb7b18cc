//! The [`EventStore`] implementation: appends, reads, times and commits,
//! each run on the helper runtime.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use busline::Envelope;
use busline::{EventStore, StoreError, StoredEvents};
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::offsets::{kv_key, kv_value, parse_kv_value};
use super::reader::{decode_stored, gone, Reader};
use super::{retrying, JetStreamStore};

impl<T> EventStore<T> for JetStreamStore<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn append<'a>(&'a self, env: &'a Envelope<T>) -> BoxFuture<'a, Result<u64, StoreError>> {
        let what = || {
            format!(
                "append event {} on `{}` to stream `{}`",
                env.id, env.topic, self.remote.name
            )
        };
        let wire = match self.encoder.encode(env) {
            Ok(w) => w,
            Err(e) => return Box::pin(std::future::ready(Err(StoreError::new(what(), e)))),
        };
        // Refused by the client (and so by every retry) when too large: say so now.
        let subject = format!("{}.{}", self.remote.prefix, wire.subject);
        let size = wire.size();
        let max = self.remote.client.server_info().max_payload;
        if max > 0 && size > max {
            let e = format!(
                "it is {size} bytes encoded (payload and headers), over the server's max_payload of {max} bytes"
            );
            return Box::pin(std::future::ready(Err(StoreError::new(what(), e))));
        }
        let r = self.remote.clone();
        let end = self.end.clone();
        let task = self.handle.spawn(async move {
            let ack = retrying(r.timeout, || {
                let (js, subject, headers, payload) = (
                    r.js.clone(),
                    subject.clone(),
                    wire.headers.clone(),
                    wire.payload.clone(),
                );
                async move {
                    js.publish_with_headers(subject, headers, payload)
                        .await
                        .map_err(|e| e.to_string())?
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .await?;
            if ack.stream != r.name {
                return Err(format!(
                    "stored in stream `{}` instead (its subjects overlap the store's)",
                    ack.stream
                ));
            }
            end.fetch_max(ack.sequence, Ordering::AcqRel);
            Ok(ack.sequence - 1)
        });
        Box::pin(async move {
            match task.await {
                Ok(r) => r.map_err(|e| StoreError::new(what(), e)),
                Err(e) => Err(StoreError::new(what(), e)),
            }
        })
    }

    fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    fn read(&self, from: u64, to: u64) -> Result<StoredEvents<T>, StoreError> {
        let to = to.min(self.end());
        if from >= to {
            return Ok(Box::new(std::iter::empty()));
        }
        let what = format!("read offsets {from}..{to} of stream `{}`", self.remote.name);
        let stream = self.remote.stream.clone();
        let timeout = self.remote.timeout;
        let first = self.block_on(&what, async move {
            retrying(timeout, || async {
                stream
                    .get_info()
                    .await
                    .map(|i| i.state.first_sequence)
                    .map_err(|e| format!("stream info: {e}"))
            })
            .await
        })?;
        // An empty stream reports the sequence after its last as its first.
        if first > from + 1 {
            return Err(gone(&self.remote, from, first.saturating_sub(1)));
        }
        Ok(Box::new(Reader::<T>::start(
            &self.remote,
            &self.handle,
            from,
            to,
        )))
    }

    fn offset_for_time(&self, at: SystemTime) -> Result<u64, StoreError> {
        let what = format!("find time {at:?} in stream `{}`", self.remote.name);
        let r = self.remote.clone();
        let end = self.end();
        self.block_on(&what, async move {
            let first = retrying(r.timeout, || async {
                r.stream
                    .get_info()
                    .await
                    .map(|i| i.state.first_sequence)
                    .map_err(|e| format!("stream info: {e}"))
            })
            .await?;
            // Binary search over offsets [lo, hi): the first event stamped at or after `at`.
            let (mut lo, mut hi) = (first.saturating_sub(1).min(end), end);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let m = retrying(r.timeout, || async {
                    match r.stream.get_raw_message(mid + 1).await {
                        Ok(m) => Ok(Some(m)),
                        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
                        Err(e) => Err(format!("get offset {mid}: {e}")),
                    }
                })
                .await?;
                let Some(m) = m else {
                    return Err(format!(
                        "offset {mid} is no longer in the stream (removed by limits, a purge or a delete)"
                    ));
                };
                let env = decode_stored::<T>(
                    &r,
                    m.subject.as_str(),
                    Some(&m.headers),
                    &m.payload,
                    m.sequence,
                )
                .map_err(|e| e.to_string())?;
                if env.timestamp() < at {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            Ok(lo)
        })
    }

    fn commit_offset<'a>(
        &'a self,
        name: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let what = format!(
            "commit offset {offset} of consumer `{name}` to stream `{}`",
            self.remote.offsets_name
        );
        let r = self.remote.clone();
        let subject = format!("{}-offsets.{}", r.prefix, kv_key(name));
        let value = kv_value(name, offset);
        let task = self.handle.spawn(async move {
            retrying(r.timeout, || async {
                r.js.publish(subject.clone(), value.clone().into())
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await
        });
        Box::pin(async move {
            match task.await {
                Ok(r) => r.map_err(|e| StoreError::new(what, e)),
                Err(e) => Err(StoreError::new(what, e)),
            }
        })
    }

    fn committed_offset(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let what = format!(
            "committed offset of consumer `{name}` in stream `{}`",
            self.remote.offsets_name
        );
        let r = self.remote.clone();
        let subject = format!("{}-offsets.{}", r.prefix, kv_key(name));
        let name = name.to_string();
        self.block_on(&what, async move {
            let v = retrying(r.timeout, || async {
                match r.offsets.get_last_raw_message_by_subject(&subject).await {
                    Ok(m) => Ok(Some(m.payload)),
                    Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await?;
            match v {
                None => Ok(None),
                Some(b) => std::str::from_utf8(&b)
                    .map_err(|_| format!("stored value {b:?} is not an offset"))
                    .and_then(|s| parse_kv_value(&name, s))
                    .map(Some),
            }
        })
    }
}
