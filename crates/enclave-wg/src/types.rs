//! The values that cross the boundary between the protocol core and its I/O shell.

use std::fmt;
use std::net::SocketAddr;
use std::time::SystemTime;

use ipnet::IpNet;

use crate::keys::{PresharedKey, PublicKey};

/// How one peer is configured (what `wg set` / UAPI `set=1` can say about it).
///
/// `Debug` redacts the preshared key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's static public key; it names the peer.
    pub public_key: PublicKey,
    /// The optional preshared key mixed into the handshake (`Q` in the paper, section 5.4.3).
    pub preshared_key: Option<PresharedKey>,
    /// Where to send to until an authenticated packet arrives from somewhere else. On
    /// reconfiguration ([`crate::Device::upsert_peer`]) a learnt endpoint is kept unless
    /// this is `Some` and differs from the endpoint configured before.
    pub endpoint: Option<SocketAddr>,
    /// The peer's allowed IPs: routes to it and the sources it may use.
    pub allowed_ips: Vec<IpNet>,
    /// Send a keepalive every this many seconds of silence (`None` or `Some(0)`: never).
    pub persistent_keepalive: Option<u16>,
}

impl fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConfig")
            .field("public_key", &self.public_key)
            .field(
                "preshared_key",
                &self.preshared_key.as_ref().map(|_| "<redacted>"),
            )
            .field("endpoint", &self.endpoint)
            .field("allowed_ips", &self.allowed_ips)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .finish()
    }
}

/// What the device knows about one peer (what UAPI `get=1` reports).
///
/// `Debug` redacts the preshared key.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's static public key.
    pub public_key: PublicKey,
    /// The configured preshared key.
    pub preshared_key: Option<PresharedKey>,
    /// The current endpoint (configured, or learnt from the latest authenticated packet).
    pub endpoint: Option<SocketAddr>,
    /// The latest underlay address that has shown a return path, which a one-way
    /// forged packet cannot fake: as responder, the address our handshake response
    /// went to, once the initiator's first valid transport message confirms the
    /// session; as initiator, the address our initiation went to, once its valid
    /// response completes the handshake. Roaming moves `endpoint`, not this; judge
    /// trust (public-IP requirements) on this one. `None` until a handshake proves one.
    pub proven_endpoint: Option<SocketAddr>,
    /// The peer's allowed IPs, in the order they were configured.
    pub allowed_ips: Vec<IpNet>,
    /// The persistent keepalive interval in seconds.
    pub persistent_keepalive: Option<u16>,
    /// Wall-clock time of the latest completed handshake.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received from the peer (whole UDP payloads that authenticated).
    pub rx_bytes: u64,
    /// Bytes sent to the peer (whole UDP payloads).
    pub tx_bytes: u64,
    /// Transport packets received (keepalives included).
    pub rx_packets: u64,
    /// Transport packets sent (keepalives included).
    pub tx_packets: u64,
    /// Datagrams that named one of this peer's sessions and were dropped (expired session,
    /// replay, failed decryption, inner source outside the allowed IPs…), indexed like
    /// [`DropReason::ALL`].
    pub drops: [u64; DropReason::ALL.len()],
}

impl fmt::Debug for PeerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerInfo")
            .field("public_key", &self.public_key)
            .field(
                "preshared_key",
                &self.preshared_key.as_ref().map(|_| "<redacted>"),
            )
            .field("endpoint", &self.endpoint)
            .field("proven_endpoint", &self.proven_endpoint)
            .field("allowed_ips", &self.allowed_ips)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .field("last_handshake", &self.last_handshake)
            .field("rx_bytes", &self.rx_bytes)
            .field("tx_bytes", &self.tx_bytes)
            .field("rx_packets", &self.rx_packets)
            .field("tx_packets", &self.tx_packets)
            .finish()
    }
}

/// The outcome of [`crate::Device::encapsulate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encapsulated {
    /// Send `out[..len]` to `dst` (a transport data message).
    Send {
        /// The peer the packet was routed to.
        peer: PublicKey,
        /// The peer's current endpoint.
        dst: SocketAddr,
        /// Length of the datagram written to the start of `out`.
        len: usize,
    },
    /// No usable session yet: the packet was queued and a handshake was
    /// started (or is running). The handshake initiation, and later the
    /// queued packet, come out of [`crate::Device::poll_transmit`].
    Queued {
        /// The peer the packet was routed to.
        peer: PublicKey,
    },
    /// The packet was dropped.
    Dropped(DropReason),
}

/// The outcome of [`crate::Device::decapsulate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decapsulated {
    /// Write `out[..len]` (an IP packet) to the TUN device; it came from `peer`.
    Deliver {
        /// The authenticated sender.
        peer: PublicKey,
        /// Length of the IP packet written to the start of `out`.
        len: usize,
    },
    /// The datagram was valid and consumed (a handshake message, a cookie
    /// reply or a keepalive); any reply comes out of
    /// [`crate::Device::poll_transmit`]. `peer` is known unless the datagram
    /// was a handshake initiation answered with a cookie reply.
    Consumed {
        /// The authenticated peer, when there is one.
        peer: Option<PublicKey>,
    },
    /// The datagram was dropped.
    Dropped(DropReason),
}

/// Why a packet was dropped. Stable names for counters come from
/// [`DropReason::as_str`]; `reason as usize` indexes [`DropReason::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Not a WireGuard message (wrong type, wrong size), or not an IP packet.
    Malformed,
    /// A handshake message whose mac1 is wrong (not meant for us).
    BadMac1,
    /// We are under load and the handshake message had no valid mac2; a
    /// cookie reply was queued instead.
    CookieRequired,
    /// A handshake message that failed to decrypt or authenticate (wrong
    /// keys, a preshared key mismatch, a small-order public key).
    HandshakeFailed,
    /// A handshake initiation whose timestamp is not newer than the latest
    /// one accepted from this peer (a replay), or which came too soon after it.
    StaleTimestamp,
    /// A response, cookie reply or transport message for a receiver index we
    /// do not know (or no longer know).
    UnknownSession,
    /// A transport message whose counter was already seen or is too old for the window.
    Replay,
    /// A transport message that failed authentication.
    DecryptFailed,
    /// The session is past REJECT_AFTER_TIME or REJECT_AFTER_MESSAGES.
    SessionExpired,
    /// The decrypted packet's source address is not in the peer's allowed IPs.
    SourceNotAllowed,
    /// No peer's allowed IPs contain the destination address.
    NoRoute,
    /// The peer has no endpoint to send to.
    NoEndpoint,
    /// The output buffer is too small for the result.
    BufferTooSmall,
    /// The peer's queue of packets waiting for a handshake is full.
    QueueFull,
    /// A handshake initiation from a static key that is not one of our peers.
    UnknownPeer,
    /// Under load, a handshake message from a source address that is over its
    /// rate ([`crate::ratelimit::HANDSHAKES_PER_SECOND`]): with a valid mac2, it
    /// was not processed; without, it got no cookie reply.
    RateLimited,
}

impl DropReason {
    /// Every reason, for counter tables.
    pub const ALL: [DropReason; 16] = [
        DropReason::Malformed,
        DropReason::BadMac1,
        DropReason::CookieRequired,
        DropReason::HandshakeFailed,
        DropReason::StaleTimestamp,
        DropReason::UnknownSession,
        DropReason::Replay,
        DropReason::DecryptFailed,
        DropReason::SessionExpired,
        DropReason::SourceNotAllowed,
        DropReason::NoRoute,
        DropReason::NoEndpoint,
        DropReason::BufferTooSmall,
        DropReason::QueueFull,
        DropReason::UnknownPeer,
        DropReason::RateLimited,
    ];

    /// A short snake_case name for counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadMac1 => "bad_mac1",
            DropReason::CookieRequired => "cookie_required",
            DropReason::HandshakeFailed => "handshake_failed",
            DropReason::StaleTimestamp => "stale_timestamp",
            DropReason::UnknownSession => "unknown_session",
            DropReason::Replay => "replay",
            DropReason::DecryptFailed => "decrypt_failed",
            DropReason::SessionExpired => "session_expired",
            DropReason::SourceNotAllowed => "source_not_allowed",
            DropReason::NoRoute => "no_route",
            DropReason::NoEndpoint => "no_endpoint",
            DropReason::BufferTooSmall => "buffer_too_small",
            DropReason::QueueFull => "queue_full",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::RateLimited => "rate_limited",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A datagram the shell must send (handshake messages, cookie replies,
/// keepalives, packets that waited for a handshake).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub dst: SocketAddr,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// Something the shell may want to know about (for logs, status, failover).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A handshake with `peer` completed: a new session is in use. As
    /// initiator this is when the response arrives; as responder, when the
    /// first transport message on the new session arrives (the paper's key
    /// confirmation, section 5.4.6).
    HandshakeCompleted {
        /// The peer.
        peer: PublicKey,
    },
    /// The handshake with `peer` was retried for REKEY_ATTEMPT_TIME without an
    /// answer; its queued packets were dropped.
    HandshakeTimedOut {
        /// The peer.
        peer: PublicKey,
    },
    /// The last session with `peer` passed REJECT_AFTER_TIME; nothing can be
    /// sent or received until a new handshake.
    SessionExpired {
        /// The peer.
        peer: PublicKey,
    },
    /// An authenticated packet from `peer` came from a new address.
    EndpointChanged {
        /// The peer.
        peer: PublicKey,
        /// The new endpoint.
        endpoint: SocketAddr,
    },
}

#[cfg(test)]
mod tests {
    use super::DropReason;

    #[test]
    fn discriminants_index_all() {
        for (position, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, position, "{reason}");
        }
        let mut names: Vec<_> = DropReason::ALL
            .iter()
            .map(|reason| reason.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }
}
