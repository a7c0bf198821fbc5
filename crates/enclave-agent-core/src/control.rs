//! The control protocol between senders and gateways, carried in UDP datagrams over the
//! authenticated tunnel (from one agent's overlay address to the other's, port
//! [`CONTROL_PORT`]). Because they travel inside WireGuard, a message's overlay source address
//! proves which system sent it (cryptokey routing).
//!
//! A sender probes every candidate gateway; each gateway answers a probe with an acknowledgement
//! that carries the subnets it serves right now. Liveness and advertisement are the same
//! exchange, so a gateway that stops answering, or stops listing a subnet, is noticed by the
//! same timer. The format is documented in `docs/control-protocol.md`.
//!
//! ```text
//! 0      4        5      6         8                 16
//! +------+--------+------+---------+-----------------+
//! | ENCL | ver=1  | type | 0x0000  | id (u64, BE)    |  header, 16 bytes
//! +------+--------+------+---------+-----------------+
//! type 1 Probe:  nothing more
//! type 2 Ack:    count (u16, BE), then count × (IPv4 address, 4 bytes; prefix length, 1 byte)
//! ```

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The UDP port agents listen on for control messages, on their overlay address.
pub const CONTROL_PORT: u16 = 51821;

const MAGIC: &[u8; 4] = b"ENCL";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 16;
/// The most subnets one acknowledgement carries (keeps a datagram well under 1280 bytes).
pub const MAX_SUBNETS: usize = 200;

/// One control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// "Are you there?" from a sender to a gateway.
    Probe {
        /// Echoed in the acknowledgement.
        id: u64,
    },
    /// "Yes, and these are the subnets I serve now", from a gateway to a sender.
    Ack {
        /// The probe's id.
        id: u64,
        /// The subnets the gateway serves at this moment.
        subnets: Vec<Ipv4Net>,
    },
}

/// Why a datagram is not a control message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the header, or than its own counts say.
    #[error("control message truncated")]
    Truncated,
    /// Not our magic bytes.
    #[error("not a control message")]
    NotControl,
    /// A version we don't speak.
    #[error("control message version {0} is not supported")]
    Version(u8),
    /// A type we don't know.
    #[error("unknown control message type {0}")]
    UnknownType(u8),
    /// A subnet with a prefix longer than 32, or too many subnets.
    #[error("control message carries an invalid subnet list")]
    BadSubnets,
}

impl Message {
    /// Encodes the message. Subnets beyond [`MAX_SUBNETS`] are not sent.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, id) = match self {
            Message::Probe { id } => (1u8, *id),
            Message::Ack { id, .. } => (2u8, *id),
        };
        let mut out = Vec::with_capacity(HEADER_LEN + 2 + 5 * 8);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(kind);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&id.to_be_bytes());
        if let Message::Ack { subnets, .. } = self {
            let sent = &subnets[..subnets.len().min(MAX_SUBNETS)];
            out.extend_from_slice(&(sent.len() as u16).to_be_bytes());
            for net in sent {
                out.extend_from_slice(&net.addr().octets());
                out.push(net.prefix_len());
            }
        }
        out
    }

    /// Decodes a datagram; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(if bytes.starts_with(MAGIC) || MAGIC.starts_with(bytes) {
                DecodeError::Truncated
            } else {
                DecodeError::NotControl
            });
        }
        if &bytes[..4] != MAGIC {
            return Err(DecodeError::NotControl);
        }
        if bytes[4] != VERSION {
            return Err(DecodeError::Version(bytes[4]));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[8..16]);
        let id = u64::from_be_bytes(id);
        let body = &bytes[HEADER_LEN..];
        match bytes[5] {
            1 => Ok(Message::Probe { id }),
            2 => {
                let [hi, lo, rest @ ..] = body else {
                    return Err(DecodeError::Truncated);
                };
                let count = usize::from(u16::from_be_bytes([*hi, *lo]));
                if count > MAX_SUBNETS {
                    return Err(DecodeError::BadSubnets);
                }
                if rest.len() < count * 5 {
                    return Err(DecodeError::Truncated);
                }
                let subnets = rest[..count * 5]
                    .chunks_exact(5)
                    .map(|c| {
                        let addr = Ipv4Addr::new(c[0], c[1], c[2], c[3]);
                        Ipv4Net::new(addr, c[4])
                            .map(|net| net.trunc())
                            .map_err(|_| DecodeError::BadSubnets)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Message::Ack { id, subnets })
            }
            other => Err(DecodeError::UnknownType(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ack_round_trips() {
        let msg = Message::Ack {
            id: 7,
            subnets: vec![
                "192.168.77.0/24".parse().unwrap(),
                "0.0.0.0/0".parse().unwrap(),
            ],
        };
        let bytes = msg.encode();
        assert_eq!(&bytes[..6], b"ENCL\x01\x02");
        assert_eq!(bytes.len(), 16 + 2 + 10);
        assert_eq!(Message::decode(&bytes), Ok(msg));
    }

    #[test]
    fn rejects_what_is_not_ours() {
        assert_eq!(
            Message::decode(b"hello world, not us"),
            Err(DecodeError::NotControl)
        );
        assert_eq!(Message::decode(b"ENCL\x01"), Err(DecodeError::Truncated));
        let mut probe = Message::Probe { id: 1 }.encode();
        probe[4] = 9;
        assert_eq!(Message::decode(&probe), Err(DecodeError::Version(9)));
        probe[4] = 1;
        probe[5] = 3;
        assert_eq!(Message::decode(&probe), Err(DecodeError::UnknownType(3)));
        let mut ack = Message::Ack {
            id: 1,
            subnets: vec!["10.0.0.0/8".parse().unwrap()],
        }
        .encode();
        *ack.last_mut().unwrap() = 33;
        assert_eq!(Message::decode(&ack), Err(DecodeError::BadSubnets));
        ack.pop();
        assert_eq!(Message::decode(&ack), Err(DecodeError::Truncated));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn acks_round_trip(id in any::<u64>(), nets in proptest::collection::vec((any::<u32>(), 0u8..=32), 0..20)) {
            let subnets: Vec<Ipv4Net> = nets
                .into_iter()
                .map(|(a, p)| Ipv4Net::new(Ipv4Addr::from(a), p).unwrap().trunc())
                .collect();
            let msg = Message::Ack { id, subnets };
            prop_assert_eq!(Message::decode(&msg.encode()), Ok(msg));
        }
    }
}
