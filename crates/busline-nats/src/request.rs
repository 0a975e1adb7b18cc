//! Request/reply across processes.
//!
//! A [`Bus::request`](busline::Bus::request) on an exported topic goes out
//! with its reply-to inbox (`_INBOX.<bus>.<n>`); before the first such
//! request leaves, the transport subscribes to `_INBOX.<bus>.>` on NATS
//! ([`subscribe_own_inbox`]). A process that imports the request notes its
//! inbox ([`Inboxes::imported_request`](crate::inboxes::Inboxes::imported_request)), and when a module there answers
//! with [`Bus::reply`](busline::Bus::reply), the reply is exported on that
//! inbox subject by core NATS (also in JetStream mode: a reply is worth
//! nothing once its requester has given up). Back in the requesting process
//! it goes straight to the waiting requester ([`reply_import_loop`]), with
//! its id, source, headers, causation (the request) and correlation intact,
//! plus [`IMPORTED`]; it counts as `imported`.

use busline::{Envelope, Message};
use serde::de::DeserializeOwned;

use crate::codec;
use crate::connection::round_trip;
use crate::shared::{next_or_stop, Ctx, IMPORTED};
use crate::stats::inc;

/// How long the server may take to confirm a reply inbox's subscription.
const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Subscribes to the reply inbox of an exported request's `reply_to`, the
/// first time a request of this bus leaves, and starts delivering the
/// replies that arrive there. The subscription is sent before the request,
/// so the server has it first; `confirm`: the request leaves on another
/// connection (the exporter's own), so the subscription is confirmed by a
/// round trip before it does.
pub(crate) async fn subscribe_own_inbox<T>(ctx: &Ctx<T>, reply_to: &str, confirm: bool)
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    let Some(inbox) = ctx.inboxes.new_own(reply_to) else {
        return;
    };
    match ctx.client.subscribe(format!("{inbox}.>")).await {
        Ok(sub) => {
            tokio::spawn(reply_import_loop(ctx.clone(), sub));
            if confirm {
                if let Err(e) = round_trip(&ctx.client, CONFIRM_TIMEOUT).await {
                    tracing::error!(%inbox, error = %e, "reply inbox subscription not confirmed");
                }
            }
        }
        Err(e) => tracing::error!(%inbox, error = %e, "cannot subscribe to the reply inbox"),
    }
}

/// Delivers replies arriving on one of this bus's inboxes to the requesters
/// waiting for them.
async fn reply_import_loop<T>(ctx: Ctx<T>, mut sub: async_nats::Subscriber)
where
    T: DeserializeOwned + Send + Sync + 'static,
{
    let mut stop = ctx.stop.clone();
    while let Some(msg) = next_or_stop(&mut sub, &mut stop).await {
        let (subject, headers) = (msg.subject.as_str(), msg.headers.as_ref());
        // Decoded twice: the bus hands a reply over against its request,
        // which needs a payload of its own (only its ids and reply-to count).
        let decoded =
            codec::decode::<T>(subject, headers, &msg.payload, ctx.codec).and_then(|env| {
                codec::decode::<T>(subject, headers, &msg.payload, ctx.codec)
                    .map(|again| (env, again.payload))
            });
        let (env, stand_in) = match decoded {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(%subject, error = %e, "undecodable reply dropped");
                continue;
            }
        };
        let Some(bus) = ctx.bus.upgrade() else { break };
        let request = Envelope::from_parts(
            0,
            env.causation_id().unwrap_or(env.id),
            env.topic.clone(),
            env.timestamp(),
            None,
            env.correlation_id,
            None,
            Some(env.topic.clone()),
            Vec::new(),
            stand_in,
        );
        let (timestamp, headers) = (env.timestamp(), env.headers().to_vec());
        let mut reply = Message::new(env.payload)
            .id(env.id)
            .timestamp(timestamp)
            .header(IMPORTED, ctx.server.as_str());
        if let Some(s) = env.source {
            reply = reply.source(s);
        }
        for (k, v) in headers {
            reply = reply.header(k, v);
        }
        match bus.reply_msg(&request, reply).await {
            Ok(()) => inc(&ctx.counters.imported),
            Err(e) => tracing::debug!(%subject, error = %e, "reply not delivered"),
        }
    }
    let _ = sub.unsubscribe().await;
}
