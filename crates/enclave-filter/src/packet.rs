//! Just enough IPv4 parsing for the filter: addresses, the transport protocol, TCP/UDP ports,
//! TCP flags, the ICMP echo identifier, and the flow an ICMP error message refers to.
//!
//! Every function here takes untrusted bytes: it checks each length before it reads and never
//! panics. Nothing is allocated.

use std::net::Ipv4Addr;

use crate::DropReason;

/// IANA protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IANA protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IANA protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// ICMP echo reply (RFC 792).
const ICMP_ECHO_REPLY: u8 = 0;
/// ICMP destination unreachable (RFC 792).
const ICMP_DEST_UNREACHABLE: u8 = 3;
/// ICMP echo request (RFC 792).
const ICMP_ECHO_REQUEST: u8 = 8;
/// ICMP time exceeded (RFC 792).
const ICMP_TIME_EXCEEDED: u8 = 11;
/// ICMP parameter problem (RFC 792).
const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// TCP flag FIN.
pub const TCP_FIN: u8 = 0x01;
/// TCP flag SYN.
pub const TCP_SYN: u8 = 0x02;
/// TCP flag RST.
pub const TCP_RST: u8 = 0x04;
/// TCP flag ACK.
pub const TCP_ACK: u8 = 0x10;

/// The transport-level facts of a packet that the filter decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A TCP segment.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// The flags byte (FIN, SYN, RST, PSH, ACK, ...).
        flags: u8,
    },
    /// A UDP datagram.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// An ICMP echo request or reply.
    IcmpEcho {
        /// `true` for a request (type 8), `false` for a reply (type 0).
        request: bool,
        /// The echo identifier, which plays the part of a port.
        id: u16,
    },
    /// An ICMP error (unreachable, time exceeded, parameter problem) quoting the packet that
    /// caused it.
    IcmpError {
        /// The quoted packet, as it was sent (from the receiver of this error).
        quoted: Flow,
    },
    /// Any other ICMP message.
    IcmpOther {
        /// The ICMP type.
        icmp_type: u8,
    },
    /// A non-first fragment, or a protocol without ports: only the protocol is known.
    Opaque {
        /// The IP protocol number.
        protocol: u8,
    },
}

/// The 5-tuple of a flow as seen in one packet. For ICMP echo both ports are the echo
/// identifier; for protocols without ports both are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    /// The IP protocol number.
    pub protocol: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port (or ICMP echo identifier).
    pub src_port: u16,
    /// Destination port (or ICMP echo identifier).
    pub dst_port: u16,
}

impl Flow {
    /// The same flow seen from the other end.
    pub fn reversed(&self) -> Flow {
        Flow {
            protocol: self.protocol,
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }
}

/// A parsed IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// What the packet carries.
    pub transport: Transport,
}

impl Packet {
    /// The IP protocol number.
    pub fn protocol(&self) -> u8 {
        match self.transport {
            Transport::Tcp { .. } => IPPROTO_TCP,
            Transport::Udp { .. } => IPPROTO_UDP,
            Transport::IcmpEcho { .. }
            | Transport::IcmpError { .. }
            | Transport::IcmpOther { .. } => IPPROTO_ICMP,
            Transport::Opaque { protocol } => protocol,
        }
    }

    /// The destination port, for TCP and UDP.
    pub fn dst_port(&self) -> Option<u16> {
        match self.transport {
            Transport::Tcp { dst_port, .. } | Transport::Udp { dst_port, .. } => Some(dst_port),
            _ => None,
        }
    }

    /// The flow this packet belongs to.
    pub fn flow(&self) -> Flow {
        let (src_port, dst_port) = match self.transport {
            Transport::Tcp {
                src_port, dst_port, ..
            }
            | Transport::Udp { src_port, dst_port } => (src_port, dst_port),
            Transport::IcmpEcho { id, .. } => (id, id),
            _ => (0, 0),
        };
        Flow {
            protocol: self.protocol(),
            src: self.src,
            dst: self.dst,
            src_port,
            dst_port,
        }
    }
}

/// Fixed part of an IPv4 header and the offset of its payload.
struct Header {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    first_fragment: bool,
    payload_start: usize,
    payload_end: usize,
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn addr(bytes: &[u8], at: usize) -> Option<Ipv4Addr> {
    let b = bytes.get(at..at + 4)?;
    Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

/// Parses an IPv4 header. With `quoted` the total length may exceed the bytes present (an
/// ICMP error quotes only the start of the offending packet).
fn header(bytes: &[u8], quoted: bool) -> Result<Header, DropReason> {
    let first = *bytes.first().ok_or(DropReason::Malformed)?;
    if first >> 4 != 4 {
        return Err(DropReason::NotIpv4);
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < 20 || bytes.len() < header_len {
        return Err(DropReason::Malformed);
    }
    let total_len = usize::from(be16(bytes, 2).ok_or(DropReason::Malformed)?);
    if total_len < header_len || (!quoted && total_len > bytes.len()) {
        return Err(DropReason::Malformed);
    }
    let fragment_offset = be16(bytes, 6).ok_or(DropReason::Malformed)? & 0x1fff;
    Ok(Header {
        src: addr(bytes, 12).ok_or(DropReason::Malformed)?,
        dst: addr(bytes, 16).ok_or(DropReason::Malformed)?,
        protocol: bytes[9],
        first_fragment: fragment_offset == 0,
        payload_start: header_len,
        payload_end: total_len.min(bytes.len()),
    })
}

/// Parses an IPv4 packet for the filter. IPv6 and other versions give
/// [`DropReason::NotIpv4`]; truncated or inconsistent headers give [`DropReason::Malformed`].
pub fn parse(bytes: &[u8]) -> Result<Packet, DropReason> {
    let h = header(bytes, false)?;
    let payload = &bytes[h.payload_start..h.payload_end];
    let transport = if !h.first_fragment {
        Transport::Opaque {
            protocol: h.protocol,
        }
    } else {
        match h.protocol {
            IPPROTO_TCP => {
                let flags = *payload.get(13).ok_or(DropReason::Malformed)?;
                Transport::Tcp {
                    src_port: be16(payload, 0).ok_or(DropReason::Malformed)?,
                    dst_port: be16(payload, 2).ok_or(DropReason::Malformed)?,
                    flags,
                }
            }
            IPPROTO_UDP => {
                if payload.len() < 8 {
                    return Err(DropReason::Malformed);
                }
                Transport::Udp {
                    src_port: be16(payload, 0).ok_or(DropReason::Malformed)?,
                    dst_port: be16(payload, 2).ok_or(DropReason::Malformed)?,
                }
            }
            IPPROTO_ICMP => icmp(payload)?,
            protocol => Transport::Opaque { protocol },
        }
    };
    Ok(Packet {
        src: h.src,
        dst: h.dst,
        transport,
    })
}

fn icmp(payload: &[u8]) -> Result<Transport, DropReason> {
    if payload.len() < 8 {
        return Err(DropReason::Malformed);
    }
    let icmp_type = payload[0];
    Ok(match icmp_type {
        ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY => Transport::IcmpEcho {
            request: icmp_type == ICMP_ECHO_REQUEST,
            id: be16(payload, 4).ok_or(DropReason::Malformed)?,
        },
        ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM => {
            Transport::IcmpError {
                quoted: quoted_flow(&payload[8..])?,
            }
        }
        icmp_type => Transport::IcmpOther { icmp_type },
    })
}

/// The flow of the packet quoted in an ICMP error: its IP header and at least 8 bytes of it.
fn quoted_flow(bytes: &[u8]) -> Result<Flow, DropReason> {
    let h = header(bytes, true)?;
    if !h.first_fragment {
        return Err(DropReason::Malformed);
    }
    let payload = &bytes[h.payload_start..h.payload_end];
    let (src_port, dst_port) = match h.protocol {
        IPPROTO_TCP | IPPROTO_UDP => (
            be16(payload, 0).ok_or(DropReason::Malformed)?,
            be16(payload, 2).ok_or(DropReason::Malformed)?,
        ),
        IPPROTO_ICMP => {
            let icmp_type = *payload.first().ok_or(DropReason::Malformed)?;
            if icmp_type != ICMP_ECHO_REQUEST && icmp_type != ICMP_ECHO_REPLY {
                return Err(DropReason::Malformed);
            }
            let id = be16(payload, 4).ok_or(DropReason::Malformed)?;
            (id, id)
        }
        _ => (0, 0),
    };
    Ok(Flow {
        protocol: h.protocol,
        src: h.src,
        dst: h.dst,
        src_port,
        dst_port,
    })
}

pub mod build {
    //! Builders of minimal well-formed IPv4 packets (no options, no payload, checksums left at
    //! zero, which the filter does not read), for tests and examples: to see what the filter
    //! decides without a TUN device.
    use super::*;

    fn ipv4(protocol: u8, src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let total = 20 + payload.len();
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes());
        p[8] = 64;
        p[9] = protocol;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        p.extend_from_slice(payload);
        p
    }

    /// A TCP segment from `src:sp` to `dst:dp` with these flags ([`TCP_SYN`], [`TCP_ACK`], ...).
    ///
    /// [`TCP_SYN`]: crate::TCP_SYN
    /// [`TCP_ACK`]: crate::TCP_ACK
    pub fn tcp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, flags: u8) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&sp.to_be_bytes());
        t[2..4].copy_from_slice(&dp.to_be_bytes());
        t[12] = 0x50;
        t[13] = flags;
        ipv4(IPPROTO_TCP, src, dst, &t)
    }

    /// A UDP datagram from `src:sp` to `dst:dp`.
    pub fn udp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16) -> Vec<u8> {
        let mut u = vec![0u8; 12];
        u[0..2].copy_from_slice(&sp.to_be_bytes());
        u[2..4].copy_from_slice(&dp.to_be_bytes());
        u[4..6].copy_from_slice(&12u16.to_be_bytes());
        ipv4(IPPROTO_UDP, src, dst, &u)
    }

    /// An ICMP echo request (`request`) or echo reply with identifier `id`.
    pub fn echo(src: Ipv4Addr, dst: Ipv4Addr, request: bool, id: u16) -> Vec<u8> {
        let mut i = vec![0u8; 16];
        i[0] = if request { 8 } else { 0 };
        i[4..6].copy_from_slice(&id.to_be_bytes());
        ipv4(IPPROTO_ICMP, src, dst, &i)
    }

    /// An ICMP error from `from` to `to` quoting `offending` (a packet `to` sent).
    pub fn icmp_error(from: Ipv4Addr, to: Ipv4Addr, icmp_type: u8, offending: &[u8]) -> Vec<u8> {
        let mut i = vec![0u8; 8];
        i[0] = icmp_type;
        let quoted_len = offending.len().min(28);
        i.extend_from_slice(&offending[..quoted_len]);
        ipv4(IPPROTO_ICMP, from, to, &i)
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 9);

    #[test]
    fn parses_tcp_udp_and_echo() {
        let p = parse(&tcp(A, 1000, B, 443, TCP_SYN)).unwrap();
        assert_eq!(
            p.transport,
            Transport::Tcp {
                src_port: 1000,
                dst_port: 443,
                flags: TCP_SYN
            }
        );
        assert_eq!((p.src, p.dst), (A, B));
        let p = parse(&udp(A, 5353, B, 53)).unwrap();
        assert_eq!(p.dst_port(), Some(53));
        let p = parse(&echo(A, B, true, 77)).unwrap();
        assert_eq!(
            p.transport,
            Transport::IcmpEcho {
                request: true,
                id: 77
            }
        );
        assert_eq!(p.flow().src_port, 77);
    }

    #[test]
    fn parses_the_flow_quoted_by_an_icmp_error() {
        let offending = udp(A, 4000, B, 53);
        let p = parse(&icmp_error(B, A, 3, &offending)).unwrap();
        assert_eq!(
            p.transport,
            Transport::IcmpError {
                quoted: Flow {
                    protocol: IPPROTO_UDP,
                    src: A,
                    dst: B,
                    src_port: 4000,
                    dst_port: 53
                }
            }
        );
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(parse(&[]), Err(DropReason::Malformed));
        assert_eq!(parse(&[0x60; 40]), Err(DropReason::NotIpv4));
        let mut short = tcp(A, 1, B, 2, 0);
        short.truncate(30);
        assert_eq!(parse(&short), Err(DropReason::Malformed));
        let mut bad_ihl = udp(A, 1, B, 2);
        bad_ihl[0] = 0x44;
        assert_eq!(parse(&bad_ihl), Err(DropReason::Malformed));
        let mut long_total = udp(A, 1, B, 2);
        long_total[2..4].copy_from_slice(&500u16.to_be_bytes());
        assert_eq!(parse(&long_total), Err(DropReason::Malformed));
    }

    #[test]
    fn a_later_fragment_is_opaque() {
        let mut frag = udp(A, 1, B, 2);
        frag[6..8].copy_from_slice(&100u16.to_be_bytes());
        let p = parse(&frag).unwrap();
        assert_eq!(
            p.transport,
            Transport::Opaque {
                protocol: IPPROTO_UDP
            }
        );
    }
}
