//! Enrolment keys and admin tokens: 256 random bits, shown once, stored as SHA-256.

use base64::Engine as _;
use enclave_control_proto::Redacted;
use getrandom::SysRng;
use rand_core::{Rng as _, UnwrapErr};
use sha2::{Digest, Sha256};

/// Prefix of an enrolment key.
pub const KEY_PREFIX: &str = "enk_";
/// Prefix of an admin token.
pub const TOKEN_PREFIX: &str = "ent_";

/// A secret as made: the text shown once, its hash (stored) and its public id.
#[derive(Debug, Clone)]
pub struct Secret {
    /// The secret itself: printed once, never stored, never logged.
    pub text: Redacted<String>,
    /// Hex SHA-256 of `text`.
    pub hash: Redacted<String>,
    /// The first 12 hex digits of the hash: names the secret in lists and the audit log.
    pub id: String,
}

/// Makes a secret with the operating system's random source.
pub fn generate(prefix: &str) -> Secret {
    let mut bytes = [0u8; 32];
    UnwrapErr(SysRng).fill_bytes(&mut bytes);
    let text = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = hash(&text);
    let id = hash[..12].to_owned();
    Secret {
        text: text.into(),
        hash: hash.into(),
        id,
    }
}

/// A WireGuard key pair for a device added with the WireGuard app, made with the operating
/// system's random source: the private key (base64; wiped from memory when dropped), to be
/// shown once and never stored or logged, and the public key (base64).
pub fn wireguard_key_pair() -> (zeroize::Zeroizing<String>, String) {
    let secret = x25519_dalek::StaticSecret::random_from_rng(&mut UnwrapErr(SysRng));
    let public = x25519_dalek::PublicKey::from(&secret);
    let bytes = zeroize::Zeroizing::new(secret.to_bytes());
    let private = zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(*bytes));
    (
        private,
        base64::engine::general_purpose::STANDARD.encode(public.as_bytes()),
    )
}

/// The public key (base64) of a WireGuard private key (base64 of 32 bytes), or `None` when
/// `private_key` is not one.
pub fn wireguard_public_key(private_key: &str) -> Option<String> {
    let decoded = zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(private_key.trim())
            .ok()?,
    );
    let mut bytes: [u8; 32] = decoded.as_slice().try_into().ok()?;
    let secret = x25519_dalek::StaticSecret::from(bytes);
    zeroize::Zeroize::zeroize(&mut bytes);
    let public = x25519_dalek::PublicKey::from(&secret);
    Some(base64::engine::general_purpose::STANDARD.encode(public.as_bytes()))
}

/// Hex SHA-256 of a presented secret.
pub fn hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal in time independent of where they differ (both are hex digests of one length).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_256_bits_and_its_hash_names_it() {
        let one = generate(KEY_PREFIX);
        let two = generate(KEY_PREFIX);
        assert_ne!(one.text, two.text);
        assert!(one.text.expose().starts_with(KEY_PREFIX));
        assert_eq!(one.text.expose().len(), KEY_PREFIX.len() + 43);
        assert_eq!(&hash(one.text.expose()), one.hash.expose());
        assert_eq!(one.hash.expose().len(), 64);
        assert!(one.hash.expose().starts_with(&one.id));
        assert!(!format!("{one:?}").contains(one.text.expose().as_str()));
        assert!(!format!("{one:?}").contains(one.hash.expose().as_str()));
        assert!(same(one.hash.expose(), &hash(one.text.expose())));
        assert!(!same(one.hash.expose(), two.hash.expose()));
    }
}
