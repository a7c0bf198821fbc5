//! Marking a socket so its packets skip the tunnel's table.

use std::io;
use std::os::fd::AsRawFd;

/// Sets `SO_MARK` on `socket` (needs CAP_NET_ADMIN), so that its packets, marked with
/// [`DefaultRoute::fwmark`](crate::DefaultRoute::fwmark), are not routed into the tunnel.
///
/// The data plane does not call this: `enclave-dataplane` marks its own UDP socket, and an
/// external WireGuard gets the fwmark as a device setting. It is for any other socket that must
/// bypass a default route through the tunnel (the `routes-default-route` scenario's probe).
pub fn set_fwmark(socket: &impl AsRawFd, mark: u32) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    // SAFETY: `fd` is an open socket borrowed from `socket` for the duration of the call; the
    // option value points at a live `u32` whose size is passed alongside it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MARK,
            std::ptr::from_ref(&mark).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
