//! Marking the data plane's own UDP socket so its packets skip the tunnel's table.

use std::io;
use std::os::fd::AsRawFd;

/// Sets `SO_MARK` on `socket` (needs CAP_NET_ADMIN). The data plane calls this on its UDP
/// socket with [`DefaultRoute::fwmark`](crate::DefaultRoute::fwmark), so that the encrypted
/// traffic to its peers is not routed back into the tunnel.
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
