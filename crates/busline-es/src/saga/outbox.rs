//! The outbox: emits stored with the step that made them, published afterwards.
//!
//! A step's emits are part of its log record. After the record is durable
//! the dispatcher ([`flush`]) publishes every emit the saga has not marked
//! published yet, in sequence order, each with its stable id
//! ([`emit_id`]), and then appends a `Published` mark. A crash between the
//! publish and the mark publishes the same emits again, with the same ids,
//! when the manager restarts: receivers drop the repeats by id (see
//! [`Dedup`](super::Dedup)).

use busline::{Context, EventId, Message};

use super::instance::{Instance, SagaRecord};
use super::Saga;
use crate::event::Metadata;
use crate::store::AggregateStore;

/// Header naming the saga that emitted a message: `<saga type>/<correlation id>/<seq>`.
pub const EMIT_HEADER: &str = "saga-emit";

/// The stable id of emit `seq` of saga `saga` (type) with correlation id
/// `correlation`: the same on every publication of the emit, different for
/// different emits (two 64-bit FNV-1a hashes of the triple).
///
/// ```
/// use busline_es::saga::emit_id;
/// assert_eq!(emit_id("order", "o-1", 0), emit_id("order", "o-1", 0));
/// assert_ne!(emit_id("order", "o-1", 0), emit_id("order", "o-1", 1));
/// assert_ne!(emit_id("order", "o-1", 0), emit_id("order", "o-2", 0));
/// ```
pub fn emit_id(saga: &str, correlation: &str, seq: u64) -> EventId {
    let mut key = Vec::with_capacity(saga.len() + correlation.len() + 10);
    key.extend_from_slice(saga.as_bytes());
    key.push(0);
    key.extend_from_slice(correlation.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_le_bytes());
    let hi = fnv1a(0xcbf2_9ce4_8422_2325, &key);
    let lo = fnv1a(0x6c62_272e_07bb_0142, &key);
    EventId::from_u128(((hi as u128) << 64) | lo as u128)
}

fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Publishes the unpublished emits of saga `id` and marks them published.
///
/// Returns the saga's new stream version. A publish that fails stops the
/// flush: what was not marked is published again by the next flush.
pub(crate) async fn flush<S: Saga>(
    ctx: &Context<S::Message>,
    store: &AggregateStore<Instance<S>>,
    id: &str,
    instance: &mut Instance<S>,
    version: u64,
) -> Result<u64, busline::BoxError> {
    let Some(last) = instance.outbox.last().map(|e| e.seq) else {
        return Ok(version);
    };
    for emit in &instance.outbox {
        let msg = Message::new(emit.message.clone())
            .topic(emit.topic.clone())
            .id(emit_id(S::NAME, id, emit.seq))
            .header(EMIT_HEADER, format!("{}/{}/{}", S::NAME, id, emit.seq));
        ctx.send(msg).await.map_err(|e| {
            format!(
                "saga {}/{id}: emit {} on {} not published: {e}",
                S::NAME,
                emit.seq,
                emit.topic
            )
        })?;
    }
    let mark = SagaRecord::Published { upto: last + 1 };
    let meta = Metadata::new().correlation_id(id);
    let appended = store.append(id, version, vec![mark.clone()], meta).await?;
    crate::aggregate::Aggregate::apply(instance, &mark);
    Ok(appended.version)
}
