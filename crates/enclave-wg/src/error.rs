//! Errors of the protocol core's configuration API.
//!
//! Packet processing never returns these: a packet that cannot be used is
//! dropped and the reason is reported as a [`crate::DropReason`].

use crate::keys::PublicKey;

/// What went wrong while configuring a [`crate::Device`] or decoding a key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No peer with this public key is configured.
    #[error("no peer with public key {0} is configured on this device")]
    UnknownPeer(PublicKey),
    /// A key in text form could not be decoded.
    #[error("a WireGuard key must be 32 bytes written as 44 characters of base64")]
    KeyEncoding(#[source] KeyEncodingError),
}

/// Why a key in text form could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum KeyEncodingError {
    /// The text is not valid base64 (or hex).
    #[error("the text is not valid {0}")]
    InvalidText(&'static str),
    /// The text decodes to a number of bytes other than 32.
    #[error("the key decodes to {0} bytes instead of 32")]
    WrongLength(usize),
}

/// Result of the protocol core's configuration API.
pub type Result<T> = std::result::Result<T, Error>;
