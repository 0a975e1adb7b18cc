//! The exporter's loop: acks, the sweep, flush requests, the stop, and the
//! next batch of events, one `select!` at a time.

use std::sync::atomic::Ordering;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use super::batch::{drain, export_batch, reconnected, release_wire, write_wire};
use super::subscription::{recv_opt, ExportSubs};
use super::window::next_ack;
use super::{confirm_core, Exporter, FlushWaiter, Sink, FLUSH_TIMEOUT};
use crate::error::NatsError;
use crate::shared::Ctx;

/// The exporter's loop: ends once stopped, with everything it was handed
/// settled (given up on from outside at shutdown's deadline).
pub(crate) async fn export_run<T: Serialize + DeserializeOwned + Send + Sync + 'static>(
    ctx: &Ctx<T>,
    sub: &mut ExportSubs<T>,
    sink: &Sink,
    ex: &mut Exporter<T>,
    mut flush_rx: mpsc::Receiver<FlushWaiter>,
    mut sweep: tokio::time::Interval,
) {
    let mut stop = ctx.stop.clone();
    let wire = ex.wire.clone();
    let mut waiters: Vec<(u64, FlushWaiter)> = Vec::new();
    let mut stopping = false;
    let mut status = ctx.status.clone();
    loop {
        if status.has_changed().unwrap_or(false) {
            status.borrow_and_update();
            ex.max_payload = ctx.client.server_info().max_payload;
        }
        tokio::select! {
            biased;
            Some(done) = ex.in_flight.next(), if !ex.in_flight.is_empty() => {
                ex.unsettled.settle(done);
            }
            Some(msg) = next_ack(&mut ex.acks), if !ex.waiting.is_empty() => {
                ex.on_ack(ctx, sink, msg);
            }
            _ = sweep.tick(), if !ex.waiting.is_empty() => {
                ex.sweep(ctx, sink);
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                on_stop(ctx, sub, sink, ex, &mut sweep).await;
            }
            Some(w) = flush_rx.recv() => {
                if let Some(w) = on_flush(ctx, sub, sink, ex, &mut sweep, w).await {
                    waiters.push((ex.unsettled.next(), w));
                }
            }
            // Back: what the exporter could not write goes out first.
            g = reconnected(wire.clone()), if ex.backlog => {
                ex.held = Some(g);
                release_wire(ctx, ex).await;
            }
            r = recv_opt(&mut sub.exports), if !stopping && ex.has_room_for_a_batch() && !ex.backlog => {
                if let Some(q) = &mut sub.exports {
                    stopping = export_batch(ctx, sink, ex, q, true, r).await;
                }
            }
            // Replies go by core NATS in either mode: no JetStream window.
            r = recv_opt(&mut sub.replies), if !stopping && !ex.backlog => {
                if let Some(q) = &mut sub.replies {
                    stopping = export_batch(ctx, sink, ex, q, false, r).await;
                }
            }
        }
        // Settle waiters: everything below their mark is done.
        let done_below = ex.unsettled.below();
        let mut i = 0;
        while i < waiters.len() {
            if waiters[i].0 <= done_below {
                let (_, w) = waiters.swap_remove(i);
                let _ = w.send(Ok(()));
            } else {
                i += 1;
            }
        }
        // A backlog is written before the end (or counted when shutdown gives up).
        if stopping && ex.idle() && !ex.backlog {
            break;
        }
    }
}

/// The stop: everything handed to the exporter goes out, its queues are
/// closed, and what lands between the last take and the unsubscribe is
/// counted as abandoned.
async fn on_stop<T: Serialize + DeserializeOwned + Send + Sync + 'static>(
    ctx: &Ctx<T>,
    sub: &mut ExportSubs<T>,
    sink: &Sink,
    ex: &mut Exporter<T>,
    sweep: &mut tokio::time::Interval,
) {
    for (q, windowed) in [(&mut sub.exports, true), (&mut sub.replies, false)] {
        // Drained in place: if shutdown gives up meanwhile, what is still
        // queued is counted there (not dropped with a local).
        if let Some(s) = q.as_mut() {
            drain(ctx, sink, ex, s, windowed, sweep).await;
        }
        if let Some(s) = q.take() {
            let late = s.unsubscribe();
            ctx.counters.abandoned.fetch_add(late, Ordering::Relaxed);
        }
    }
}

/// A flush request: exports what the queues hold (everything published
/// before the flush call is in them already). On core NATS it then has the
/// server confirm what was sent and answers `w` at once (`None`); on
/// JetStream it returns `w`, answered once everything before it is acked.
async fn on_flush<T: Serialize + DeserializeOwned + Send + Sync + 'static>(
    ctx: &Ctx<T>,
    sub: &mut ExportSubs<T>,
    sink: &Sink,
    ex: &mut Exporter<T>,
    sweep: &mut tokio::time::Interval,
    w: FlushWaiter,
) -> Option<FlushWaiter> {
    if let Some(q) = &mut sub.exports {
        drain(ctx, sink, ex, q, true, sweep).await;
    }
    if let Some(q) = &mut sub.replies {
        drain(ctx, sink, ex, q, false, sweep).await;
    }
    let Sink::Core = sink else {
        return Some(w);
    };
    // The server has processed everything before the marker.
    let mut held = ex.hold_wire().await;
    if let Some(d) = held.as_deref_mut() {
        // A backlog: the connection gets as long as the confirmation would.
        if !d.buf.is_empty() {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, d.connected()).await;
        }
        ex.backlog = !write_wire(ctx, d).await;
        if ex.backlog {
            let _ = w.send(Err(NatsError::FlushTimedOut {
                server: ctx.server.clone(),
                waited: FLUSH_TIMEOUT,
                reason: "the exporter's connection is down".into(),
            }));
            return None;
        }
    }
    let confirmed = confirm_core(
        &ctx.client,
        held.as_deref_mut(),
        &ctx.counters,
        &ctx.server,
        FLUSH_TIMEOUT,
        FLUSH_TIMEOUT,
    )
    .await;
    match confirmed {
        Err(e) => {
            tracing::warn!(error = %e, "core nats flush did not confirm everything");
            let _ = w.send(Err(e));
            None
        }
        // Answered by the waiters' settling, at once: nothing is unsettled on core NATS.
        Ok(()) => Some(w),
    }
}
