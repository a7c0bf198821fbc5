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
//! Status: the public API is fixed; the protocol (handshake, transport data,
//! cookies, timers) is being filled in behind it.

mod device;
mod error;
pub mod keys;
mod types;

pub use device::Device;
pub use error::{Error, KeyEncodingError, Result};
pub use keys::{PrivateKey, PublicKey};
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
