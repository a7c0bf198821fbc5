//! Gives the tunnel interface its overlay address and sets it up (the one thing the agent sets
//! on an interface itself; the connected route of the overlay network comes with the address).

use std::io;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// `SIOCGIFFLAGS` (linux/sockios.h).
const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
/// `SIOCSIFFLAGS` (linux/sockios.h).
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
/// `SIOCSIFADDR` (linux/sockios.h).
const SIOCSIFADDR: libc::c_ulong = 0x8916;
/// `SIOCSIFNETMASK` (linux/sockios.h).
const SIOCSIFNETMASK: libc::c_ulong = 0x891c;

/// `struct ifreq`: the name, then the union, of which we use the address and the flags.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: IfReqData,
}

#[repr(C)]
union IfReqData {
    addr: libc::sockaddr_in,
    flags: libc::c_short,
    _size: [u8; 24],
}

/// Gives `run` a throwaway socket and an `ifreq` naming `interface`.
fn with_ifreq(
    interface: &str,
    run: impl FnOnce(libc::c_int, &mut IfReq) -> io::Result<()>,
) -> io::Result<()> {
    if interface.is_empty() || interface.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: socket() has no memory-safety preconditions; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: IfReqData { _size: [0; 24] },
    };
    for (dst, src) in req.name.iter_mut().zip(interface.bytes()) {
        *dst = src as libc::c_char;
    }
    let result = run(fd, &mut req);
    // SAFETY: fd was opened above and is closed once.
    unsafe { libc::close(fd) };
    result
}

fn ioctl(fd: libc::c_int, request: libc::c_ulong, req: &mut IfReq) -> io::Result<()> {
    // SAFETY: `req` is a properly laid out `struct ifreq` that outlives the call, and fd is an
    // open socket; the kernel reads and writes only within the struct.
    if unsafe { libc::ioctl(fd, request, req as *mut IfReq) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Sets `address` with the overlay network's prefix on `interface`, replacing its address.
pub fn set_address(interface: &str, address: Ipv4Addr, overlay: Ipv4Net) -> io::Result<()> {
    with_ifreq(interface, |fd, req| {
        req.data.addr = sockaddr(address);
        ioctl(fd, SIOCSIFADDR, req)?;
        req.data.addr = sockaddr(overlay.netmask());
        ioctl(fd, SIOCSIFNETMASK, req)
    })
}

/// Sets `interface` up (an external WireGuard may leave it down).
pub fn set_up(interface: &str) -> io::Result<()> {
    with_ifreq(interface, |fd, req| {
        ioctl(fd, SIOCGIFFLAGS, req)?;
        // SAFETY: SIOCGIFFLAGS just filled the flags member of the union.
        let flags = unsafe { req.data.flags };
        req.data.flags = flags | libc::IFF_UP as libc::c_short;
        ioctl(fd, SIOCSIFFLAGS, req)
    })
}
