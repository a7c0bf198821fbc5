//! The four message layouts of the WireGuard paper, section 5.4, as byte
//! offsets. Every message starts with a little-endian 32-bit type whose top
//! three bytes are reserved zeros.

/// Type of a handshake initiation (paper, section 5.4.2).
pub(crate) const INITIATION: u32 = 1;
/// Type of a handshake response (section 5.4.3).
pub(crate) const RESPONSE: u32 = 2;
/// Type of a cookie reply (section 5.4.7).
pub(crate) const COOKIE_REPLY: u32 = 3;
/// Type of a transport data message (section 5.4.6).
pub(crate) const TRANSPORT: u32 = 4;

/// Handshake initiation: type, sender, ephemeral, static (48), timestamp (28), mac1, mac2.
pub(crate) mod initiation {
    pub(crate) const SENDER: usize = 4;
    pub(crate) const EPHEMERAL: usize = 8;
    pub(crate) const STATIC: usize = 40;
    pub(crate) const TIMESTAMP: usize = 88;
    pub(crate) const MAC1: usize = 116;
    pub(crate) const LEN: usize = 148;
}

/// Handshake response: type, sender, receiver, ephemeral, empty (16), mac1, mac2.
pub(crate) mod response {
    pub(crate) const SENDER: usize = 4;
    pub(crate) const RECEIVER: usize = 8;
    pub(crate) const EPHEMERAL: usize = 12;
    pub(crate) const EMPTY: usize = 44;
    pub(crate) const MAC1: usize = 60;
    pub(crate) const LEN: usize = 92;
}

/// Cookie reply: type, receiver, nonce (24), encrypted cookie (32).
pub(crate) mod cookie_reply {
    pub(crate) const RECEIVER: usize = 4;
    pub(crate) const NONCE: usize = 8;
    pub(crate) const COOKIE: usize = 32;
    pub(crate) const LEN: usize = 64;
}

/// Transport data: type, receiver, counter (8), encrypted packet.
pub(crate) mod transport {
    pub(crate) const RECEIVER: usize = 4;
    pub(crate) const COUNTER: usize = 8;
    pub(crate) const DATA: usize = 16;
    /// An empty (keepalive) message: the header and the tag.
    pub(crate) const MIN_LEN: usize = 32;
}

/// The message type, or `None` when the datagram is shorter than 4 bytes.
pub(crate) fn message_type(datagram: &[u8]) -> Option<u32> {
    read_u32(datagram, 0)
}

/// A little-endian u32 at `offset`, if the bytes are there.
pub(crate) fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let field = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes([field[0], field[1], field[2], field[3]]))
}

/// A little-endian u64 at `offset`, if the bytes are there.
pub(crate) fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let field = bytes.get(offset..offset.checked_add(8)?)?;
    let mut array = [0u8; 8];
    array.copy_from_slice(field);
    Some(u64::from_le_bytes(array))
}

/// A 32-byte field at `offset`, if the bytes are there.
pub(crate) fn read_32(bytes: &[u8], offset: usize) -> Option<[u8; 32]> {
    let field = bytes.get(offset..offset.checked_add(32)?)?;
    let mut array = [0u8; 32];
    array.copy_from_slice(field);
    Some(array)
}
