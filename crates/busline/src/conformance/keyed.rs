//! The conformance cases for keyed queue groups: each key's events once and
//! in order, and resuming from the committed position after a restart.

use std::time::Duration;

use super::cases::{probe, WAIT};
use super::{Harness, Probe};
use crate::store::StartAt;
use crate::Bus;

/// Publishes `keys` publishers' events `ns` on `topic`, interleaved.
async fn publish_keys<H: Harness>(
    h: &H,
    topic: &str,
    keys: u32,
    ns: std::ops::Range<u64>,
) -> Result<(), String> {
    let pb = h.publisher();
    for n in ns {
        for k in 0..keys {
            pb.publish_to(topic, probe(k, n))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    h.settle().await;
    Ok(())
}

/// Members of a keyed group (key: the publisher) take events until `total`
/// were handled, committing those `commit` accepts; returns each key's
/// numbers in the order the group handled them.
async fn handle_keyed(
    members: &mut [crate::Subscription<Probe>],
    total: usize,
    commit: impl Fn(&Probe) -> bool,
) -> Result<std::collections::BTreeMap<u32, Vec<u64>>, String> {
    let mut per_key: std::collections::BTreeMap<u32, Vec<u64>> = Default::default();
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen < total {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("timed out after {seen} of {total} events"));
        }
        let mut idle = true;
        for m in members.iter_mut() {
            while let Some(e) = m.try_recv().map_err(|e| e.to_string())? {
                idle = false;
                seen += 1;
                per_key
                    .entry(e.payload.publisher)
                    .or_default()
                    .push(e.payload.n);
                if commit(&e.payload) {
                    m.commit(&e).await.map_err(|e| e.to_string())?;
                }
            }
        }
        if idle {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(per_key)
}

fn keyed_member(
    bus: &Bus<Probe>,
    topic: &str,
    durable: bool,
) -> Result<crate::Subscription<Probe>, String> {
    let b = bus
        .subscriber(topic)
        .queue("conformance-keyed")
        .key(|e| e.payload.publisher);
    let b = if durable {
        b.consumer("conformance-keyed").from(StartAt::Committed)
    } else {
        b
    };
    b.subscribe().map_err(|e| e.to_string())
}

/// Each key's events reach a keyed group once, in publish order.
pub(super) async fn keyed_group<H: Harness>(h: &mut H) -> Result<(), String> {
    let sb = h.subscriber();
    let mut members: Vec<_> = (0..3)
        .map(|_| keyed_member(&sb, "conformance.keyed", false))
        .collect::<Result<_, _>>()?;
    publish_keys(h, "conformance.keyed", 8, 0..25).await?;
    let per_key = handle_keyed(&mut members, 200, |_| false).await?;
    for (k, ns) in per_key {
        if ns != (0..25).collect::<Vec<_>>() {
            return Err(format!("key {k}: {ns:?}"));
        }
    }
    Ok(())
}

/// After a restart a keyed group on persisted topics resumes from its
/// committed position: each key's uncommitted events again, in order, then
/// the live ones.
pub(super) async fn keyed_group_resumes<H: Harness>(h: &mut H) -> Result<(), String> {
    const TOPIC: &str = "conformance.keyedlog";
    let mut members: Vec<_> = (0..3)
        .map(|_| keyed_member(&h.subscriber(), TOPIC, true))
        .collect::<Result<_, _>>()?;
    publish_keys(h, TOPIC, 4, 0..30).await?;
    handle_keyed(&mut members, 120, |p| p.n < 20).await?;
    drop(members);
    h.restart().await?;
    let sb = h.subscriber();
    let mut members: Vec<_> = (0..2)
        .map(|_| keyed_member(&sb, TOPIC, true))
        .collect::<Result<_, _>>()?;
    publish_keys(h, TOPIC, 4, 30..40).await?;
    let per_key = handle_keyed(&mut members, 80, |_| true).await?;
    for (k, ns) in per_key {
        if ns != (20..40).collect::<Vec<_>>() {
            return Err(format!("key {k} after the restart: {ns:?}"));
        }
    }
    Ok(())
}
