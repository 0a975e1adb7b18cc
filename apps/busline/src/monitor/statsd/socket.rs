//! The StatsD socket: a UDP socket with a large receive buffer, and the
//! kernel's count of the datagrams it dropped on it.
//!
//! When the monitor falls behind (its subscribers are slow, the bus waits),
//! it stops reading the socket; the kernel queues datagrams up to the receive
//! buffer and then drops them. Linux counts those drops per socket: the
//! `drops` column of `/proc/net/udp` (`udp6` for IPv6) on the socket's line,
//! found by its inode. [`KernelDrops::read`] reads it: no `unsafe`, no
//! ancillary data parsed per datagram, and exact whenever it is read (the
//! listener reads it every second and when it stops).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use socket2::{Domain, Protocol, Socket, Type};

/// The receive buffer asked for: room for a burst while the bus waits. The
/// kernel caps it at `net.core.rmem_max`.
pub const RECV_BUFFER: usize = 8 << 20;

/// Binds a UDP socket on `addr` with a [`RECV_BUFFER`] receive buffer, non-blocking.
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // As large as allowed; a smaller buffer still works (and is reported).
    let _ = socket.set_recv_buffer_size(RECV_BUFFER);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// The receive buffer the kernel gave `socket`, in bytes (Linux reports
/// twice what it holds for data; this is what it reports).
pub fn recv_buffer(socket: &UdpSocket) -> usize {
    socket2::SockRef::from(socket)
        .recv_buffer_size()
        .unwrap_or(0)
}

/// Where to read the kernel's drop count of one socket.
#[derive(Debug, Clone)]
pub struct KernelDrops {
    inode: u64,
    table: &'static str,
}

impl KernelDrops {
    /// For `socket`; `None` where `/proc` does not say (not Linux, no `/proc`).
    pub fn of(socket: &UdpSocket) -> Option<KernelDrops> {
        let fd = socket.as_raw_fd();
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}")).ok()?.ino();
        let table = match socket.local_addr().ok()? {
            SocketAddr::V4(_) => "/proc/net/udp",
            SocketAddr::V6(_) => "/proc/net/udp6",
        };
        let d = KernelDrops { inode, table };
        d.read().map(|_| d)
    }

    /// Datagrams the kernel dropped on the socket since it was made.
    pub fn read(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.table).ok()?;
        drops_of(&text, self.inode)
    }
}

/// The `drops` of the line with inode `inode` in a `/proc/net/udp` table.
fn drops_of(table: &str, inode: u64) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
        if fields.len() < 13 || fields[9].parse::<u64>().ok()? != inode {
            return None;
        }
        fields[12].parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_read_from_the_sockets_line() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  120: 0100007F:1FBD 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0\n\
  121: 0100007F:1FBE 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 777 2 0000000000000000 31\n";
        assert_eq!(drops_of(table, 777), Some(31));
        assert_eq!(drops_of(table, 4242), Some(0));
        assert_eq!(drops_of(table, 5), None);
    }

    #[test]
    fn a_bound_socket_reports_no_drops_yet() {
        let s = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let d = KernelDrops::of(&s).expect("/proc/net/udp has the socket");
        assert_eq!(d.read(), Some(0));
        assert!(recv_buffer(&s) > 0);
    }
}
