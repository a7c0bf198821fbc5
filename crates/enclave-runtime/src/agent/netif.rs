//! Gives the tunnel interface its overlay address (the one thing the agent sets on an interface
//! itself; the connected route of the overlay network comes with it).

use std::io;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// `SIOCSIFADDR` (linux/sockios.h).
const SIOCSIFADDR: libc::c_ulong = 0x8916;
/// `SIOCSIFNETMASK` (linux/sockios.h).
const SIOCSIFNETMASK: libc::c_ulong = 0x891c;

#[repr(C)]
struct IfReqAddr {
    name: [libc::c_char; libc::IFNAMSIZ],
    addr: libc::sockaddr_in,
    _pad: [u8; 8],
}

fn ioctl_addr(interface: &str, request: libc::c_ulong, addr: Ipv4Addr) -> io::Result<()> {
    if interface.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: socket() has no memory-safety preconditions; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: all-zero bytes are a valid value of this plain C struct.
    let mut req: IfReqAddr = unsafe { std::mem::zeroed() };
    for (dst, src) in req.name.iter_mut().zip(interface.bytes()) {
        *dst = src as libc::c_char;
    }
    req.addr.sin_family = libc::AF_INET as libc::sa_family_t;
    req.addr.sin_addr.s_addr = u32::from(addr).to_be();
    // SAFETY: `req` is a properly laid out `struct ifreq` (name, then the sockaddr union
    // member, padded to the union's 24 bytes) that lives across the call; fd is open.
    let rc = unsafe { libc::ioctl(fd, request, &mut req) };
    let result = if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    // SAFETY: fd was opened above and is closed once.
    unsafe { libc::close(fd) };
    result
}

/// Sets `address` with the overlay network's prefix on `interface`, replacing its address.
pub fn set_address(interface: &str, address: Ipv4Addr, overlay: Ipv4Net) -> io::Result<()> {
    ioctl_addr(interface, SIOCSIFADDR, address)?;
    ioctl_addr(interface, SIOCSIFNETMASK, overlay.netmask())
}

/// `SIOCGIFFLAGS` (linux/sockios.h).
const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
/// `SIOCSIFFLAGS` (linux/sockios.h).
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;

#[repr(C)]
struct IfReqFlags {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Sets `interface` up (an external WireGuard may leave it down).
pub fn set_up(interface: &str) -> io::Result<()> {
    if interface.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: socket() has no memory-safety preconditions; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: all-zero bytes are a valid value of this plain C struct.
    let mut req: IfReqFlags = unsafe { std::mem::zeroed() };
    for (dst, src) in req.name.iter_mut().zip(interface.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `req` is a `struct ifreq` (name, then the flags member of the union, padded to
    // the union's 24 bytes) that lives across both calls; fd is open.
    let mut rc = unsafe { libc::ioctl(fd, SIOCGIFFLAGS, &mut req) };
    if rc >= 0 {
        req.flags |= libc::IFF_UP as libc::c_short;
        // SAFETY: as above.
        rc = unsafe { libc::ioctl(fd, SIOCSIFFLAGS, &mut req) };
    }
    let result = if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    // SAFETY: fd was opened above and is closed once.
    unsafe { libc::close(fd) };
    result
}
