//! StatsD over UDP: the `statsd` module of the `ingest` set.
//!
//! The monitor listens on `127.0.0.1:8125` by default (`--statsd ADDR` moves
//! it, `--no-statsd` turns it off; `statsd = "…"` / `no-statsd = true` in the
//! config file). The default port already taken is a warning and the monitor
//! runs on without StatsD; an address the user asked for that cannot be
//! bound stops start-up with an error naming it.
//!
//! ## What it understands
//!
//! | line | sample |
//! | --- | --- |
//! | `api.requests:1\|c` | counter +1 |
//! | `api.requests:1\|c\|@0.1` | counter +10 (scaled by 1 / rate) |
//! | `pool.size:12\|g` | gauge 12 |
//! | `pool.size:+3\|g`, `pool.size:-2\|g` | gauge change (`gauge_delta`) |
//! | `api.latency:12.5\|ms` (also `\|h`, `\|d`) | observation 12.5, weight 1 / rate |
//! | `users:alice\|s` | set member `alice` |
//! | `…\|#route:/a,canary` | labels `route="/a"`, `canary=""` |
//! | `…\|#service:shop` | source `shop` (the `service` tag is the source, not a label) |
//! | `…\|T1700000000` | measured at that Unix time |
//!
//! A datagram holds one line or several separated by `\n`. Without a
//! `service` tag the source is `statsd`, so `api.requests:1|c` travels on
//! `metrics.statsd.api.requests`, and with `#service:shop` on
//! `metrics.shop.api.requests` (see [`sample`](super::sample)).
//!
//! ## Nothing lost silently
//!
//! - A malformed line (no value, bad value, unknown type, bad sample rate,
//!   bad tag, empty name, not UTF-8, …) is counted by reason with the first
//!   examples kept (`/api/summary` → `ingest.statsd`); the good lines of the
//!   same datagram are taken all the same. A datagram cut short loses its
//!   last line to a reason, nothing else.
//! - The datagrams waiting on the socket are read as one burst (up to 256
//!   datagrams or 128 KiB); its lines are folded into one run per series,
//!   the values kept in order (see [`fold`]; big bursts on the listener's
//!   two fold threads, see [`listener`]), and published in the order read as one
//!   [`Metric::Runs`] per source and topic (cut into several past 16 KiB,
//!   so a full queue holds bounded bytes), *lossless*: when a
//!   subscriber that must see everything (the logger) is behind, the
//!   listener waits for it and stops reading. The kernel then queues
//!   datagrams in the socket's receive buffer (8 MiB asked for, capped by
//!   `net.core.rmem_max`) and, once that is full, drops them. Linux counts
//!   those drops per socket; the listener reads the count every second into
//!   `ingest.statsd.kernel_dropped` (see [`socket`]).
//!
//! [`Metric::Runs`]: super::metric::Metric::Runs

pub mod fold;
pub mod listener;
pub mod parse;
pub mod socket;

pub use listener::Listener;

/// StatsD's conventional address, the monitor's default.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8125";
