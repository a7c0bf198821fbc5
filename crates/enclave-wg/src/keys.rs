//! Curve25519 keys as WireGuard uses them, and their text forms.
//!
//! The network definition and the command line write keys in base64 as `wg`
//! does; the cross-platform UAPI writes them in lowercase hex.

use std::fmt;

use base64::Engine as _;
use rand_core::CryptoRng;
use subtle::ConstantTimeEq;
use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, KeyEncodingError, Result};

/// The methods that every kind of key has: its raw bytes, and its base64 form as the `wg`
/// command named `$printed_by` prints it.
macro_rules! bytes_and_base64 {
    ($key:ident, $printed_by:literal) => {
        impl $key {
            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            #[doc = concat!("The key in base64, as `", $printed_by, "` prints it.")]
            pub fn to_base64(&self) -> String {
                to_base64(&self.0)
            }

            /// Parses the base64 form.
            pub fn from_base64(text: &str) -> Result<Self> {
                from_base64(text).map(Self)
            }
        }
    };
}

/// A peer's static public key, which also names the peer.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

bytes_and_base64!(PublicKey, "wg");

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A public key is not a secret, but the short form keeps logs readable.
        let text = self.to_base64();
        write!(f, "PublicKey({}…)", &text[..8])
    }
}

impl From<[u8; 32]> for PublicKey {
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

/// A preshared key (`Q` in the WireGuard paper, section 5.4.3): zeroized on
/// drop (every clone too), compared in constant time, never shown by `Debug`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PresharedKey([u8; 32]);

impl PresharedKey {
    /// Wraps raw bytes. The caller should zeroize its own copy.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

bytes_and_base64!(PresharedKey, "wg genpsk");

impl PartialEq for PresharedKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for PresharedKey {}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

/// A static private key. Zeroized on drop; `Debug` does not show it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    /// Wraps raw bytes (clamping happens when the key is used, as in X25519).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        public_from_private(&self.0)
    }
}

bytes_and_base64!(PrivateKey, "wg genkey");

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// Generates a new private key from `rng`, clamped as `wg genkey` does.
pub fn generate_private_key(mut rng: impl CryptoRng) -> PrivateKey {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    bytes[0] &= 248;
    bytes[31] &= 127;
    bytes[31] |= 64;
    PrivateKey(bytes)
}

/// The X25519 public key of a private key.
pub fn public_from_private(private_key: &[u8; 32]) -> PublicKey {
    let secret = StaticSecret::from(*private_key);
    PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
}

/// Encodes 32 key bytes in standard padded base64 (44 characters).
pub fn to_base64(key: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// Decodes a key from standard padded base64.
pub fn from_base64(text: &str) -> Result<[u8; 32]> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| Error::KeyEncoding(KeyEncodingError::InvalidText("base64")))?;
    to_array(bytes)
}

/// Encodes 32 key bytes in lowercase hex (64 characters), as the UAPI does.
pub fn to_hex(key: &[u8; 32]) -> String {
    let mut text = String::with_capacity(64);
    for byte in key {
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    text
}

/// Decodes a key from hex (either case), as the UAPI writes it.
pub fn from_hex(text: &str) -> Result<[u8; 32]> {
    let text = text.trim().as_bytes();
    if text.len() % 2 != 0 {
        return Err(Error::KeyEncoding(KeyEncodingError::InvalidText("hex")));
    }
    let mut bytes = Vec::with_capacity(text.len() / 2);
    for pair in text.chunks_exact(2) {
        let high = hex_value(pair[0]);
        let low = hex_value(pair[1]);
        match (high, low) {
            (Some(high), Some(low)) => bytes.push(high << 4 | low),
            _ => return Err(Error::KeyEncoding(KeyEncodingError::InvalidText("hex"))),
        }
    }
    to_array(bytes)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

fn to_array(mut bytes: Vec<u8>) -> Result<[u8; 32]> {
    let result = <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| Error::KeyEncoding(KeyEncodingError::WrongLength(bytes.len())));
    bytes.zeroize();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preshared_keys_are_zeroized_on_drop_compared_and_never_shown() {
        fn zeroized_on_drop<T: ZeroizeOnDrop>() {}
        zeroized_on_drop::<PresharedKey>();
        let key = PresharedKey::from_bytes([0xab; 32]);
        assert_eq!(key, PresharedKey::from_bytes([0xab; 32]));
        let mut other = [0xab; 32];
        other[31] = 0;
        assert_ne!(key, PresharedKey::from_bytes(other));
        let shown = format!("{key:?} {:?}", Some(key.clone()));
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
        assert_eq!(
            PresharedKey::from_base64(&key.to_base64()).expect("round trip"),
            key
        );
    }

    #[test]
    fn rfc7748_public_key() {
        // RFC 7748 section 6.1: Alice's private and public keys.
        let private = from_hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
            .expect("valid hex");
        let public = public_from_private(&private);
        assert_eq!(
            to_hex(public.as_bytes()),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }

    #[test]
    fn base64_round_trip_and_errors() {
        let key = [7u8; 32];
        let text = to_base64(&key);
        assert_eq!(text.len(), 44);
        assert_eq!(from_base64(&text).expect("round trip"), key);
        assert!(matches!(
            from_base64("AAAA"),
            Err(Error::KeyEncoding(KeyEncodingError::WrongLength(3)))
        ));
        assert!(matches!(
            from_base64("not base64!"),
            Err(Error::KeyEncoding(KeyEncodingError::InvalidText(_)))
        ));
        assert_eq!(from_hex(&to_hex(&key)).expect("hex round trip"), key);
        assert!(from_hex("zz").is_err());
    }

    #[test]
    fn generated_keys_are_clamped() {
        let key = generate_private_key(enclave_testkit::TestRng(3));
        assert_eq!(key.as_bytes()[0] & 7, 0);
        assert_eq!(key.as_bytes()[31] & 0xc0, 0x40);
    }
}
