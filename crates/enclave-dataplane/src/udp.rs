//! The tunnel's UDP socket: dual-stack when the system allows, large buffers, optional fwmark.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{Error, Result};
use crate::sys;

/// The socket buffer size asked for, as wireguard-go does (7 MiB).
const SOCKET_BUFFER: usize = 7 << 20;

/// A bound UDP socket.
#[derive(Debug)]
pub(crate) struct Udp {
    socket: Socket,
    /// Whether it is an IPv6 (dual-stack) socket.
    pub(crate) v6: bool,
    /// The bound port.
    pub(crate) port: u16,
    /// The fwmark set on it (0: none); atomic because the socket is shared by the tunnel's
    /// two threads while a UAPI `set` changes it.
    fwmark: AtomicU32,
    /// Whether the kernel may hand over coalesced datagrams (`UDP_GRO`).
    pub(crate) gro: bool,
}

impl Udp {
    /// Binds `port` (0: any) on every address, IPv6 dual-stack if possible, else IPv4.
    pub(crate) fn bind(port: u16, fwmark: u32) -> Result<Udp> {
        let bind_err = |source| Error::UdpBind { port, source };
        let (socket, v6) = match Self::open(Domain::IPV6, port) {
            Ok(socket) => (socket, true),
            Err(_) => (Self::open(Domain::IPV4, port).map_err(bind_err)?, false),
        };
        let port = socket
            .local_addr()
            .map_err(bind_err)?
            .as_socket()
            .map(|a| a.port())
            .unwrap_or(port);
        let fd = socket.as_raw_fd();
        if sys::set_int_option(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            SOCKET_BUFFER as i32,
        )
        .is_err()
        {
            socket
                .set_recv_buffer_size(SOCKET_BUFFER)
                .map_err(|source| Error::SocketOption {
                    option: "SO_RCVBUF",
                    source,
                })?;
        }
        if sys::set_int_option(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            SOCKET_BUFFER as i32,
        )
        .is_err()
        {
            socket
                .set_send_buffer_size(SOCKET_BUFFER)
                .map_err(|source| Error::SocketOption {
                    option: "SO_SNDBUF",
                    source,
                })?;
        }
        let udp = Udp {
            socket,
            v6,
            port,
            fwmark: AtomicU32::new(0),
            gro: false,
        };
        udp.set_fwmark(fwmark)?;
        Ok(udp)
    }

    fn open(domain: Domain, port: u16) -> io::Result<Socket> {
        let socket = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
        let addr: SocketAddr = if domain == Domain::IPV6 {
            socket.set_only_v6(false)?;
            (Ipv6Addr::UNSPECIFIED, port).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, port).into()
        };
        socket.bind(&addr.into())?;
        Ok(socket)
    }

    /// Asks the kernel to coalesce received datagrams of one sender (`UDP_GRO`, Linux 5.0);
    /// the receiver then splits them by the size in each message's control data. Returns
    /// whether it is on.
    pub(crate) fn enable_gro(&mut self) -> bool {
        self.gro =
            sys::set_int_option(self.socket.as_raw_fd(), libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
        self.gro
    }

    /// The fwmark on outgoing packets (0: none).
    pub(crate) fn fwmark(&self) -> u32 {
        self.fwmark.load(Ordering::Relaxed)
    }

    /// Sets (or with 0 clears) the fwmark on outgoing packets.
    pub(crate) fn set_fwmark(&self, fwmark: u32) -> Result<()> {
        if fwmark == self.fwmark() {
            return Ok(());
        }
        self.socket
            .set_mark(fwmark)
            .map_err(|source| Error::SocketOption {
                option: "SO_MARK",
                source,
            })?;
        self.fwmark.store(fwmark, Ordering::Relaxed);
        Ok(())
    }

    /// Sends one datagram (handshakes, keepalives: the rare ones).
    pub(crate) fn send_to(&self, payload: &[u8], dst: SocketAddr) -> io::Result<()> {
        let dst = match (dst, self.v6) {
            (SocketAddr::V4(v4), true) => {
                SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
            }
            (other, _) => other,
        };
        self.socket.send_to(payload, &dst.into()).map(|_| ())
    }
}

impl AsRawFd for Udp {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}
