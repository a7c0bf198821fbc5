//! The few places that talk to the kernel directly: the TUN device, batched UDP receive and
//! send (recvmmsg/sendmmsg), the wake-up eventfd, and poll.

use std::ffi::CString;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{Error, Result};
use crate::offload::VNET_HDR_LEN;

/// Most datagrams in one `UDP_SEGMENT` send (`UDP_MAX_SEGMENTS` is 64 on older kernels).
const GSO_MAX_SEGMENTS: usize = 64;
/// Most bytes in one `UDP_SEGMENT` send: one IP packet, less its headers.
const GSO_MAX_BYTES: usize = 65_000;
/// Room for one control message carrying an int, aligned (`CMSG_SPACE(4)` is 24 on 64-bit
/// Linux).
type CmsgBuf = [u64; 4];

/// `struct ifreq` with the parts of its union we use (flags, mtu, queue length, an IPv4
/// address) and the union's full size.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: IfReqData,
}

#[repr(C)]
union IfReqData {
    flags: libc::c_short,
    mtu: libc::c_int,
    qlen: libc::c_int,
    addr: libc::sockaddr_in,
    _size: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> IfReq {
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: IfReqData { _size: [0; 24] },
        };
        for (dst, src) in req.name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        req
    }

    fn name(&self) -> String {
        let bytes: Vec<u8> = self
            .name
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Checks an interface name as the kernel would take it.
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() >= libc::IFNAMSIZ
        || name.contains(['/', '\0'])
        || name.contains(char::is_whitespace)
    {
        return Err(Error::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Packets the kernel holds for us on the TUN device (its `txqueuelen`) before it drops
/// what a sender writes next. The kernel's default for TUN is 500: about 5 ms of a 1 Gbit/s
/// burst of full-sized datagrams, shorter than a time slice the tunnel thread may wait for a
/// core. 1000 is the default of Ethernet devices, and close to the 1024 packets kernel
/// WireGuard queues per peer. An administrator can change it (`ip link set DEV txqueuelen N`).
const TX_QUEUE_LEN: libc::c_int = 1000;

/// Which segmentation offloads a TUN device has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TunOffloads {
    /// Packets carry a `virtio_net_hdr` (`IFF_VNET_HDR`): we may write TCP super-packets
    /// (receive coalescing), and read whatever the flags below allow.
    pub(crate) vnet_hdr: bool,
    /// Checksum completion and TCP super-packets (TSO4/TSO6).
    pub(crate) tso: bool,
    /// UDP super-packets (USO4/USO6).
    pub(crate) uso: bool,
}

/// A TUN device (layer 3, no packet information header, and a `virtio_net_hdr` when
/// [`TunOffloads::vnet_hdr`]). Closing it removes the interface.
#[derive(Debug)]
pub(crate) struct Tun {
    fd: OwnedFd,
    name: String,
    offloads: TunOffloads,
}

impl Tun {
    /// Creates the TUN interface `name`, sets its MTU and brings it up. With `vnet_hdr`, asks
    /// for `virtio_net_hdr`s and the checksum and TSO offloads (and USO with `uso`), and takes
    /// what the kernel grants (nothing, on a kernel without them).
    pub(crate) fn create(name: &str, mtu: u16, vnet_hdr: bool, uso: bool) -> Result<Tun> {
        check_name(name)?;
        let create_err = |source| Error::TunCreate {
            name: name.to_owned(),
            source,
        };
        let path = CString::new("/dev/net/tun").expect("no NUL in a literal");
        // SAFETY: `path` is a valid NUL-terminated string; open has no other preconditions.
        let raw = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if raw < 0 {
            return Err(create_err(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a descriptor we just opened and own exclusively.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let set_iff = |flags: libc::c_int| -> io::Result<IfReq> {
            let mut req = IfReq::new(name);
            req.data.flags = flags as libc::c_short;
            // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `IfReq` lays out in
            // full.
            if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut req) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(req)
        };
        let plain = libc::IFF_TUN | libc::IFF_NO_PI;
        let (req, vnet_hdr) = if vnet_hdr {
            match set_iff(plain | libc::IFF_VNET_HDR) {
                Ok(req) => (req, true),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    (set_iff(plain).map_err(create_err)?, false)
                }
                Err(e) => return Err(create_err(e)),
            }
        } else {
            (set_iff(plain).map_err(create_err)?, false)
        };
        let mut offloads = TunOffloads {
            vnet_hdr,
            ..TunOffloads::default()
        };
        if vnet_hdr {
            let tso = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
            if uso && set_offload(&fd, tso | libc::TUN_F_USO4 | libc::TUN_F_USO6).is_ok() {
                (offloads.tso, offloads.uso) = (true, true);
            } else if set_offload(&fd, tso).is_ok() {
                offloads.tso = true;
            }
        }
        let tun = Tun {
            fd,
            name: req.name(),
            offloads,
        };
        tun.configure(mtu).map_err(|source| Error::TunConfigure {
            name: tun.name.clone(),
            source,
        })?;
        Ok(tun)
    }

    fn configure(&self, mtu: u16) -> io::Result<()> {
        let sock = ioctl_socket()?;
        let mut req = IfReq::new(&self.name);
        req.data.mtu = libc::c_int::from(mtu);
        ifreq_ioctl(&sock, libc::SIOCSIFMTU, &mut req)?;
        req.data.qlen = TX_QUEUE_LEN;
        ifreq_ioctl(&sock, libc::SIOCSIFTXQLEN, &mut req)?;
        set_up(&self.name)
    }

    /// The interface name the kernel gave.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The offloads in use.
    pub(crate) fn offloads(&self) -> TunOffloads {
        self.offloads
    }

    /// Reads one packet; `Ok(None)` when none is waiting.
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(err),
            };
        }
        Ok(Some(n as usize))
    }

    /// Writes one packet (with an empty `virtio_net_hdr` in front when the device wants one).
    pub(crate) fn write(&self, packet: &[u8]) -> io::Result<()> {
        if self.offloads.vnet_hdr {
            return self.write_vnet(&[0; VNET_HDR_LEN], packet);
        }
        // SAFETY: `packet` is valid for reads of `packet.len()` bytes.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Writes one packet (or super-packet) after its `virtio_net_hdr`, in one writev; only
    /// for a device with [`TunOffloads::vnet_hdr`].
    pub(crate) fn write_vnet(&self, hdr: &[u8; VNET_HDR_LEN], packet: &[u8]) -> io::Result<()> {
        let iov = [
            libc::iovec {
                iov_base: hdr.as_ptr() as *mut libc::c_void,
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: packet.as_ptr() as *mut libc::c_void,
                iov_len: packet.len(),
            },
        ];
        // SAFETY: both iovecs point at live buffers of the given lengths, which writev only
        // reads.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// `TUNSETOFFLOAD` with `flags`.
fn set_offload(fd: &OwnedFd, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is passed.
    if unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD as _,
            flags as libc::c_ulong,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// An eventfd that wakes the event loop.
#[derive(Debug)]
pub(crate) struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Waker> {
        // SAFETY: eventfd has no memory preconditions.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` was just opened and is owned here only.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Waker { fd })
    }

    pub(crate) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64; a full counter (EAGAIN) still wakes.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    pub(crate) fn drain(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Waits until one of `fds` is readable or `timeout_ms` passes (-1: forever). Returns which
/// are readable.
pub(crate) fn poll_readable<const N: usize>(
    fds: [RawFd; N],
    timeout_ms: i32,
) -> io::Result<[bool; N]> {
    let mut pollfds = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    // SAFETY: `pollfds` is an array of N initialised pollfd structures.
    let n = unsafe { libc::poll(pollfds.as_mut_ptr(), N as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok([false; N]);
        }
        return Err(err);
    }
    Ok(pollfds.map(|p| p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0))
}

/// Converts a kernel socket address; v4-mapped IPv6 addresses become IPv4 ones.
pub(crate) fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in =
                unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )),
            })
        }
        _ => None,
    }
}

/// Converts to a kernel socket address for a socket of the given family (IPv4 destinations
/// become v4-mapped on an IPv6 socket).
pub(crate) fn to_sockaddr(
    addr: SocketAddr,
    v6_socket: bool,
) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let addr = match (addr, v6_socket) {
        (SocketAddr::V4(v4), true) => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        (other, _) => other,
    };
    match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            (storage, size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            sin6.sin6_flowinfo = v6.flowinfo();
            sin6.sin6_scope_id = v6.scope_id();
            (storage, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

/// Buffers and headers for one recvmmsg or sendmmsg call of up to `BATCH` datagrams.
pub(crate) struct Batch {
    pub(crate) bufs: Vec<Box<[u8]>>,
    pub(crate) lens: Vec<usize>,
    pub(crate) addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    /// The destination of each slot to send, to group datagrams for one peer.
    dsts: Vec<Option<SocketAddr>>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    /// The first slot of each send header.
    header_starts: Vec<usize>,
    cmsgs: Vec<CmsgBuf>,
    /// Send runs of equal-sized datagrams to one destination as one `UDP_SEGMENT` message.
    pub(crate) gso: bool,
    /// Ask for the `UDP_GRO` segment size of each received message.
    pub(crate) gro: bool,
    /// Of each received message: the size of the datagrams it coalesces (0: one datagram).
    pub(crate) gro_sizes: Vec<usize>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("slots", &self.bufs.len())
            .finish_non_exhaustive()
    }
}

// SAFETY: the raw pointers inside the headers only ever point into this Batch's own buffers,
// and are rebuilt before each use; the Batch moves between threads as a whole.
unsafe impl Send for Batch {}

impl Batch {
    pub(crate) fn new(slots: usize, buf_size: usize) -> Batch {
        Batch {
            bufs: (0..slots)
                .map(|_| vec![0u8; buf_size].into_boxed_slice())
                .collect(),
            lens: vec![0; slots],
            // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
            addrs: vec![unsafe { zeroed() }; slots],
            addr_lens: vec![0; slots],
            dsts: vec![None; slots],
            iovecs: Vec::with_capacity(slots),
            headers: Vec::with_capacity(slots),
            header_starts: Vec::with_capacity(slots),
            cmsgs: vec![[0; 4]; slots],
            gso: false,
            gro: false,
            gro_sizes: vec![0; slots],
        }
    }

    pub(crate) fn slots(&self) -> usize {
        self.bufs.len()
    }

    fn build_headers(&mut self, count: usize, send: bool) {
        self.iovecs.clear();
        self.headers.clear();
        for i in 0..count {
            let len = if send {
                self.lens[i]
            } else {
                self.bufs[i].len()
            };
            self.iovecs.push(libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: len,
            });
            if !send {
                self.addr_lens[i] = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            }
        }
        for i in 0..count {
            // SAFETY: msghdr is plain data; all zeroes is a valid value.
            let mut hdr: libc::msghdr = unsafe { zeroed() };
            hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = self.addr_lens[i];
            hdr.msg_iov = &mut self.iovecs[i];
            hdr.msg_iovlen = 1;
            if self.gro && !send {
                hdr.msg_control = self.cmsgs[i].as_mut_ptr().cast();
                hdr.msg_controllen = size_of::<CmsgBuf>();
            }
            self.headers.push(libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            });
        }
    }

    /// Receives up to `slots()` datagrams without blocking; returns how many arrived
    /// (their lengths in `lens`, their senders in `addrs`).
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let count = self.slots();
        self.build_headers(count, false);
        // SAFETY: `headers` holds `count` headers whose pointers reference live buffers,
        // iovecs and address storage owned by `self`, which are not moved during the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(err),
            };
        }
        let n = n as usize;
        for i in 0..n {
            self.lens[i] = self.headers[i].msg_len as usize;
            self.gro_sizes[i] = if self.gro {
                gro_size(&self.headers[i].msg_hdr)
            } else {
                0
            };
        }
        Ok(n)
    }

    /// Builds the send headers for slots `from..count`: with [`Batch::gso`], one header per
    /// run of datagrams to one destination, all as long as the first but a shorter last one,
    /// with a `UDP_SEGMENT` control message; else one per datagram. Returns how many.
    fn build_send_headers(&mut self, from: usize, count: usize) -> usize {
        self.iovecs.clear();
        self.headers.clear();
        self.header_starts.clear();
        // All iovecs first (the vector never grows past its capacity, so the pointers taken
        // below stay valid), one per slot, so a header can take a run of them.
        for i in 0..count {
            self.iovecs.push(libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.lens[i],
            });
        }
        let mut i = from;
        while i < count {
            let start = i;
            let size = self.lens[start];
            let mut total = size;
            i += 1;
            if self.gso {
                while i < count
                    && i - start < GSO_MAX_SEGMENTS
                    && self.dsts[i] == self.dsts[start]
                    && self.lens[i] <= size
                    && total + self.lens[i] <= GSO_MAX_BYTES
                {
                    total += self.lens[i];
                    i += 1;
                    if self.lens[i - 1] < size {
                        break;
                    }
                }
            }
            // SAFETY: msghdr is plain data; all zeroes is a valid value.
            let mut hdr: libc::msghdr = unsafe { zeroed() };
            hdr.msg_name = (&mut self.addrs[start] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = self.addr_lens[start];
            hdr.msg_iov = &mut self.iovecs[start];
            hdr.msg_iovlen = i - start;
            if i - start > 1 {
                let buf = &mut self.cmsgs[self.headers.len()];
                hdr.msg_control = buf.as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE only computes a size.
                hdr.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
                // SAFETY: msg_control points at a buffer of at least CMSG_SPACE(2) bytes
                // (CmsgBuf is 32), so the first header and its 2 data bytes lie inside it.
                unsafe {
                    let cmsg = libc::CMSG_FIRSTHDR(&hdr);
                    (*cmsg).cmsg_level = libc::SOL_UDP;
                    (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(2) as usize;
                    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size as u16);
                }
            }
            self.header_starts.push(start);
            self.headers.push(libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            });
        }
        self.headers.len()
    }

    /// Sends the first `count` slots (lengths in `lens`, destinations set with
    /// [`Batch::set_dst`]), blocking while the socket buffer is full. With [`Batch::gso`],
    /// runs to one destination go as single `UDP_SEGMENT` messages; if the kernel refuses
    /// that, GSO is turned off for good and the rest goes datagram by datagram.
    pub(crate) fn send(&mut self, fd: RawFd, count: usize) -> io::Result<()> {
        let mut from = 0;
        while from < count {
            let headers = self.build_send_headers(from, count);
            // SAFETY: `headers` holds valid headers whose pointers reference live buffers, iovecs,
            // control buffers and addresses owned by `self`, not moved during the call.
            let n = unsafe {
                libc::sendmmsg(fd, self.headers.as_mut_ptr(), headers as libc::c_uint, 0)
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if self.gso && headers < count - from {
                    tracing::info!(error = %err, "UDP GSO refused; sending datagrams one by one");
                    self.gso = false;
                    continue;
                }
                return Err(err);
            }
            let n = n as usize;
            from = self.header_starts.get(n).copied().unwrap_or(count);
        }
        Ok(())
    }

    /// Sets the destination of slot `i`.
    pub(crate) fn set_dst(&mut self, i: usize, dst: SocketAddr, v6_socket: bool) {
        let (storage, len) = to_sockaddr(dst, v6_socket);
        self.addrs[i] = storage;
        self.addr_lens[i] = len;
        self.dsts[i] = Some(dst);
    }
}

/// The `UDP_GRO` segment size in a received message's control data (0: none).
fn gro_size(hdr: &libc::msghdr) -> usize {
    // SAFETY: the kernel filled msg_control up to msg_controllen; the CMSG_* macros walk only
    // within it, and the data of a UDP_GRO message is an int.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                return usize::try_from(size).unwrap_or(0);
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    0
}

/// Sets an integer socket option.
pub(crate) fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A throwaway socket for interface ioctls.
fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket has no memory preconditions.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` was just opened and is owned here only.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn ifreq_ioctl(sock: &OwnedFd, request: libc::c_ulong, req: &mut IfReq) -> io::Result<()> {
    // SAFETY: the SIOC*IF* requests read and write a `struct ifreq`, which `IfReq` lays out
    // in full, and `req` outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request as _, req as *mut IfReq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Sets interface `name` up.
pub fn set_up(name: &str) -> io::Result<()> {
    let sock = ioctl_socket()?;
    let mut req = IfReq::new(name);
    ifreq_ioctl(&sock, libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: the kernel just filled in the flags member of the union.
    let flags = unsafe { req.data.flags };
    req.data.flags = flags | libc::IFF_UP as libc::c_short;
    ifreq_ioctl(&sock, libc::SIOCSIFFLAGS, &mut req)
}

/// Gives interface `name` the IPv4 `address` with `netmask`, replacing its address.
pub fn set_ipv4_address(name: &str, address: Ipv4Addr, netmask: Ipv4Addr) -> io::Result<()> {
    check_name(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let sock = ioctl_socket()?;
    let mut req = IfReq::new(name);
    req.data.addr = sockaddr_in(address);
    ifreq_ioctl(&sock, libc::SIOCSIFADDR, &mut req)?;
    req.data.addr = sockaddr_in(netmask);
    ifreq_ioctl(&sock, libc::SIOCSIFNETMASK, &mut req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_round_trip_and_unmap() {
        for (addr, v6) in [
            ("192.0.2.1:51820", false),
            ("192.0.2.1:51820", true),
            ("[2001:db8::1]:4000", true),
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let (storage, _) = to_sockaddr(addr, v6);
            assert_eq!(from_sockaddr(&storage), Some(addr));
        }
        let (storage, _) = to_sockaddr("192.0.2.1:1".parse().unwrap(), true);
        assert_eq!(libc::c_int::from(storage.ss_family), libc::AF_INET6);
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(check_name("wg0").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a-very-long-name0").is_err());
        assert!(check_name("a/b").is_err());
    }
}

/// An inotify watch on a directory, for noticing that a file in it was deleted or replaced
/// without looking every so often.
#[derive(Debug)]
pub(crate) struct DirWatch {
    fd: OwnedFd,
}

impl DirWatch {
    /// Watches `dir` for entries created, deleted or moved, and for its own removal.
    pub(crate) fn new(dir: &std::path::Path) -> io::Result<DirWatch> {
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: inotify_init1 has no memory preconditions.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` was just opened and is owned here only.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mask = libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_MOVED_FROM
            | libc::IN_MOVED_TO
            | libc::IN_DELETE_SELF
            | libc::IN_MOVE_SELF;
        // SAFETY: `path` is a valid NUL-terminated string; `fd` is an inotify descriptor.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(DirWatch { fd })
    }

    /// Reads and forgets the pending events (the caller looks at the file itself).
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reads at most `buf.len()` bytes into a valid buffer.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return;
            }
        }
    }
}

impl AsRawFd for DirWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
