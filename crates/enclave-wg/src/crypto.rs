//! The primitives of the WireGuard paper, section 5.4: HASH, MAC, HMAC, KDF,
//! AEAD, XAEAD, DH and TIMESTAMP.

use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, KeyInit, Mac, Update};
use blake2::{Blake2s256, Blake2sMac};
use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, Key, Tag, XChaCha20Poly1305, XNonce};
use hmac::SimpleHmac;
use std::time::{SystemTime, UNIX_EPOCH};
use zeroize::{Zeroize, Zeroizing};

/// Length of a Poly1305 tag.
pub(crate) const TAG_LEN: usize = 16;

/// `HASH(parts[0] || parts[1] || ...)`: BLAKE2s with a 32-byte output.
pub(crate) fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Blake2s256::default();
    for part in parts {
        Update::update(&mut hasher, part);
    }
    hasher.finalize_fixed().into()
}

/// `MAC(key, input)`: keyed BLAKE2s with a 16-byte output.
pub(crate) fn mac(key: &[u8], input: &[u8]) -> [u8; 16] {
    // The key is 16 or 32 bytes, always within BLAKE2s's limit of 32.
    let mut mac = match <Blake2sMac<U16> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("MAC keys are 16 or 32 bytes"),
    };
    Mac::update(&mut mac, input);
    mac.finalize().into_bytes().into()
}

/// `HMAC(key, input)` over BLAKE2s.
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = match <SimpleHmac<Blake2s256> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    for part in parts {
        Mac::update(&mut mac, part);
    }
    mac.finalize().into_bytes().into()
}

/// `KDF_n(key, input)` for n = 1, 2, 3: HKDF with HMAC-BLAKE2s.
pub(crate) fn kdf<const N: usize>(key: &[u8; 32], input: &[u8]) -> [[u8; 32]; N] {
    let mut prk = hmac(key, &[input]);
    let mut out = [[0u8; 32]; N];
    let mut previous: &[u8] = &[];
    for (i, slot) in out.iter_mut().enumerate() {
        // `i` is below 4: the counter byte never wraps.
        let counter = [i as u8 + 1];
        *slot = hmac(&prk, &[previous, &counter]);
        previous = slot;
    }
    prk.zeroize();
    out
}

/// `AEAD(key, counter, plaintext, aad)` in place: ChaCha20-Poly1305 with the
/// nonce made of 32 zero bits and the little-endian 64-bit counter.
/// `buffer` holds the plaintext followed by room for the tag.
pub(crate) fn aead_seal(cipher: &ChaCha20Poly1305, counter: u64, buffer: &mut [u8], aad: &[u8]) {
    let split = buffer.len() - TAG_LEN;
    let (text, tag_out) = buffer.split_at_mut(split);
    match cipher.encrypt_inout_detached(&nonce(counter), aad, text.into()) {
        Ok(tag) => tag_out.copy_from_slice(&tag),
        Err(_) => unreachable!("ChaCha20-Poly1305 seals up to 256 GiB"),
    }
}

/// Opens `buffer` (ciphertext followed by the tag) in place; on success the
/// plaintext is `buffer[..len - 16]`.
pub(crate) fn aead_open(
    cipher: &ChaCha20Poly1305,
    counter: u64,
    buffer: &mut [u8],
    aad: &[u8],
) -> bool {
    let Some(split) = buffer.len().checked_sub(TAG_LEN) else {
        return false;
    };
    let (text, tag) = buffer.split_at_mut(split);
    let Ok(tag) = <&Tag>::try_from(&*tag) else {
        return false;
    };
    cipher
        .decrypt_inout_detached(&nonce(counter), aad, text.into(), tag)
        .is_ok()
}

/// A ChaCha20-Poly1305 instance for `key` (zeroized when dropped).
pub(crate) fn aead_cipher(key: &[u8; 32]) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(<&Key>::from(key))
}

fn nonce(counter: u64) -> chacha20poly1305::Nonce {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_le_bytes());
    nonce.into()
}

/// `XAEAD(key, nonce, plaintext, aad)` in place: XChaCha20-Poly1305.
pub(crate) fn xaead_seal(key: &[u8; 32], nonce: &[u8; 24], buffer: &mut [u8], aad: &[u8]) {
    let cipher = XChaCha20Poly1305::new(<&Key>::from(key));
    let split = buffer.len() - TAG_LEN;
    let (text, tag_out) = buffer.split_at_mut(split);
    match cipher.encrypt_inout_detached(<&XNonce>::from(nonce), aad, text.into()) {
        Ok(tag) => tag_out.copy_from_slice(&tag),
        Err(_) => unreachable!("XChaCha20-Poly1305 seals a 16-byte cookie"),
    }
}

/// Opens an XAEAD box in place; see [`aead_open`].
pub(crate) fn xaead_open(key: &[u8; 32], nonce: &[u8; 24], buffer: &mut [u8], aad: &[u8]) -> bool {
    let Some(split) = buffer.len().checked_sub(TAG_LEN) else {
        return false;
    };
    let cipher = XChaCha20Poly1305::new(<&Key>::from(key));
    let (text, tag) = buffer.split_at_mut(split);
    let Ok(tag) = <&Tag>::try_from(&*tag) else {
        return false;
    };
    cipher
        .decrypt_inout_detached(<&XNonce>::from(nonce), aad, text.into(), tag)
        .is_ok()
}

/// `DH(private, public)`: X25519. `None` when the result is all zeros (the
/// public key has small order), which WireGuard rejects.
pub(crate) fn dh(
    private: &x25519_dalek::StaticSecret,
    public: &[u8; 32],
) -> Option<Zeroizing<[u8; 32]>> {
    // `SharedSecret` zeroizes itself when dropped; so does the copy.
    let shared = private.diffie_hellman(&x25519_dalek::PublicKey::from(*public));
    shared
        .was_contributory()
        .then(|| Zeroizing::new(shared.to_bytes()))
}

/// Length of a TAI64N timestamp.
pub(crate) const TIMESTAMP_LEN: usize = 12;

/// `TIMESTAMP()`: TAI64N of `wall`. As wireguard-go does, the nanoseconds are
/// rounded down to a multiple of 2^24 so that the timestamp does not leak
/// the precise clock.
pub(crate) fn tai64n(wall: SystemTime) -> [u8; TIMESTAMP_LEN] {
    const TAI64_EPOCH: u64 = 0x4000_0000_0000_000a;
    const WHITENER_MASK: u32 = 0x0100_0000 - 1;
    let since_epoch = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = TAI64_EPOCH.wrapping_add(since_epoch.as_secs());
    let nanos = since_epoch.subsec_nanos() & !WHITENER_MASK;
    let mut out = [0u8; TIMESTAMP_LEN];
    out[..8].copy_from_slice(&seconds.to_be_bytes());
    out[8..].copy_from_slice(&nanos.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blake2s_known_answer() {
        // RFC 7693 appendix B: BLAKE2s-256("abc").
        let digest = hash(&[b"a", b"bc"]);
        assert_eq!(
            crate::keys::to_hex(&digest),
            "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982"
        );
    }

    #[test]
    fn kdf_outputs_chain() {
        let key = [1u8; 32];
        let [a, b, c] = kdf::<3>(&key, b"input");
        let [a2] = kdf::<1>(&key, b"input");
        let [a3, b3] = kdf::<2>(&key, b"input");
        assert_eq!(a, a2);
        assert_eq!((a, b), (a3, b3));
        assert_ne!(b, c);
    }

    #[test]
    fn aead_round_trip_and_tamper() {
        let cipher = aead_cipher(&[9u8; 32]);
        let mut buffer = *b"hello world, sixteen byte tag...";
        let copy = buffer;
        aead_seal(&cipher, 7, &mut buffer, b"ad");
        assert_ne!(buffer, copy);
        let mut tampered = buffer;
        tampered[0] ^= 1;
        assert!(!aead_open(&cipher, 7, &mut tampered, b"ad"));
        assert!(!aead_open(&cipher, 8, &mut buffer.clone(), b"ad"));
        assert!(aead_open(&cipher, 7, &mut buffer, b"ad"));
        assert_eq!(buffer[..16], copy[..16]);
    }

    #[test]
    fn timestamps_grow_and_are_whitened() {
        let base = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let a = tai64n(base);
        let b = tai64n(base + std::time::Duration::from_millis(1));
        let c = tai64n(base + std::time::Duration::from_millis(20));
        assert_eq!(a, b, "1 ms is inside the whitening granularity");
        assert!(c > a);
        assert_eq!(
            &a[..8],
            &(0x4000_0000_0000_000a_u64 + 1_700_000_000).to_be_bytes()
        );
    }
}
