//! The channels `bench fanout` runs beside busline, each as its users would
//! write a one-publisher fan-out with it: tokio's broadcast (naive, and
//! yielding every 64 sends, its best here), a bounded tokio mpsc per
//! subscriber, `async-broadcast` (a lossless broadcast with backpressure,
//! busline's closest peer) and a bounded `flume` channel per subscriber,
//! bare and carrying an envelope like busline's. Each returns the
//! subscribers' tasks, each ending with (received, lagged).

use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use busline::{Envelope, EventId, Topic};

use crate::bench_round::{collect, Payload, Round};

/// The peer systems, by the name their rows carry.
pub const PEERS: [&str; 6] = [
    "tokio-broadcast-naive",
    "tokio-broadcast-yield64",
    "tokio-mpsc-per-subscriber",
    "async-broadcast",
    "flume-per-subscriber",
    "flume-envelope-per-subscriber",
];

type Counts = tokio::task::JoinHandle<(u64, u64)>;

/// Runs peer `sys`: `events` sends of `payload` to `subs` subscribers.
pub async fn run(sys: &str, subs: usize, events: u64, cap: usize, payload: Payload) -> Round {
    match sys {
        "tokio-broadcast-naive" => broadcast(subs, events, cap, payload, false).await,
        "tokio-broadcast-yield64" => broadcast(subs, events, cap, payload, true).await,
        "tokio-mpsc-per-subscriber" => {
            per_subscriber(subs, events, payload, || {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<Payload>(cap);
                (tx, async move {
                    let mut got = 0u64;
                    while rx.recv().await.is_some() {
                        got += 1;
                    }
                    (got, 0)
                })
            })
            .await
        }
        "flume-per-subscriber" => {
            per_subscriber(subs, events, payload, || {
                let (tx, rx) = flume::bounded::<Payload>(cap);
                (tx, async move {
                    let mut got = 0u64;
                    while rx.recv_async().await.is_ok() {
                        got += 1;
                    }
                    (got, 0)
                })
            })
            .await
        }
        "flume-envelope-per-subscriber" => flume_envelopes(subs, events, cap, payload).await,
        "async-broadcast" => async_broadcast(subs, events, cap, payload).await,
        other => unreachable!("unknown peer {other}"),
    }
}

async fn broadcast(subs: usize, events: u64, cap: usize, payload: Payload, yields: bool) -> Round {
    let (tx, _) = tokio::sync::broadcast::channel::<Payload>(cap);
    let handles: Vec<Counts> = (0..subs)
        .map(|_| {
            let mut rx = tx.subscribe();
            tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError as B;
                let (mut got, mut lag) = (0u64, 0u64);
                loop {
                    match rx.recv().await {
                        Ok(_) => got += 1,
                        Err(B::Lagged(n)) => lag += n,
                        Err(B::Closed) => break,
                    }
                }
                (got, lag)
            })
        })
        .collect();
    let start = Instant::now();
    let publisher = tokio::spawn(async move {
        for i in 0..events {
            let _ = tx.send(payload.clone());
            if yields && i % 64 == 63 {
                tokio::task::yield_now().await;
            }
        }
    });
    publisher.await.expect("publisher");
    collect(start, handles).await
}

async fn async_broadcast(subs: usize, events: u64, cap: usize, payload: Payload) -> Round {
    let (tx, rx) = async_broadcast::broadcast::<Payload>(cap);
    let handles: Vec<Counts> = (0..subs)
        .map(|_| {
            let mut rx = rx.clone();
            tokio::spawn(async move {
                let mut got = 0u64;
                while rx.recv().await.is_ok() {
                    got += 1;
                }
                (got, 0)
            })
        })
        .collect();
    // Receivers made before the first send; the spare one must not hold
    // the channel full.
    drop(rx);
    let start = Instant::now();
    let publisher = tokio::spawn(async move {
        for _ in 0..events {
            tx.broadcast(payload.clone()).await.expect("broadcast");
        }
    });
    publisher.await.expect("publisher");
    collect(start, handles).await
}

/// The sending side of a per-subscriber channel.
trait Tx: Send + Sync + 'static {
    /// Sends, waiting for room; `false` if the receiver is gone.
    fn deliver(&self, p: Payload) -> impl Future<Output = bool> + Send + '_;
}

impl Tx for tokio::sync::mpsc::Sender<Payload> {
    async fn deliver(&self, p: Payload) -> bool {
        self.send(p).await.is_ok()
    }
}

impl Tx for flume::Sender<Payload> {
    async fn deliver(&self, p: Payload) -> bool {
        self.send_async(p).await.is_ok()
    }
}

/// One channel per subscriber, made by `channel`: its sender and the
/// subscriber's loop.
async fn per_subscriber<X: Tx, R>(
    subs: usize,
    events: u64,
    payload: Payload,
    channel: impl Fn() -> (X, R),
) -> Round
where
    R: Future<Output = (u64, u64)> + Send + 'static,
{
    let mut senders = Vec::new();
    let mut handles: Vec<Counts> = Vec::new();
    for _ in 0..subs {
        let (tx, recv) = channel();
        senders.push(tx);
        handles.push(tokio::spawn(recv));
    }
    let start = Instant::now();
    let publisher = tokio::spawn(async move {
        for _ in 0..events {
            for tx in &senders {
                assert!(tx.deliver(payload.clone()).await, "a subscriber went away");
            }
        }
    });
    publisher.await.expect("publisher");
    collect(start, handles).await
}

/// A bounded flume channel per subscriber carrying what busline delivers:
/// one envelope per event (a sequence number, an id, the topic and the
/// wall-clock time from `SystemTime::now`, made with
/// [`Envelope::from_parts`] as a program that wraps its events by hand
/// would), shared by the subscribers in an `Arc`.
async fn flume_envelopes(subs: usize, events: u64, cap: usize, payload: Payload) -> Round {
    type Env = Arc<Envelope<Payload>>;
    let mut senders = Vec::new();
    let mut handles: Vec<Counts> = Vec::new();
    for _ in 0..subs {
        let (tx, rx) = flume::bounded::<Env>(cap);
        senders.push(tx);
        handles.push(tokio::spawn(async move {
            let mut got = 0u64;
            while rx.recv_async().await.is_ok() {
                got += 1;
            }
            (got, 0)
        }));
    }
    let topic = Topic::new("bench.fanout").expect("a valid topic");
    let node = u128::from(std::process::id()) << 64;
    let start = Instant::now();
    let publisher = tokio::spawn(async move {
        for seq in 0..events {
            let id = EventId::from_u128(node | u128::from(seq));
            let env = Arc::new(Envelope::from_parts(
                seq,
                id,
                topic.clone(),
                SystemTime::now(),
                None,
                id,
                None,
                None,
                Vec::new(),
                payload.clone(),
            ));
            for tx in &senders {
                let sent = tx.send_async(env.clone()).await;
                assert!(sent.is_ok(), "a subscriber went away");
            }
        }
    });
    publisher.await.expect("publisher");
    collect(start, handles).await
}
