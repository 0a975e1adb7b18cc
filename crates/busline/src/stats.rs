//! Counters: nothing the bus does with an event goes uncounted.
//!
//! [`Bus::stats`](crate::Bus::stats) returns a snapshot at any time;
//! [`BusStats::export`] hands it to the [`metrics`] facade so any metrics
//! exporter (Prometheus, StatsD, …) can serve it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::queue::{Member, Receivers, Retired, State, SubShared};

/// One subscriber's counters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct SubscriberStats {
    /// Subscriber id (unique per bus).
    pub id: u64,
    /// Subscriber (or queue group) name.
    pub name: String,
    /// The pattern.
    pub pattern: String,
    /// The policy, as text (`lossless`, `lossy`, `latest`, `queue(group)`).
    pub policy: String,
    /// Queue capacity.
    pub capacity: usize,
    /// Events put in its queue.
    pub delivered: u64,
    /// Events it has received (handed out by `recv`).
    pub received: u64,
    /// Events dropped because it fell behind (lossy), each reported as lag
    /// (at its next receive, for those dropped since).
    pub dropped: u64,
    /// Events replaced by a newer one on the same topic before it received them (latest).
    pub superseded: u64,
    /// Events its filter turned away.
    pub filtered: u64,
    /// Events still queued when it unsubscribed or was dropped.
    pub discarded: u64,
    /// Events waiting for it now (its lag). While it is subscribed,
    /// `delivered == received + dropped + superseded + queued`
    /// (`superseded` is only ever non-zero for `latest`), in every snapshot
    /// (a ring member's `received` is derived from its cursor).
    pub queued: usize,
    /// The most events waiting in its queue. For lossless and lossy
    /// subscribers it is sampled, not tracked on every publish: when the
    /// subscriber looks for new events, when a publisher finds its queue
    /// near full, and when the snapshot is taken; a higher peak between
    /// those moments is not seen.
    pub peak: usize,
    /// Total time publishers spent waiting for room in its queue.
    #[serde(with = "duration_ms")]
    pub blocked: Duration,
    /// Whether its queue is above the high watermark now.
    pub pressured: bool,
    /// Members (queue groups; 1 otherwise).
    pub members: usize,
}

mod duration_ms {
    pub(super) fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }
}

impl SubscriberStats {
    /// The counters of every subscriber reading `s` (a ring may have several).
    pub(crate) fn of<T>(s: &SubShared<T>) -> Vec<Self> {
        let st = s.state.lock();
        if let Some(rx) = st.receivers() {
            return vec![Self::of_queue(s, &st, rx)];
        }
        st.readers()
            .iter()
            .map(|m| Self::of_member(s, &st, m))
            .collect()
    }

    /// A queue group's or a `latest` subscriber's counters.
    fn of_queue<T>(s: &SubShared<T>, st: &State<T>, rx: &Receivers) -> Self {
        SubscriberStats {
            id: s.id,
            name: s.name.to_string(),
            pattern: s.pattern.to_string(),
            policy: s.policy.to_string(),
            capacity: s.capacity,
            delivered: rx.delivered,
            received: rx.received,
            dropped: 0,
            superseded: rx.superseded,
            filtered: s.filtered.load(Ordering::Relaxed),
            discarded: st.discarded,
            queued: st.depth(s),
            peak: rx.peak,
            blocked: Duration::from_nanos(s.blocked_ns.load(Ordering::Relaxed)),
            pressured: st.pressured,
            members: st.members(),
        }
    }

    /// Ring member `m`'s counters, read under the subscriber's lock (the
    /// member's own counters it publishes as it reads, without the lock).
    pub(crate) fn of_member<T>(s: &SubShared<T>, st: &State<T>, m: &Member) -> Self {
        let ring = s.ring();
        let tail = ring.tail();
        let cursor = m.cursor(ring);
        let oldest = ring.oldest(tail);
        let queued = (tail - cursor.max(oldest)) as usize;
        SubscriberStats {
            id: m.id,
            name: m.name.to_string(),
            pattern: s.pattern.to_string(),
            policy: s.policy.to_string(),
            capacity: s.capacity,
            delivered: tail - m.joined,
            // From the cursor, not the member's own `received` (published
            // after the cursor, and it may have read on since): what it moved
            // past is what it read or lost, so the snapshot balances.
            received: cursor - m.joined - m.dropped(ring),
            // Lost: reported, or to be at its next receive.
            dropped: m.dropped(ring),
            superseded: 0,
            filtered: s.filtered.load(Ordering::Relaxed),
            discarded: m.discarded,
            queued,
            peak: (m.cell(ring).peak.load(Ordering::Relaxed).max(m.peak) as usize).max(queued),
            blocked: Duration::from_nanos(m.blocked_ns),
            // Raised by the ring's slowest member.
            pressured: st.pressured && queued == st.depth(s),
            members: 1,
        }
    }
}

/// The bus's counters and every current subscriber's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct BusStats {
    /// Events published (each counted once, however many subscribers got it).
    pub published: u64,
    /// Events that matched no subscriber.
    pub unrouted: u64,
    /// Publishes refused as `Full` or abandoned (future dropped) while waiting for room.
    pub cancelled: u64,
    /// Deliveries into subscriber queues, including subscribers now gone.
    pub delivered: u64,
    /// Events dropped from lossy queues, including subscribers now gone.
    pub dropped: u64,
    /// Events left unreceived in queues of subscribers that went away.
    pub discarded: u64,
    /// Every current subscriber.
    pub subscribers: Vec<SubscriberStats>,
}

impl BusStats {
    pub(crate) fn new(
        published: u64,
        unrouted: u64,
        cancelled: u64,
        retired: Retired,
        subscribers: Vec<SubscriberStats>,
    ) -> Self {
        let sum = |f: fn(&SubscriberStats) -> u64| subscribers.iter().map(f).sum::<u64>();
        BusStats {
            published,
            unrouted,
            cancelled,
            delivered: retired.delivered + sum(|s| s.delivered),
            dropped: retired.dropped + sum(|s| s.dropped),
            discarded: retired.discarded + sum(|s| s.discarded),
            subscribers,
        }
    }

    #[cfg(feature = "metrics")]
    /// Hands these counters to the [`metrics`] facade: bus totals as
    /// `busline_published_total` etc., and per subscriber (labels
    /// `subscriber`, `pattern` and `policy`: two queue groups of one name on
    /// different patterns are two series) `busline_subscriber_delivered_total`, `…_dropped_total`, `…_queued`,
    /// `…_blocked_seconds_total`. Call it periodically (the monitor does, every second).
    pub fn export(&self) {
        metrics::counter!("busline_published_total").absolute(self.published);
        metrics::counter!("busline_unrouted_total").absolute(self.unrouted);
        metrics::counter!("busline_cancelled_total").absolute(self.cancelled);
        metrics::counter!("busline_delivered_total").absolute(self.delivered);
        metrics::counter!("busline_dropped_total").absolute(self.dropped);
        metrics::counter!("busline_discarded_total").absolute(self.discarded);
        metrics::gauge!("busline_subscribers").set(self.subscribers.len() as f64);
        for s in &self.subscribers {
            let labels = [
                ("subscriber", s.name.clone()),
                ("pattern", s.pattern.clone()),
                ("policy", s.policy.clone()),
            ];
            metrics::counter!("busline_subscriber_delivered_total", &labels).absolute(s.delivered);
            metrics::counter!("busline_subscriber_received_total", &labels).absolute(s.received);
            metrics::counter!("busline_subscriber_dropped_total", &labels).absolute(s.dropped);
            metrics::counter!("busline_subscriber_filtered_total", &labels).absolute(s.filtered);
            metrics::gauge!("busline_subscriber_queued", &labels).set(s.queued as f64);
            metrics::gauge!("busline_subscriber_blocked_seconds_total", &labels)
                .set(s.blocked.as_secs_f64());
        }
    }

    /// The subscriber named `name`, if any.
    pub fn subscriber(&self, name: &str) -> Option<&SubscriberStats> {
        self.subscribers.iter().find(|s| s.name == name)
    }
}
