//! The StatsD listener module: reads the datagrams waiting on its socket
//! (a burst: up to [`BURST`] datagrams or [`BURST_BYTES`]), folds their
//! lines into runs (see [`fold`](super::fold)), and publishes the
//! [`Metric::Runs`] of each burst: one per source and topic, or more where
//! one would hold more than [`EVENT_BYTES`](super::fold::EVENT_BYTES).
//!
//! A burst of more than [`INLINE`] datagrams is folded on one of the
//! listener's [`IN_FLIGHT`] fold threads (living as long as its `run`)
//! while the listener reads the next one and publishes the one before; at
//! most `IN_FLIGHT` bursts are handed out (two folded at once on two
//! cores), and bursts are published in the order they were read, so each
//! series' samples stay in order.
//!
//! ## Memory
//!
//! What the listener holds is bounded in bytes: [`IN_FLIGHT`] bursts of at
//! most [`BURST_BYTES`] read and their folds, and the events waiting in the
//! subscribers' queues, each at most `EVENT_BYTES` of runs. The runs are
//! allocated on a few threads only (the fold threads, and the worker that
//! runs the listener for small bursts), all long-lived and allocating
//! again and again, so memory freed by the subscribers goes back to their
//! heaps and is used again (a pool of blocking threads, coming and going,
//! would each keep what was freed to them).

use std::collections::VecDeque;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use busline::{BoxError, Context, Message, Module};
use tokio::sync::oneshot;

use super::fold::Fold;
use super::socket::{self, KernelDrops};
use crate::monitor::ingest_status::IngestStatus;
use crate::monitor::metric::Metric;

/// The largest datagram read whole (UDP's own limit).
const DATAGRAM: usize = 65_536;
/// Datagrams read in a row, folded and published together, before the
/// listener looks at its shutdown signal.
pub const BURST: usize = 256;
/// Bytes a burst holds at most (but one datagram whatever its size).
pub const BURST_BYTES: usize = 128 << 10;
/// Bursts of at most this many datagrams are folded on the listener's task.
pub const INLINE: usize = 4;
/// Bursts handed to the fold threads and not yet published, at most; and
/// the number of fold threads.
pub const IN_FLIGHT: usize = 2;
/// How often the kernel's drop count is read.
const DROPS_EVERY: Duration = Duration::from_secs(1);

/// The `statsd` module; owns its bound socket, so a restart keeps the port
/// and whatever the kernel queued meanwhile.
#[derive(Debug, Clone)]
pub struct Listener {
    socket: Arc<UdpSocket>,
    addr: SocketAddr,
    status: Arc<IngestStatus>,
    drops: Option<KernelDrops>,
}

impl Listener {
    /// Binds `addr` now, so start-up reports a port it cannot have. For the
    /// default address (`explicit` false) a failure is a warning on stderr
    /// and `Ok(None)`: the monitor runs on without StatsD.
    pub fn bind(
        addr: SocketAddr,
        explicit: bool,
        status: Arc<IngestStatus>,
    ) -> anyhow::Result<Option<Listener>> {
        let socket = match socket::bind(addr) {
            Ok(s) => s,
            Err(e) if explicit => anyhow::bail!(
                "cannot listen on {addr} for StatsD: {e} (choose another with --statsd ADDR, or --no-statsd)"
            ),
            Err(e) => {
                eprintln!(
                    "[statsd] warning: cannot listen on the default StatsD address {addr}: {e}; \
                     running without StatsD (pass --statsd ADDR for another address, or --no-statsd)"
                );
                return Ok(None);
            }
        };
        let addr = socket.local_addr()?;
        let drops = KernelDrops::of(&socket);
        if drops.is_none() {
            eprintln!(
                "[statsd] warning: /proc/net does not show the socket: datagrams the kernel drops cannot be counted"
            );
        }
        Ok(Some(Listener {
            socket: Arc::new(socket),
            addr,
            status,
            drops,
        }))
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its start line.
    pub fn describe(&self) -> String {
        format!(
            "[statsd] listening on {} (UDP, receive buffer {} KiB)",
            self.addr(),
            socket::recv_buffer(&self.socket) / 1024
        )
    }

    /// Datagrams the kernel dropped on the socket so far, if it says.
    pub fn kernel_drops(&self) -> Option<u64> {
        self.drops.as_ref().and_then(KernelDrops::read)
    }

    fn read_drops(&self) {
        if let Some(n) = self.kernel_drops() {
            self.status
                .statsd
                .kernel_dropped
                .fetch_max(n, Ordering::Relaxed);
        }
    }
}

/// Publishes the metrics of one burst, waiting for room on the bus
/// (lossless: while it waits, the kernel queues and then drops datagrams,
/// and those drops are counted).
pub async fn publish(
    ctx: &Context<Metric>,
    metrics: Vec<(String, Metric)>,
    from: &Arc<str>,
) -> Result<(), BoxError> {
    for (topic, m) in metrics {
        ctx.send(Message::new(m).topic(topic).source(from.clone()))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The datagrams of one burst, one after the other.
#[derive(Debug, Default)]
struct Burst {
    bytes: Vec<u8>,
    /// Where each datagram ends in `bytes`.
    ends: Vec<usize>,
}

impl Burst {
    fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(a, b)| &self.bytes[a..*b])
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// Folds every datagram and gives the metrics to publish.
    fn fold(&self, fold: &mut Fold, status: &IngestStatus) -> Vec<(String, Metric)> {
        for d in self.datagrams() {
            fold.datagram(d, &status.statsd);
        }
        fold.finish()
    }
}

/// A burst folded: the burst back for the next one, and the metrics to
/// publish.
type Folded = (Burst, Vec<(String, Metric)>);

/// A burst for a fold thread, and where to send it back folded.
type Job = (Burst, oneshot::Sender<Folded>);

/// The listener's fold threads, [`IN_FLIGHT`] of them: each folds the
/// bursts handed to it, one after the other, and sends each back folded.
/// Bursts go to them in turn, so each holds at most one (the listener
/// takes the folded bursts back in the order it handed them out). They end
/// when their `FoldThreads` is dropped (after the burst they are folding).
#[derive(Debug)]
struct FoldThreads {
    jobs: Vec<std::sync::mpsc::Sender<Job>>,
    next: usize,
}

impl FoldThreads {
    fn start(status: &Arc<IngestStatus>) -> std::io::Result<FoldThreads> {
        let mut jobs = Vec::with_capacity(IN_FLIGHT);
        for i in 0..IN_FLIGHT {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            let status = status.clone();
            std::thread::Builder::new()
                .name(format!("statsd-fold-{i}"))
                .spawn(move || {
                    let mut fold = Fold::default();
                    while let Ok((burst, done)) = rx.recv() {
                        let metrics = burst.fold(&mut fold, &status);
                        let _ = done.send((burst, metrics));
                    }
                })?;
            jobs.push(tx);
        }
        Ok(FoldThreads { jobs, next: 0 })
    }

    /// Hands `burst` to the next thread; its metrics come on the receiver.
    fn fold(&mut self, burst: Burst) -> Result<oneshot::Receiver<Folded>, BoxError> {
        let (done, folded) = oneshot::channel();
        self.jobs[self.next]
            .send((burst, done))
            .map_err(|_| "a StatsD fold thread has stopped")?;
        self.next = (self.next + 1) % self.jobs.len();
        Ok(folded)
    }
}

/// The metrics of a burst handed to a fold thread.
async fn folded(rx: &mut oneshot::Receiver<Folded>) -> Result<Folded, BoxError> {
    rx.await
        .map_err(|_| "a StatsD fold thread stopped (it panicked)".into())
}

impl Module<Metric> for Listener {
    fn name(&self) -> &str {
        "statsd"
    }

    async fn run(&mut self, ctx: Context<Metric>) -> Result<(), BoxError> {
        let socket = tokio::net::UdpSocket::from_std(self.socket.try_clone()?)?;
        let mut buf = vec![0u8; DATAGRAM];
        let from: Arc<str> = Arc::from("statsd");
        let mut threads = FoldThreads::start(&self.status)?;
        // Small bursts are folded here.
        let mut fold = Fold::default();
        let mut spare: Vec<Burst> = Vec::new();
        let mut folding: VecDeque<oneshot::Receiver<Folded>> = VecDeque::new();
        let mut tick = tokio::time::interval(DROPS_EVERY);
        let result = loop {
            tokio::select! {
                biased;
                _ = ctx.shutdown_requested() => break Ok(()),
                _ = tick.tick() => {
                    self.read_drops();
                    continue;
                }
                done = async { folded(folding.front_mut().expect("a burst being folded")).await },
                    if !folding.is_empty() =>
                {
                    folding.pop_front();
                    let (burst, metrics) = done?;
                    spare.push(burst);
                    if let Err(e) = publish(&ctx, metrics, &from).await {
                        break Err(e);
                    }
                    continue;
                }
                ready = socket.readable(), if folding.len() < IN_FLIGHT => ready?,
            }
            let mut burst = spare.pop().unwrap_or_default();
            burst.clear();
            while burst.ends.len() < BURST && burst.bytes.len() < BURST_BYTES {
                let n = match socket.try_recv_from(&mut buf) {
                    Ok((n, _)) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                };
                burst.bytes.extend_from_slice(&buf[..n]);
                burst.ends.push(burst.bytes.len());
            }
            if burst.ends.is_empty() {
                spare.push(burst);
                continue;
            }
            if burst.ends.len() > INLINE || !folding.is_empty() {
                folding.push_back(threads.fold(burst)?);
                continue;
            }
            let metrics = burst.fold(&mut fold, &self.status);
            spare.push(burst);
            if let Err(e) = publish(&ctx, metrics, &from).await {
                break Err(e);
            }
        };
        // What was read is published, in order, while the bus takes it.
        let mut result = result;
        while let Some(mut f) = folding.pop_front() {
            let (_, metrics) = folded(&mut f).await?;
            if result.is_ok() {
                result = publish(&ctx, metrics, &from).await;
            }
        }
        self.read_drops();
        match result {
            Err(_) if ctx.is_shutting_down() => Ok(()),
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::ingest_status::Protocol;

    fn metrics_of(datagram: &[u8], status: &Protocol) -> Vec<(String, Metric)> {
        let mut fold = Fold::default();
        fold.datagram(datagram, status);
        fold.finish()
    }

    /// A burst is its datagrams, each whole, in order.
    #[test]
    fn a_burst_folds_its_datagrams_in_order() {
        let mut burst = Burst::default();
        for d in [&b"a:1|c\nb:2|g"[..], b"", b"b:+1|g\na:3|c"] {
            burst.bytes.extend_from_slice(d);
            burst.ends.push(burst.bytes.len());
        }
        let got: Vec<&[u8]> = burst.datagrams().collect();
        assert_eq!(got, [&b"a:1|c\nb:2|g"[..], b"", b"b:+1|g\na:3|c"]);
        let status = IngestStatus::default();
        let metrics = burst.fold(&mut Fold::default(), &status);
        let shown: Vec<String> = metrics.iter().map(|(_, m)| m.to_string()).collect();
        assert_eq!(
            shown,
            [
                r#"Samples { source: "statsd", a counter 1, a counter 3 }"#,
                r#"Samples { source: "statsd", b gauge 2, b gauge_delta 1 }"#,
            ]
        );
        assert_eq!(status.statsd.snapshot().received, 3);
    }

    /// A line the parser takes but whose sample the aggregations could not
    /// hold (a weight of 1e12 from a tiny rate, a value that scales to
    /// infinity) is counted as malformed; the good lines beside it stay.
    #[test]
    fn samples_past_the_limits_are_counted_not_kept() {
        let status = Protocol::default();
        let datagram = b"ok:1|c\nrare:1|ms|@0.000000000001\nhuge:1e308|c|@0.5\nok:2|c";
        let metrics = metrics_of(datagram, &status);
        let kept: usize = metrics.iter().map(|(_, m)| m.samples().len()).sum();
        assert_eq!(kept, 2, "{metrics:?}");
        let s = status.snapshot();
        assert_eq!(s.accepted, 2);
        assert_eq!(
            s.malformed_by_reason["over the monitor's limits"], 2,
            "{s:?}"
        );
    }
}
