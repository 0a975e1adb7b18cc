//! The StatsD listener module: reads the datagrams waiting on its socket
//! (a burst: up to [`BURST`] datagrams or [`BURST_VALUES`] samples), folds
//! their lines into runs (see [`fold`](super::fold)), and publishes one
//! [`Metric::Runs`] per source and topic per burst.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use busline::{BoxError, Context, Message, Module};

use super::fold::Fold;
use super::socket::{self, KernelDrops};
use crate::monitor::ingest_status::IngestStatus;
use crate::monitor::metric::Metric;

/// The largest datagram read whole (UDP's own limit).
const DATAGRAM: usize = 65_536;
/// Datagrams read in a row, folded and published together, before the
/// listener looks at its shutdown signal.
pub const BURST: usize = 256;
/// Samples a burst holds at most: past it the burst is published (a
/// datagram of many short lines holds thousands).
pub const BURST_VALUES: usize = 4096;
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

impl Module<Metric> for Listener {
    fn name(&self) -> &str {
        "statsd"
    }

    async fn run(&mut self, ctx: Context<Metric>) -> Result<(), BoxError> {
        let socket = tokio::net::UdpSocket::from_std(self.socket.try_clone()?)?;
        let mut buf = vec![0u8; DATAGRAM];
        let from: Arc<str> = Arc::from("statsd");
        let mut fold = Fold::default();
        let mut tick = tokio::time::interval(DROPS_EVERY);
        loop {
            tokio::select! {
                biased;
                _ = ctx.shutdown_requested() => break,
                _ = tick.tick() => self.read_drops(),
                ready = socket.readable() => ready?,
            }
            for _ in 0..BURST {
                let n = match socket.try_recv_from(&mut buf) {
                    Ok((n, _)) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                };
                fold.datagram(&buf[..n], &self.status.statsd);
                if fold.values() >= BURST_VALUES {
                    break;
                }
            }
            if let Err(e) = publish(&ctx, fold.finish(), &from).await {
                if ctx.is_shutting_down() {
                    return Ok(());
                }
                return Err(e);
            }
        }
        self.read_drops();
        Ok(())
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
