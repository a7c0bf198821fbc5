//! Sans-IO WireGuard protocol core.
//!
//! A [`Device`] holds one interface's static key and peers. It never opens a
//! socket or a TUN device, never reads a clock and never asks the operating
//! system for randomness: time (`Instant` for timers, `SystemTime` for the
//! TAI64N handshake timestamps) and a random number generator are passed in
//! by the I/O shell (`enclave-dataplane`). The API has the quinn shape:
//! [`Device::encapsulate`] / [`Device::decapsulate`] per packet,
//! [`Device::poll_transmit`], [`Device::poll_event`],
//! [`Device::poll_timeout`] and [`Device::handle_timeout`].
//!
//! What is inside, with the WireGuard paper's sections:
//! - the Noise_IKpsk2 handshake (5.4.2, 5.4.3) with TAI64N timestamps;
//!   replayed or older initiations are rejected (`handshake`);
//! - mac1, mac2 and XChaCha20-Poly1305 cookie replies under load (5.4.4,
//!   5.4.7; `cookie`);
//! - transport data with 64-bit counters, plaintext padded to 16 bytes (but
//!   not past the tunnel MTU given to [`Device::set_mtu`]), and
//!   a sliding replay window of 8128 counters as in RFC 6479, the size
//!   wireguard-go and Linux use (5.4.6; `session`);
//! - the timers of section 6 ([`timers`]): rekey after time and messages,
//!   reject after time and messages, handshake retransmission with jitter
//!   until REKEY_ATTEMPT_TIME, passive and persistent keepalives, key
//!   erasure after 3 × REJECT_AFTER_TIME; the previous session is kept for
//!   packets in flight;
//! - roaming (2.1): a peer's endpoint follows its latest authenticated packet;
//!   its *proven* endpoint ([`PeerInfo::proven_endpoint`]) only moves when a
//!   handshake shows a return path, and a roam to an unproven address starts
//!   a handshake towards it (at most one per REKEY_TIMEOUT); reconfiguring a
//!   peer keeps what it learnt (sessions, timestamps, endpoints, counters);
//! - cryptokey routing (2): longest-prefix match over all peers' allowed
//!   IPs outbound, and inbound packets whose inner source is not in the
//!   sender's allowed IPs are dropped.
//!
//! Secrets (static and ephemeral keys, Diffie-Hellman results, chaining
//! keys, preshared keys, transport keys, cookies) are zeroized when dropped.
//! The per-packet paths do not allocate: the caller passes the output
//! buffer, transport ciphers are set up once per session, and sealing and
//! opening happen in place. The one exception is a session's replay ring,
//! allocated once in the session's life, by the first packet that leaves a
//! hole behind it (a session whose packets arrive in order never needs it).
//!
//! # Driving a device
//!
//! - TUN → UDP: [`Device::encapsulate`] with an output buffer of at least
//!   [`encapsulated_len`] bytes; on [`Encapsulated::Send`] send `out[..len]`.
//! - UDP → TUN: [`Device::decapsulate`] with an output buffer at least as
//!   long as the datagram; on [`Decapsulated::Deliver`] write `out[..len]`
//!   (padding already stripped) to the TUN device.
//! - After every call, or every batch of calls, drain
//!   [`Device::poll_transmit`] (handshakes, cookie replies, keepalives,
//!   packets that waited for a handshake) and [`Device::poll_event`].
//! - Sleep until [`Device::poll_timeout`] and then call
//!   [`Device::handle_timeout`]; call it once after any configuration change
//!   as well, so that a new persistent keepalive goes out at once.
//! - [`Device::set_mtu`] with the TUN device's MTU.
//! - The device goes under load by itself (the paper's section 5.3) when
//!   more than [`ratelimit::UNDER_LOAD_HANDSHAKES`] handshake messages with a
//!   valid mac1 arrive within a second, and stays so for a second after:
//!   handshakes then need a cookie (mac2), and each source address gets at
//!   most [`ratelimit::HANDSHAKES_PER_SECOND`] of them processed (bursts of
//!   [`ratelimit::HANDSHAKE_BURST`]). [`Device::set_under_load`] forces it,
//!   e.g. when the shell's receive queue is deep. Transport data never goes
//!   through any of this.
//!
//! Interoperability with wireguard-go is pinned by known-answer vectors
//! captured from it (`tests/wireguard_go_vectors.rs`, re-captured by
//! `examples/capture-vectors.sh` in a private network namespace); the protocol's
//! behaviour is tested on a simulated network with a virtual clock
//! (`tests/protocol.rs`, `tests/sim`).

#![warn(missing_docs)]

mod allowed_ips;
mod cookie;
mod crypto;
mod device;
mod error;
mod handshake;
pub mod keys;
mod messages;
mod peer;
pub mod ratelimit;
mod session;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod timers;
mod types;

pub use device::Device;
pub use error::{Error, KeyEncodingError, Result};
pub use keys::{PresharedKey, PrivateKey, PublicKey};
/// The random number traits [`Device::new`] asks for, re-exported so that
/// callers use the same version.
pub use rand_core;
pub use types::{Decapsulated, DropReason, Encapsulated, Event, PeerConfig, PeerInfo, Transmit};

/// Bytes a transport data message adds to an IP packet before padding:
/// the 16-byte header (type, receiver index, counter) and the 16-byte tag.
pub const TRANSPORT_OVERHEAD: usize = 32;

/// The size of the transport data message that carries an IP packet of
/// `ip_len` bytes: the plaintext is padded to a multiple of 16 bytes
/// (paper, section 5.4.6).
pub const fn encapsulated_len(ip_len: usize) -> usize {
    ip_len.div_ceil(16) * 16 + TRANSPORT_OVERHEAD
}

/// The start of a unit test's virtual clock. `Instant` has no constructor, so tests read the
/// real clock once and add durations to it; the core itself never reads it (clippy.toml).
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn test_clock_start() -> std::time::Instant {
    std::time::Instant::now()
}
