//! A netlink socket to nftables: sends one batch in one `sendmsg` and collects the kernel's
//! answer to every message; dumps what a table holds.
//!
//! This is the crate's only netlink I/O, written against `libc` on purpose, without `mnl`:
//! libnftnl (through `nftnl`) only builds and parses messages, and what is left is small (a
//! socket, one `sendmsg`, `recv`, splitting replies) but needs what `mnl` 0.3 does not give:
//! all pages of a batch in one `sendmsg` (its `send_all` sends page by page, and a batch is one
//! transaction only when the kernel gets it whole), the kernel's extended-ack text with the
//! sequence number of the refused message (to name the rule in the error), and a receive
//! timeout so that a missing answer is an error rather than a hang. Splitting and reading
//! replies is sans-IO and unit-tested below; it never trusts a length the kernel sends.
//! (`mnl` 0.2, which the crate once listed without using, carried RUSTSEC-2025-0142.)

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::{Error, Result};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

/// One answer of the kernel to a message of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ack {
    pub seq: u32,
    /// 0 for success, else a positive errno.
    pub errno: i32,
    /// The kernel's extended-ack text, if any.
    pub message: Option<String>,
}

/// One message of a reply: its type and bytes.
#[derive(Debug)]
pub(crate) struct Reply<'a> {
    pub kind: u16,
    /// The whole message, header included.
    pub bytes: &'a [u8],
}

/// Splits a buffer received from netlink into messages (sans-IO).
pub(crate) fn split_messages(mut buf: &[u8]) -> Result<Vec<Reply<'_>>> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap_or_default()) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(Error::MalformedReply(
                "a message length runs past the buffer",
            ));
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        out.push(Reply {
            kind,
            bytes: &buf[..len],
        });
        let aligned = (len + 3) & !3;
        buf = &buf[aligned.min(buf.len())..];
    }
    Ok(out)
}

/// Reads an `NLMSG_ERROR` message: the errno and the extended-ack text (sans-IO).
pub(crate) fn parse_ack(reply: &Reply<'_>) -> Result<Ack> {
    let b = reply.bytes;
    if b.len() < NLMSG_HDRLEN + 4 + NLMSG_HDRLEN {
        return Err(Error::MalformedReply("an error message is too short"));
    }
    let flags = u16::from_ne_bytes([b[6], b[7]]);
    let error = i32::from_ne_bytes(b[16..20].try_into().unwrap_or_default());
    // The embedded header of the message this answers carries its sequence number.
    let seq = u32::from_ne_bytes(b[28..32].try_into().unwrap_or_default());
    let mut message = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        // Without NETLINK_CAP_ACK an error echoes the whole request; acks only its header.
        let echoed = if error != 0 {
            u32::from_ne_bytes(b[20..24].try_into().unwrap_or_default()) as usize
        } else {
            NLMSG_HDRLEN
        };
        let mut tlvs = b.get(20 + ((echoed + 3) & !3)..).unwrap_or_default();
        while tlvs.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([tlvs[0], tlvs[1]]));
            let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
            if len < 4 || len > tlvs.len() {
                break;
            }
            if kind == NLMSGERR_ATTR_MSG {
                let text = tlvs[4..len].split(|c| *c == 0).next().unwrap_or_default();
                message = Some(String::from_utf8_lossy(text).into_owned());
            }
            tlvs = &tlvs[((len + 3) & !3).min(tlvs.len())..];
        }
    }
    Ok(Ack {
        seq,
        errno: -error,
        message,
    })
}

/// A `NETLINK_NETFILTER` socket in the current network namespace.
pub(crate) struct Socket {
    fd: OwnedFd,
}

impl Socket {
    pub(crate) fn open() -> Result<Socket> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(Error::NetlinkSocket(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a zeroed sockaddr_nl is valid; bind lets the kernel choose the port id.
        let rc = unsafe {
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(Error::NetlinkSocket(io::Error::last_os_error()));
        }
        let socket = Socket { fd };
        // Extended acks give the kernel's own words for a rejection; older kernels lack them.
        let _ = socket.set_int(libc::SOL_NETLINK, NETLINK_EXT_ACK, 1);
        let _ = socket.set_int(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 4 << 20);
        // Never wait forever for an answer the kernel does not send.
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: `timeout` outlives the call and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                socket.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &timeout as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        if rc < 0 {
            return Err(Error::NetlinkSocket(io::Error::last_os_error()));
        }
        Ok(socket)
    }

    fn set_int(&self, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: `value` outlives the call and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                &value as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends all the pages of one batch in a single `sendmsg`, so that the kernel sees the whole
    /// batch at once.
    pub(crate) fn send_batch(&self, pages: &[&[u8]]) -> Result<()> {
        let bytes: usize = pages.iter().map(|p| p.len()).sum();
        let sndbuf = libc::c_int::try_from(bytes + (64 << 10)).unwrap_or(libc::c_int::MAX);
        if self
            .set_int(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, sndbuf)
            .is_err()
        {
            let _ = self.set_int(libc::SOL_SOCKET, libc::SO_SNDBUF, sndbuf);
        }
        let mut iov: Vec<libc::iovec> = pages
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        // SAFETY: zeroed sockaddr_nl and msghdr are valid; the iovecs point into `pages`, which
        // outlive the call.
        let sent = unsafe {
            let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
            kernel.nl_family = libc::AF_NETLINK as u16;
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = &mut kernel as *mut libc::sockaddr_nl as *mut libc::c_void;
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as u32;
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = iov.len();
            libc::sendmsg(self.fd.as_raw_fd(), &msg, 0)
        };
        if sent < 0 {
            return Err(Error::NetlinkSend {
                bytes,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Receives one datagram; `None` when `nonblocking` and nothing is queued.
    pub(crate) fn recv(&self, buf: &mut Vec<u8>, nonblocking: bool) -> Result<Option<usize>> {
        buf.resize(1 << 20, 0);
        let flags = if nonblocking { libc::MSG_DONTWAIT } else { 0 };
        loop {
            // SAFETY: the buffer is valid for `buf.len()` bytes.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    flags,
                )
            };
            if n >= 0 {
                return Ok(Some(n as usize));
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock if nonblocking => return Ok(None),
                _ => return Err(Error::NetlinkReceive(err)),
            }
        }
    }

    /// Waits for the answers to the messages numbered `first..=last`. Returns every answer; when
    /// the kernel rejects one, the rest of the queued answers are read too.
    pub(crate) fn collect_acks(&self, first: u32, last: u32) -> Result<Vec<Ack>> {
        let mut acks = Vec::new();
        let mut pending: std::collections::BTreeSet<u32> = (first..=last).collect();
        let mut buf = Vec::new();
        let mut failed = false;
        while !pending.is_empty() {
            let Some(n) = self.recv(&mut buf, failed)? else {
                break;
            };
            for reply in split_messages(&buf[..n])? {
                if reply.kind != NLMSG_ERROR {
                    continue;
                }
                let ack = parse_ack(&reply)?;
                pending.remove(&ack.seq);
                failed |= ack.errno != 0;
                acks.push(ack);
            }
        }
        Ok(acks)
    }

    /// Sends one dump request and returns every message of the answer until `NLMSG_DONE`.
    pub(crate) fn dump(&self, request: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.send_batch(&[request])?;
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let Some(n) = self.recv(&mut buf, false)? else {
                continue;
            };
            for reply in split_messages(&buf[..n])? {
                match reply.kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let ack = parse_ack(&reply)?;
                        if ack.errno != 0 {
                            return Err(Error::NetlinkReceive(io::Error::from_raw_os_error(
                                ack.errno,
                            )));
                        }
                    }
                    _ => out.push(reply.bytes.to_vec()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u32, kind: u16, flags: u16, seq: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&len.to_ne_bytes());
        h.extend_from_slice(&kind.to_ne_bytes());
        h.extend_from_slice(&flags.to_ne_bytes());
        h.extend_from_slice(&seq.to_ne_bytes());
        h.extend_from_slice(&0u32.to_ne_bytes());
        h
    }

    #[test]
    fn reads_an_error_with_its_extended_ack_text() {
        // The echoed request: a bare header (seq 7) plus 4 bytes of payload.
        let mut echoed = header(20, 0x0a06, 0, 7);
        echoed.extend_from_slice(&[0, 0, 0, 0]);
        let text = b"Device or resource busy\0";
        let mut tlv = Vec::new();
        let tlv_len = (4 + text.len()) as u16;
        tlv.extend_from_slice(&tlv_len.to_ne_bytes());
        tlv.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        tlv.extend_from_slice(text);
        while tlv.len() % 4 != 0 {
            tlv.push(0);
        }
        let mut body = (-16i32).to_ne_bytes().to_vec();
        body.extend_from_slice(&echoed);
        body.extend_from_slice(&tlv);
        let mut msg = header((16 + body.len()) as u32, NLMSG_ERROR, NLM_F_ACK_TLVS, 99);
        msg.extend_from_slice(&body);
        // A second message: a plain ack of seq 8.
        let mut ack = header(36, NLMSG_ERROR, 0, 99);
        ack.extend_from_slice(&0i32.to_ne_bytes());
        ack.extend_from_slice(&header(16, 0x0a06, 0, 8));
        msg.extend_from_slice(&ack);

        let replies = split_messages(&msg).unwrap();
        assert_eq!(replies.len(), 2);
        let first = parse_ack(&replies[0]).unwrap();
        assert_eq!(
            first,
            Ack {
                seq: 7,
                errno: 16,
                message: Some("Device or resource busy".into())
            }
        );
        let second = parse_ack(&replies[1]).unwrap();
        assert_eq!((second.seq, second.errno, second.message), (8, 0, None));
    }

    #[test]
    fn refuses_a_message_longer_than_the_buffer() {
        let msg = header(400, NLMSG_ERROR, 0, 1);
        assert!(split_messages(&msg).is_err());
    }
}
