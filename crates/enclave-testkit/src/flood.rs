//! What an outsider who knows only a device's public key can send it: handshake initiations
//! with a random body and a valid mac1, and a valid mac2 once it holds a cookie from one of the
//! device's cookie replies. The protocol tests (in memory) and the flood scenario (over real
//! sockets) flood with these.

use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, KeyInit, Mac, Update};
use blake2::{Blake2s256, Blake2sMac};
use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use rand_core::Rng;

use crate::TestRng;

/// The length of a handshake initiation.
pub const INITIATION_LEN: usize = 148;
/// Where an initiation's mac1 starts (what it covers ends here).
pub const MAC1_AT: usize = 116;
/// Where an initiation's mac2 starts.
pub const MAC2_AT: usize = 132;
/// The length of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = 64;

/// `HASH`: BLAKE2s-256 over the concatenation.
fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Blake2s256::default();
    for part in parts {
        Update::update(&mut hasher, part);
    }
    hasher.finalize_fixed().into()
}

/// `MAC`: keyed BLAKE2s-128 (keys of 16 or 32 bytes).
fn mac(key: &[u8], input: &[u8]) -> [u8; 16] {
    let mut mac = match <Blake2sMac<U16> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("MAC keys are 16 or 32 bytes"),
    };
    Mac::update(&mut mac, input);
    mac.finalize().into_bytes().into()
}

/// The mac1 of an initiation.
pub fn mac1_of(initiation: &[u8; INITIATION_LEN]) -> [u8; 16] {
    let mut mac1 = [0u8; 16];
    mac1.copy_from_slice(&initiation[MAC1_AT..MAC2_AT]);
    mac1
}

/// A flooder of one device, drawing its initiations' bodies from a seeded [`TestRng`].
#[derive(Debug, Clone)]
pub struct Flooder {
    rng: TestRng,
    mac1_key: [u8; 32],
    cookie_key: [u8; 32],
    cookie: Option<[u8; 16]>,
}

impl Flooder {
    /// A flooder of the device whose public key is `target`.
    pub fn new(target: &[u8; 32], seed: u64) -> Self {
        Self {
            rng: TestRng(seed),
            mac1_key: hash(&[b"mac1----", target]),
            cookie_key: hash(&[b"cookie--", target]),
            cookie: None,
        }
    }

    /// The next initiation: a random body, a valid mac1 and, with a cookie, a valid mac2.
    pub fn initiation(&mut self) -> [u8; INITIATION_LEN] {
        let mut msg = [0u8; INITIATION_LEN];
        self.rng.fill_bytes(&mut msg[4..MAC1_AT]);
        msg[0] = 1;
        let mac1 = mac(&self.mac1_key, &msg[..MAC1_AT]);
        msg[MAC1_AT..MAC2_AT].copy_from_slice(&mac1);
        if let Some(cookie) = self.cookie {
            let mac2 = mac(&cookie, &msg[..MAC2_AT]);
            msg[MAC2_AT..].copy_from_slice(&mac2);
        }
        msg
    }

    /// The cookie in `reply`, a cookie reply to the initiation whose mac1 was `mac1`
    /// (XChaCha20-Poly1305 under `HASH("cookie--" || S_pub)`, mac1 as associated data); `None`
    /// when it is not one or does not open.
    pub fn open_cookie(&self, mac1: &[u8; 16], reply: &[u8]) -> Option<[u8; 16]> {
        if reply.len() != COOKIE_REPLY_LEN || reply[0] != 3 {
            return None;
        }
        let cipher = XChaCha20Poly1305::new_from_slice(&self.cookie_key).ok()?;
        let mut cookie = [0u8; 16];
        cookie.copy_from_slice(&reply[32..48]);
        let nonce = <&XNonce>::try_from(&reply[8..32]).ok()?;
        let tag = <&Tag>::try_from(&reply[48..64]).ok()?;
        cipher
            .decrypt_inout_detached(nonce, mac1, (&mut cookie[..]).into(), tag)
            .ok()?;
        Some(cookie)
    }

    /// From now on, initiations carry a mac2 made with `cookie`.
    pub fn use_cookie(&mut self, cookie: [u8; 16]) {
        self.cookie = Some(cookie);
    }

    /// Whether the flooder holds a cookie.
    pub fn has_cookie(&self) -> bool {
        self.cookie.is_some()
    }
}
