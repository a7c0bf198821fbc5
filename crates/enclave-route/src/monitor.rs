//! Change notifications: a NETLINK_ROUTE socket subscribed to the kernel's multicast groups of
//! links, IPv4 addresses and IPv4 routes, so that a caller learns that the host's interfaces
//! changed when they change instead of listing them again and again.
//!
//! The socket is non-blocking and exposes its descriptor: the caller waits for it to become
//! readable in its own event loop (tokio's `AsyncFd`, poll(2)…), then calls
//! [`Monitor::drain`]. The messages say only *that* something changed; the caller lists what it
//! needs again (discovery does its own dump). Changes to routes of ours (protocol
//! [`PROTOCOL_ENCLAVE`]) are left out: the route manager's own work is no news.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use neli::consts::socket::{Msg, NlFamily};
use neli::socket::NlSocket;
use neli::utils::Groups;

use crate::plan::PROTOCOL_ENCLAVE;
use crate::{Error, Result};

/// The size of a netlink message header (`struct nlmsghdr`).
const NLMSG_HDRLEN: usize = 16;
/// Where `rtm_protocol` lies in a route message (`struct rtmsg`), after the header.
const RTM_PROTOCOL_AT: usize = NLMSG_HDRLEN + 5;
/// The receive buffer asked for: a burst of changes (an interface going down takes its
/// addresses and routes with it) should not overflow it; when one does, [`Monitor::drain`]
/// says so as a change anyway.
const RECEIVE_BUFFER: usize = 1 << 20;

/// What one [`Monitor::drain`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// A link, an IPv4 address or a foreign IPv4 route was added, changed or removed, or the
    /// kernel dropped notifications (the socket overflowed): look again.
    pub changed: bool,
}

/// A subscription to the kernel's notifications of link, IPv4 address and IPv4 route changes
/// in the calling thread's network namespace.
pub struct Monitor {
    socket: NlSocket,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("fd", &self.socket.as_raw_fd())
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// Opens the subscription (non-blocking).
    pub fn open() -> Result<Self> {
        let fail = |what: &'static str| move |source: io::Error| Error::Socket { what, source };
        let groups = Groups::new_groups(&[
            libc::RTNLGRP_LINK,
            libc::RTNLGRP_IPV4_IFADDR,
            libc::RTNLGRP_IPV4_ROUTE,
        ]);
        let socket = NlSocket::connect(NlFamily::Route, None, groups)
            .map_err(fail("subscribe to rtnetlink notifications"))?;
        socket
            .nonblock()
            .map_err(fail("make the rtnetlink subscription non-blocking"))?;
        // Best effort: a smaller buffer only makes an overflow (a "look again") likelier.
        let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
        Ok(Monitor {
            socket,
            buffer: vec![0; 64 * 1024],
        })
    }

    /// Reads every notification waiting, without blocking, and says whether any is news.
    /// An error other than "nothing more to read" or an overflow is returned.
    pub fn drain(&mut self) -> io::Result<Changes> {
        let mut changes = Changes::default();
        loop {
            match self.socket.recv(&mut self.buffer[..], Msg::empty()) {
                Ok((0, _)) => return Ok(changes),
                Ok((len, _)) => changes.changed |= is_news(&self.buffer[..len]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(changes),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The kernel dropped notifications: whatever they said, look again.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => changes.changed = true,
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsRawFd for Monitor {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// Whether a datagram of notifications holds one that is news: any link or address message,
/// and route messages of routes that are not ours. A truncated or malformed message counts as
/// news (looking again costs little; missing a change costs a subnet).
fn is_news(mut datagram: &[u8]) -> bool {
    let mut news = false;
    while datagram.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([datagram[0], datagram[1], datagram[2], datagram[3]]) as usize;
        let kind = u16::from_ne_bytes([datagram[4], datagram[5]]);
        if len < NLMSG_HDRLEN || len > datagram.len() {
            return true;
        }
        let message = &datagram[..len];
        news |= match kind {
            libc::RTM_NEWROUTE | libc::RTM_DELROUTE => message
                .get(RTM_PROTOCOL_AT)
                .is_none_or(|protocol| *protocol != PROTOCOL_ENCLAVE),
            libc::RTM_NEWLINK | libc::RTM_DELLINK | libc::RTM_NEWADDR | libc::RTM_DELADDR => true,
            _ => false,
        };
        // Messages are aligned to 4 bytes.
        let next = (len + 3) & !3;
        datagram = datagram.get(next..).unwrap_or_default();
    }
    news
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&[0; 10]);
        out.extend_from_slice(payload);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    fn route(protocol: u8) -> Vec<u8> {
        // family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32)
        message(
            libc::RTM_NEWROUTE,
            &[2, 24, 0, 0, 254, protocol, 0, 1, 0, 0, 0, 0],
        )
    }

    #[test]
    fn our_own_routes_are_no_news_and_everything_else_is() {
        assert!(!is_news(&route(PROTOCOL_ENCLAVE)));
        assert!(is_news(&route(libc::RTPROT_KERNEL)));
        assert!(is_news(&message(libc::RTM_DELLINK, &[0; 16])));
        assert!(is_news(&message(libc::RTM_NEWADDR, &[0; 8])));
        // Ours, then a foreign one in the same datagram.
        let both = [route(PROTOCOL_ENCLAVE), route(libc::RTPROT_BOOT)].concat();
        assert!(is_news(&both));
        // Something else altogether (a done message) is not.
        assert!(!is_news(&message(libc::NLMSG_DONE as u16, &[0; 4])));
    }

    #[test]
    fn a_malformed_datagram_counts_as_news() {
        let mut short = route(libc::RTPROT_KERNEL);
        short[0] = 200; // claims more than there is
        assert!(is_news(&short));
        let mut tiny = route(PROTOCOL_ENCLAVE);
        tiny[0] = 4; // shorter than a header
        assert!(is_news(&tiny));
        // A route message cut before its protocol byte.
        assert!(is_news(&message(libc::RTM_DELROUTE, &[2, 24])));
    }
}
