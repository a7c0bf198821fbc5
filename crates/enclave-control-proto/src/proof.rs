//! Proof of possession of the agent's WireGuard private key.
//!
//! A WireGuard key is an X25519 key: it cannot sign, but it can agree. The server sends a
//! fresh ephemeral X25519 public key `E` and a random nonce; the agent, holding the static
//! private key `a` of its public key `A`, computes `X25519(a, E)`; the server, holding `e`,
//! computes the same value as `X25519(e, A)`. The agent answers with a MAC keyed by that
//! value over a transcript of the exchange; only a holder of `a` (or of `e`, which never
//! leaves the server) can compute it.
//!
//! The MAC is keyed BLAKE2s-256 (as WireGuard itself uses BLAKE2s) over:
//!
//! ```text
//! LABEL ‖ version (u32 BE) ‖ nonce (32) ‖ A (32) ‖ E (32) ‖ channel (32)
//! ```
//!
//! `channel` binds the proof to this TLS connection: the TLS exporter value
//! ([`CHANNEL_EXPORTER_LABEL`], RFC 5705/8446) both ends compute, or zeros over plain HTTP.
//! A proof is therefore useless on any other connection, to any other server, or for any
//! other challenge. The server refuses an agent key whose shared value is all zeros (a
//! low-order point: the value would be known to anyone).
//!
//! Pure functions: no I/O, no clock, no randomness (the server makes `e` and the nonce).

use blake2::digest::{FixedOutput as _, KeyInit as _, Update as _};
use blake2::Blake2sMac256;
use subtle::ConstantTimeEq as _;
use x25519_dalek::{PublicKey, StaticSecret};

/// The transcript's domain-separation label.
pub const LABEL: &[u8] = b"enclave-agent proof of key possession v1";

/// The TLS exporter label of the channel binding.
pub const CHANNEL_EXPORTER_LABEL: &[u8] = b"EXPORTER-enclave-agent-channel";

/// What the proof covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transcript {
    /// The protocol version the server chose.
    pub version: u32,
    /// The server's random nonce.
    pub nonce: [u8; 32],
    /// The agent's static public key (the one it claims).
    pub agent_public: [u8; 32],
    /// The server's ephemeral public key.
    pub server_ephemeral: [u8; 32],
    /// The TLS channel binding, or zeros without TLS.
    pub channel: [u8; 32],
}

impl Transcript {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(LABEL.len() + 4 + 4 * 32);
        out.extend_from_slice(LABEL);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.agent_public);
        out.extend_from_slice(&self.server_ephemeral);
        out.extend_from_slice(&self.channel);
        out
    }
}

fn mac(shared: &[u8; 32], transcript: &Transcript) -> [u8; 32] {
    let mut mac = Blake2sMac256::new(shared.into());
    mac.update(&transcript.bytes());
    mac.finalize_fixed().into()
}

/// The agent's side: the MAC proving it holds `private` (whose public key must be
/// `transcript.agent_public`; otherwise the proof simply fails).
pub fn prove(private: &StaticSecret, transcript: &Transcript) -> [u8; 32] {
    let shared = private.diffie_hellman(&PublicKey::from(transcript.server_ephemeral));
    mac(shared.as_bytes(), transcript)
}

/// The server's side: whether `presented` is the MAC that only the holder of the private key
/// of `transcript.agent_public` can make. Compared in constant time; a low-order agent key
/// is refused.
pub fn verify(ephemeral: &StaticSecret, transcript: &Transcript, presented: &[u8]) -> bool {
    if PublicKey::from(ephemeral).as_bytes() != &transcript.server_ephemeral {
        return false;
    }
    let shared = ephemeral.diffie_hellman(&PublicKey::from(transcript.agent_public));
    if !shared.was_contributory() {
        return false;
    }
    let expected = mac(shared.as_bytes(), transcript);
    presented.len() == expected.len() && bool::from(expected.ct_eq(presented))
}

#[cfg(test)]
mod tests {
    use getrandom::SysRng;
    use rand_core::UnwrapErr;

    use super::*;

    fn exchange() -> (StaticSecret, StaticSecret, Transcript) {
        let agent = StaticSecret::random_from_rng(&mut UnwrapErr(SysRng));
        let ephemeral = StaticSecret::random_from_rng(&mut UnwrapErr(SysRng));
        let transcript = Transcript {
            version: 1,
            nonce: [7; 32],
            agent_public: PublicKey::from(&agent).to_bytes(),
            server_ephemeral: PublicKey::from(&ephemeral).to_bytes(),
            channel: [9; 32],
        };
        (agent, ephemeral, transcript)
    }

    #[test]
    fn the_holder_of_the_key_proves_it() {
        let (agent, ephemeral, transcript) = exchange();
        let mac = prove(&agent, &transcript);
        assert!(verify(&ephemeral, &transcript, &mac));
    }

    #[test]
    fn another_key_is_refused() {
        let (_, ephemeral, transcript) = exchange();
        let impostor = StaticSecret::random_from_rng(&mut UnwrapErr(SysRng));
        let mac = prove(&impostor, &transcript);
        assert!(!verify(&ephemeral, &transcript, &mac));
    }

    #[test]
    fn a_proof_for_another_transcript_is_refused() {
        let (agent, ephemeral, transcript) = exchange();
        let mac = prove(&agent, &transcript);
        let tampered = [
            Transcript {
                version: 2,
                ..transcript
            },
            Transcript {
                nonce: [8; 32],
                ..transcript
            },
            Transcript {
                channel: [0; 32],
                ..transcript
            },
        ];
        for other in tampered {
            assert!(!verify(&ephemeral, &other, &mac), "{other:?}");
        }
        let mut flipped = mac;
        flipped[31] ^= 1;
        assert!(!verify(&ephemeral, &transcript, &flipped));
        assert!(!verify(&ephemeral, &transcript, &mac[..31]));
    }

    #[test]
    fn a_proof_for_another_ephemeral_key_is_refused() {
        let (agent, _, transcript) = exchange();
        let mac = prove(&agent, &transcript);
        let other = StaticSecret::random_from_rng(&mut UnwrapErr(SysRng));
        assert!(!verify(&other, &transcript, &mac));
    }

    #[test]
    fn a_low_order_agent_key_is_refused() {
        // The all-zero point: X25519 with it is zero whatever the scalar, so anyone could
        // compute the MAC.
        let (_, ephemeral, transcript) = exchange();
        let transcript = Transcript {
            agent_public: [0; 32],
            ..transcript
        };
        let anyone = mac(&[0; 32], &transcript);
        assert!(!verify(&ephemeral, &transcript, &anyone));
    }
}
