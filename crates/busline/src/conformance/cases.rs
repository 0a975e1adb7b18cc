//! The conformance cases for delivery, ordering, metadata, request/reply,
//! queue groups and persistence, with the helpers every case uses.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::{Harness, Probe};
use crate::store::StartAt;
use crate::RecvError;

pub(super) const WAIT: Duration = Duration::from_secs(20);

pub(super) fn probe(publisher: u32, n: u64) -> Probe {
    Probe {
        publisher,
        n,
        body: format!("probe {publisher}/{n}"),
    }
}

pub(super) async fn recv_n(
    sub: &mut crate::Subscription<Probe>,
    n: usize,
) -> Result<Vec<Arc<crate::Envelope<Probe>>>, String> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(WAIT, sub.recv()).await {
            Ok(Ok(e)) => out.push(e),
            Ok(Err(RecvError::Lagged(k))) => {
                return Err(format!("lagged by {k} on a lossless subscription"))
            }
            Ok(Err(e)) => return Err(format!("after {} events: {e}", out.len())),
            Err(_) => return Err(format!("timed out after {} of {n} events", out.len())),
        }
    }
    Ok(out)
}

pub(super) async fn fan_out<H: Harness>(h: &mut H) -> Result<(), String> {
    let sb = h.subscriber();
    let mut subs: Vec<_> = (0..3)
        .map(|_| sb.subscribe("conformance.fan.>").map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let pb = h.publisher();
    for n in 0..100 {
        pb.publish_to("conformance.fan.out", probe(0, n))
            .await
            .map_err(|e| e.to_string())?;
    }
    h.settle().await;
    for s in &mut subs {
        let got = recv_n(s, 100).await?;
        let ns: HashSet<u64> = got.iter().map(|e| e.payload.n).collect();
        if ns.len() != 100 {
            return Err(format!("a subscriber got {} distinct of 100", ns.len()));
        }
    }
    Ok(())
}

pub(super) async fn wildcards<H: Harness>(h: &mut H) -> Result<(), String> {
    let sb = h.subscriber();
    let mut one = sb
        .subscribe("conformance.wild.*")
        .map_err(|e| e.to_string())?;
    let mut rest = sb
        .subscribe("conformance.wild.>")
        .map_err(|e| e.to_string())?;
    let pb = h.publisher();
    for (i, t) in [
        "conformance.wild.a",
        "conformance.wild.a.b",
        "conformance.other.a",
    ]
    .iter()
    .enumerate()
    {
        pb.publish_to(t, probe(0, i as u64))
            .await
            .map_err(|e| e.to_string())?;
    }
    h.settle().await;
    let a = recv_n(&mut one, 1).await?;
    let b = recv_n(&mut rest, 2).await?;
    if a[0].payload.n != 0 || b.iter().map(|e| e.payload.n).collect::<Vec<_>>() != vec![0, 1] {
        return Err("wrong events matched the wildcards".into());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    if one.try_recv().map_err(|e| e.to_string())?.is_some() {
        return Err("`*` matched two tokens".into());
    }
    if let Some(e) = rest.try_recv().map_err(|e| e.to_string())? {
        return Err(format!(
            "`conformance.wild.>` got an event on `{}`, which it does not match",
            e.topic
        ));
    }
    Ok(())
}

pub(super) async fn ordered<H: Harness>(h: &mut H) -> Result<(), String> {
    let sb = h.subscriber();
    let mut sub = sb
        .subscriber("conformance.order.*")
        .lossless(64)
        .subscribe()
        .map_err(|e| e.to_string())?;
    let mut tasks = Vec::new();
    for p in 0..3u32 {
        let pb = h.publisher();
        tasks.push(tokio::spawn(async move {
            for n in 0..300 {
                pb.publish_to(&format!("conformance.order.p{p}"), probe(p, n))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }));
    }
    let got = recv_n(&mut sub, 900).await?;
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let mut next = [0u64; 3];
    for e in got {
        let p = e.payload.publisher as usize;
        if e.payload.n != next[p] {
            return Err(format!(
                "publisher {p}: expected {} got {}",
                next[p], e.payload.n
            ));
        }
        next[p] += 1;
    }
    Ok(())
}

pub(super) async fn metadata<H: Harness>(h: &mut H) -> Result<(), String> {
    let sb = h.subscriber();
    let mut sub = sb
        .subscribe("conformance.meta")
        .map_err(|e| e.to_string())?;
    let pb = h.publisher();
    let cause = crate::EventId::from_u128(0xfeed);
    let corr = crate::EventId::from_u128(0xbeef);
    let r = pb
        .send(
            crate::Message::new(probe(0, 0))
                .topic("conformance.meta")
                .source("conformance")
                .causation_id(cause)
                .correlation_id(corr)
                .header("x-test", "1"),
        )
        .await
        .map_err(|e| e.to_string())?;
    h.settle().await;
    let e = recv_n(&mut sub, 1).await?.remove(0);
    let ok = e.id == r.id
        && e.source.as_deref() == Some("conformance")
        && e.causation_id() == Some(cause)
        && e.correlation_id == corr
        && e.header("x-test") == Some("1");
    if ok {
        Ok(())
    } else {
        Err(format!("metadata not intact: {e:?}"))
    }
}

pub(super) async fn request_reply<H: Harness>(h: &mut H) -> Result<(), String> {
    let sb = h.subscriber();
    let mut svc = sb.subscribe("conformance.rpc").map_err(|e| e.to_string())?;
    let responder = tokio::spawn(async move {
        if let Ok(req) = svc.recv().await {
            let mut p = req.payload.clone();
            p.n += 1;
            let _ = sb.reply(&req, p).await;
        }
    });
    h.settle().await;
    let pb = h.publisher();
    let reply = pb
        .request("conformance.rpc", probe(0, 41), WAIT)
        .await
        .map_err(|e| e.to_string())?;
    responder.abort();
    if reply.payload.n != 42 {
        return Err(format!("wrong reply {:?}", reply.payload));
    }
    match pb
        .request("conformance.nobody", probe(0, 0), Duration::from_secs(2))
        .await
    {
        Err(crate::RequestError::NoResponders { .. })
        | Err(crate::RequestError::Timeout { .. }) => Ok(()),
        other => Err(format!("request with no responder: {other:?}")),
    }
}

pub(super) async fn queue_group<H: Harness>(h: &mut H) -> Result<(), String> {
    let sb = h.subscriber();
    let mut members: Vec<_> = (0..3)
        .map(|_| {
            sb.subscriber("conformance.jobs")
                .queue("conformance-workers")
                .subscribe()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let pb = h.publisher();
    for n in 0..60 {
        pb.publish_to("conformance.jobs", probe(0, n))
            .await
            .map_err(|e| e.to_string())?;
    }
    h.settle().await;
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.len() < 60 && tokio::time::Instant::now() < deadline {
        for m in &mut members {
            while let Some(e) = m.try_recv().map_err(|e| e.to_string())? {
                seen.push(e.payload.n);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let unique: HashSet<u64> = seen.iter().copied().collect();
    if seen.len() != 60 || unique.len() != 60 {
        return Err(format!(
            "{} deliveries, {} distinct, want 60 each",
            seen.len(),
            unique.len()
        ));
    }
    Ok(())
}

pub(super) async fn persistence<H: Harness>(h: &mut H) -> Result<(), String> {
    let pb = h.publisher();
    for n in 0..50 {
        pb.publish_to("conformance.durable", probe(7, n))
            .await
            .map_err(|e| e.to_string())?;
    }
    h.settle().await;
    drop(pb);
    h.restart().await?;
    let sb = h.subscriber();
    let mut sub = sb
        .subscriber("conformance.durable")
        .from(StartAt::Beginning)
        .subscribe()
        .map_err(|e| e.to_string())?;
    let got = recv_n(&mut sub, 50).await?;
    let ns: Vec<u64> = got.iter().map(|e| e.payload.n).collect();
    if ns != (0..50).collect::<Vec<_>>() {
        return Err(format!("replayed after restart: {ns:?}"));
    }
    Ok(())
}
