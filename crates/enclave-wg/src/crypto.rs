//! The primitives of the WireGuard paper, section 5.4: HASH, MAC, HMAC, KDF,
//! AEAD, XAEAD, DH and TIMESTAMP.

use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, KeyInit, Mac, Update};
use blake2::{Blake2s256, Blake2sMac};
use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, Key, Tag, XChaCha20Poly1305, XNonce};
use hmac::SimpleHmac;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use std::mem::MaybeUninit;
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
/// `buffer` holds the plaintext followed by room for the tag. The handshake
/// uses this one (a few seals per handshake); transport data uses
/// [`TransportKey`], the same function through ring.
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
    nonce_bytes(counter).into()
}

/// The AEAD nonce of `counter`: 32 zero bits, then the counter in little endian.
fn nonce_bytes(counter: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_le_bytes());
    nonce
}

/// One direction's transport data key: the `AEAD` of [`aead_seal`] and
/// [`aead_open`] through ring, which seals 1400-byte packets about three
/// times as fast as the `chacha20poly1305` crate (docs/dataplane.md).
///
/// It keeps the key's 32 bytes (wiped when dropped) and builds ring's key on
/// the stack for each packet, then wipes that copy: ring's `LessSafeKey` is
/// 544 bytes whatever the cipher (sized for AES-GCM's key schedule), and a
/// gateway with a thousand peers holds up to three sessions of two keys
/// each. For ChaCha20-Poly1305 the building only copies the key words, which
/// ring also does for each packet (its assembly's argument block; those copies
/// are overwritten by later calls, not wiped).
pub(crate) struct TransportKey {
    key: Zeroizing<[u8; 32]>,
}

impl TransportKey {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Self {
            key: Zeroizing::new(*key),
        }
    }

    /// Runs `use_key` with ring's key for this one, and wipes it after.
    fn with_key<R>(&self, use_key: impl FnOnce(&LessSafeKey) -> R) -> R {
        let key = match UnboundKey::new(&CHACHA20_POLY1305, &self.key[..]) {
            Ok(key) => LessSafeKey::new(key),
            Err(_) => unreachable!("ChaCha20-Poly1305 keys are 32 bytes"),
        };
        let mut key = MaybeUninit::new(key);
        // SAFETY: initialised just above; only `wipe` de-initialises it, below.
        let result = use_key(unsafe { key.assume_init_ref() });
        wipe(&mut key);
        result
    }

    /// Seals `buffer` (the plaintext followed by room for the tag) in place.
    pub(crate) fn seal(&self, counter: u64, buffer: &mut [u8], aad: &[u8]) {
        let split = buffer.len() - TAG_LEN;
        let (text, tag_out) = buffer.split_at_mut(split);
        let nonce = Nonce::assume_unique_for_key(nonce_bytes(counter));
        match self.with_key(|key| key.seal_in_place_separate_tag(nonce, Aad::from(aad), text)) {
            Ok(tag) => tag_out.copy_from_slice(tag.as_ref()),
            Err(_) => unreachable!("ChaCha20-Poly1305 seals up to 256 GiB"),
        }
    }

    /// Opens `buffer` (ciphertext followed by the tag) in place; on success
    /// the plaintext is `buffer[..len - 16]`.
    pub(crate) fn open(&self, counter: u64, buffer: &mut [u8], aad: &[u8]) -> bool {
        let Some(split) = buffer.len().checked_sub(TAG_LEN) else {
            return false;
        };
        let (text, tag) = buffer.split_at_mut(split);
        let Ok(tag) = <[u8; TAG_LEN]>::try_from(&*tag) else {
            return false;
        };
        let nonce = Nonce::assume_unique_for_key(nonce_bytes(counter));
        self.with_key(|key| {
            key.open_in_place_separate_tag(nonce, Aad::from(aad), tag.into(), text, 0..)
                .is_ok()
        })
    }
}

/// Overwrites every byte of a ring key with zeros through volatile writes.
/// The key must not be used afterwards.
fn wipe(key: &mut MaybeUninit<LessSafeKey>) {
    // SAFETY: `zeroize_flat_type` writes `size_of::<MaybeUninit<LessSafeKey>>()`
    // zero bytes at a pointer we hold exclusively, and zero bytes are a valid
    // `MaybeUninit`. The write must leave nothing behind and nothing to
    // release, which ring 0.17's source confirms: for CHACHA20_POLY1305,
    // `LessSafeKey` is `{ inner: KeyInner, algorithm: &'static Algorithm }`,
    // `KeyInner::ChaCha20Poly1305` holds `chacha20_poly1305::Key(chacha::Key
    // { words: [u32; 8] })` inline (the other variant, AES-GCM's key schedule,
    // is inline too), and no type among them owns a heap pointer or implements
    // `Drop`. So the key's only copy is these bytes, and skipping ring's
    // (empty) drop glue leaks nothing. `MaybeUninit` never drops its contents,
    // and the caller does not read the key again.
    unsafe { zeroize::zeroize_flat_type(key) }
}

/// A ring key's bytes, to check the wipe (all of them are initialised only
/// after `wipe`; before it, the caller looks at them for the key only).
#[cfg(test)]
fn ring_key_bytes(key: &MaybeUninit<LessSafeKey>) -> Vec<u8> {
    let len = std::mem::size_of_val(key);
    let start = key.as_ptr().cast::<u8>();
    // SAFETY: `start..start + len` is `key`, borrowed for this call; volatile
    // reads keep the compiler from assuming what is there.
    (0..len)
        .map(|i| unsafe { std::ptr::read_volatile(start.add(i)) })
        .collect()
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
    fn transport_key_matches_the_handshake_aead() {
        // Same key, counter and AAD through both crates: the same bytes, and
        // each opens what the other sealed (wireguard-go's wire format).
        let key = [3u8; 32];
        let transport = TransportKey::new(&key);
        let cipher = aead_cipher(&key);
        for len in [0, 1, 15, 16, 17, 64, 1420] {
            let counter = 0x0102_0304_0506_0708 + len as u64;
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut ours = plain.clone();
            ours.resize(len + TAG_LEN, 0);
            let mut theirs = ours.clone();
            transport.seal(counter, &mut ours, b"aad");
            aead_seal(&cipher, counter, &mut theirs, b"aad");
            assert_eq!(ours, theirs, "{len} bytes");
            assert!(transport.open(counter, &mut theirs, b"aad"));
            assert!(aead_open(&cipher, counter, &mut ours, b"aad"));
            assert_eq!(ours[..len], plain[..]);
            assert_eq!(theirs[..len], plain[..]);
        }
    }

    #[test]
    fn transport_key_rejects_tampering() {
        let key = TransportKey::new(&[9u8; 32]);
        let mut buffer = *b"hello world, sixteen byte tag...";
        let copy = buffer;
        key.seal(7, &mut buffer, b"ad");
        assert_ne!(buffer, copy);
        for i in [0, 15, 16, 31] {
            let mut tampered = buffer;
            tampered[i] ^= 1;
            assert!(!key.open(7, &mut tampered, b"ad"), "byte {i}");
        }
        assert!(!key.open(8, &mut buffer.clone(), b"ad"));
        assert!(!key.open(7, &mut buffer.clone(), b"ae"));
        assert!(!key.open(7, &mut buffer[..15].to_vec(), b"ad"));
        assert!(key.open(7, &mut buffer, b"ad"));
        assert_eq!(buffer[..16], copy[..16]);
    }

    #[test]
    fn ring_key_wipe_leaves_zeros() {
        let secret: [u8; 32] = std::array::from_fn(|i| 0xa0 + i as u8);
        let key = UnboundKey::new(&CHACHA20_POLY1305, &secret).unwrap();
        let mut key = MaybeUninit::new(LessSafeKey::new(key));
        let before = ring_key_bytes(&key);
        assert!(
            before.windows(32).any(|window| window == secret),
            "ring keeps the ChaCha20 key inline as its 32 bytes"
        );
        wipe(&mut key);
        let after = ring_key_bytes(&key);
        assert_eq!(after.len(), before.len());
        assert!(after.iter().all(|&byte| byte == 0), "{after:?}");
    }

    #[test]
    fn transport_key_is_small() {
        // It keeps the key's bytes, not ring's 544-byte key: a session holds two.
        assert_eq!(std::mem::size_of::<TransportKey>(), 32);
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
