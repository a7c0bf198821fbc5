//! The Noise_IKpsk2 handshake of the WireGuard paper, section 5.4.2 and 5.4.3,
//! as pure functions over message buffers. MACs are added by the caller
//! (`cookie` module); indices and the choice of peer belong to the device.

use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::crypto::{aead_cipher, aead_open, aead_seal, dh, hash, kdf, TAG_LEN, TIMESTAMP_LEN};
use crate::keys::{PresharedKey, PublicKey};
use crate::messages::{initiation, read_32, response, INITIATION, RESPONSE};

/// The Noise protocol name, hashed into the initial chaining key.
pub(crate) const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// The WireGuard identifier, hashed into the initial transcript hash.
pub(crate) const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";

/// `C_i := HASH(CONSTRUCTION)`.
pub(crate) fn initial_chaining_key() -> [u8; 32] {
    hash(&[CONSTRUCTION])
}

/// `H_i := HASH(C_i || IDENTIFIER)`.
pub(crate) fn initial_hash() -> [u8; 32] {
    hash(&[&initial_chaining_key(), IDENTIFIER])
}

/// Our static key pair with what can be computed once from it.
#[derive(ZeroizeOnDrop)]
pub(crate) struct Identity {
    pub(crate) private: StaticSecret,
    #[zeroize(skip)]
    pub(crate) public: PublicKey,
    /// `HASH(H_i || S_pub)`: the transcript hash of initiations sent to us.
    responder_hash: [u8; 32],
    initial_chaining_key: [u8; 32],
}

impl Identity {
    pub(crate) fn new(private: [u8; 32]) -> Self {
        let private = StaticSecret::from(private);
        let public = PublicKey(x25519_dalek::PublicKey::from(&private).to_bytes());
        let initial_chaining_key = initial_chaining_key();
        let responder_hash = hash(&[&initial_hash(), &public.0]);
        Self {
            private,
            public,
            responder_hash,
            initial_chaining_key,
        }
    }
}

/// What we keep per peer for handshakes with it.
#[derive(ZeroizeOnDrop)]
pub(crate) struct PeerStatic {
    #[zeroize(skip)]
    pub(crate) public: PublicKey,
    /// `DH(S_priv, S_peer)`, precomputed; `None` if the peer's key has small order.
    static_static: Option<[u8; 32]>,
    /// `HASH(H_i || S_peer)`: the transcript hash of initiations we send to it.
    initiator_hash: [u8; 32],
    /// `Q`, all zeros without a preshared key.
    pub(crate) preshared_key: [u8; 32],
}

impl PeerStatic {
    pub(crate) fn new(
        identity: &Identity,
        public: PublicKey,
        preshared_key: Option<&PresharedKey>,
    ) -> Self {
        Self {
            public,
            static_static: dh(&identity.private, &public.0).map(|shared| *shared),
            initiator_hash: hash(&[&initial_hash(), &public.0]),
            preshared_key: preshared_key.map_or([0; 32], |key| *key.as_bytes()),
        }
    }
}

/// The initiator's state between sending an initiation and receiving the response.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct InitiatorState {
    chaining_key: ChainingKey,
    hash: [u8; 32],
    /// Wiped by its own `Drop` (x25519-dalek's `ZeroizeOnDrop`; it has no `Zeroize`).
    #[zeroize(skip)]
    ephemeral: StaticSecret,
}

/// An initiation whose static key decrypted; the peer is not yet looked up.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct ReceivedInitiation {
    chaining_key: ChainingKey,
    hash: [u8; 32],
    pub(crate) remote_ephemeral: [u8; 32],
    pub(crate) remote_static: [u8; 32],
}

/// An initiation from a known peer, authenticated, with its timestamp.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct AcceptedInitiation {
    chaining_key: ChainingKey,
    hash: [u8; 32],
    remote_ephemeral: [u8; 32],
    pub(crate) timestamp: [u8; TIMESTAMP_LEN],
}

/// The transport keys a completed handshake yields.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct TransportKeys {
    pub(crate) send: [u8; 32],
    pub(crate) receive: [u8; 32],
}

/// The running chaining key `C` of the paper's section 5.4, zeroized when dropped.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct ChainingKey([u8; 32]);

impl ChainingKey {
    /// `C := KDF1(C, input)`.
    fn mix(&mut self, input: &[u8]) {
        let mut out = kdf::<1>(&self.0, input);
        self.0 = out[0];
        out.zeroize();
    }

    /// `(C, k) := KDF2(C, input)`; returns the AEAD key `k`.
    fn mix_key(&mut self, input: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut out = kdf::<2>(&self.0, input);
        self.0 = out[0];
        let key = Zeroizing::new(out[1]);
        out.zeroize();
        key
    }

    /// `(C, τ, k) := KDF3(C, Q)`; returns `τ` and `k`.
    fn mix_psk(&mut self, psk: &[u8; 32]) -> (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>) {
        let mut out = kdf::<3>(&self.0, psk);
        self.0 = out[0];
        let result = (Zeroizing::new(out[1]), Zeroizing::new(out[2]));
        out.zeroize();
        result
    }

    /// `(T1, T2) := KDF2(C, ε)`: the transport keys (section 5.4.5).
    fn split(&self, initiator: bool) -> TransportKeys {
        let mut out = kdf::<2>(&self.0, &[]);
        let keys = if initiator {
            TransportKeys {
                send: out[0],
                receive: out[1],
            }
        } else {
            TransportKeys {
                send: out[1],
                receive: out[0],
            }
        };
        out.zeroize();
        keys
    }
}

/// Writes a handshake initiation (all but the MACs) with `sender` as our index.
pub(crate) fn create_initiation(
    identity: &Identity,
    peer: &PeerStatic,
    sender: u32,
    ephemeral: StaticSecret,
    timestamp: [u8; TIMESTAMP_LEN],
    msg: &mut [u8; initiation::LEN],
) -> Option<InitiatorState> {
    let static_static = peer.static_static.as_ref()?;
    msg.fill(0);
    msg[..4].copy_from_slice(&INITIATION.to_le_bytes());
    msg[initiation::SENDER..initiation::SENDER + 4].copy_from_slice(&sender.to_le_bytes());

    let ephemeral_public = x25519_dalek::PublicKey::from(&ephemeral).to_bytes();
    let mut chaining_key = ChainingKey(identity.initial_chaining_key);
    chaining_key.mix(&ephemeral_public);
    msg[initiation::EPHEMERAL..initiation::STATIC].copy_from_slice(&ephemeral_public);
    let mut hash_state = hash(&[&peer.initiator_hash, &ephemeral_public]);

    let key = chaining_key.mix_key(&dh(&ephemeral, &peer.public.0)?[..]);
    let field = &mut msg[initiation::STATIC..initiation::TIMESTAMP];
    field[..32].copy_from_slice(&identity.public.0);
    aead_seal(&aead_cipher(&key), 0, field, &hash_state);
    hash_state = hash(&[&hash_state, field]);

    let key = chaining_key.mix_key(static_static);
    let field = &mut msg[initiation::TIMESTAMP..initiation::MAC1];
    field[..TIMESTAMP_LEN].copy_from_slice(&timestamp);
    aead_seal(&aead_cipher(&key), 0, field, &hash_state);
    hash_state = hash(&[&hash_state, field]);

    Some(InitiatorState {
        chaining_key,
        hash: hash_state,
        ephemeral,
    })
}

/// Decrypts the initiator's static key: the first half of consuming an initiation.
pub(crate) fn receive_initiation(identity: &Identity, msg: &[u8]) -> Option<ReceivedInitiation> {
    if msg.len() != initiation::LEN {
        return None;
    }
    let remote_ephemeral = read_32(msg, initiation::EPHEMERAL)?;
    let mut chaining_key = ChainingKey(identity.initial_chaining_key);
    chaining_key.mix(&remote_ephemeral);
    let hash_state = hash(&[&identity.responder_hash, &remote_ephemeral]);
    let key = chaining_key.mix_key(&dh(&identity.private, &remote_ephemeral)?[..]);
    let sealed = &msg[initiation::STATIC..initiation::TIMESTAMP];
    let mut field = [0u8; 32 + TAG_LEN];
    field.copy_from_slice(sealed);
    if !aead_open(&aead_cipher(&key), 0, &mut field, &hash_state) {
        return None;
    }
    let mut remote_static = [0u8; 32];
    remote_static.copy_from_slice(&field[..32]);
    Some(ReceivedInitiation {
        chaining_key,
        hash: hash(&[&hash_state, sealed]),
        remote_ephemeral,
        remote_static,
    })
}

/// Authenticates the initiator with the static-static DH and decrypts its
/// timestamp: the second half of consuming an initiation.
pub(crate) fn accept_initiation(
    received: &ReceivedInitiation,
    peer: &PeerStatic,
    msg: &[u8],
) -> Option<AcceptedInitiation> {
    let static_static = peer.static_static.as_ref()?;
    let mut chaining_key = ChainingKey(received.chaining_key.0);
    let key = chaining_key.mix_key(static_static);
    let sealed = msg.get(initiation::TIMESTAMP..initiation::MAC1)?;
    let mut field = [0u8; TIMESTAMP_LEN + TAG_LEN];
    field.copy_from_slice(sealed);
    if !aead_open(&aead_cipher(&key), 0, &mut field, &received.hash) {
        return None;
    }
    let mut timestamp = [0u8; TIMESTAMP_LEN];
    timestamp.copy_from_slice(&field[..TIMESTAMP_LEN]);
    Some(AcceptedInitiation {
        chaining_key,
        hash: hash(&[&received.hash, sealed]),
        remote_ephemeral: received.remote_ephemeral,
        timestamp,
    })
}

/// Writes the response to an accepted initiation (all but the MACs) and
/// derives the responder's transport keys.
pub(crate) fn create_response(
    accepted: &AcceptedInitiation,
    peer: &PeerStatic,
    sender: u32,
    receiver: u32,
    ephemeral: StaticSecret,
    msg: &mut [u8; response::LEN],
) -> Option<TransportKeys> {
    msg.fill(0);
    msg[..4].copy_from_slice(&RESPONSE.to_le_bytes());
    msg[response::SENDER..response::SENDER + 4].copy_from_slice(&sender.to_le_bytes());
    msg[response::RECEIVER..response::RECEIVER + 4].copy_from_slice(&receiver.to_le_bytes());

    let ephemeral_public = x25519_dalek::PublicKey::from(&ephemeral).to_bytes();
    msg[response::EPHEMERAL..response::EMPTY].copy_from_slice(&ephemeral_public);
    let mut chaining_key = ChainingKey(accepted.chaining_key.0);
    chaining_key.mix(&ephemeral_public);
    let hash_state = hash(&[&accepted.hash, &ephemeral_public]);
    chaining_key.mix(&dh(&ephemeral, &accepted.remote_ephemeral)?[..]);
    chaining_key.mix(&dh(&ephemeral, &peer.public.0)?[..]);
    let (tau, key) = chaining_key.mix_psk(&peer.preshared_key);
    let hash_state = hash(&[&hash_state, &tau[..]]);
    let field = &mut msg[response::EMPTY..response::MAC1];
    aead_seal(&aead_cipher(&key), 0, field, &hash_state);
    Some(chaining_key.split(false))
}

/// Consumes a response to our initiation and derives the initiator's transport keys.
pub(crate) fn consume_response(
    state: &InitiatorState,
    identity: &Identity,
    peer: &PeerStatic,
    msg: &[u8],
) -> Option<TransportKeys> {
    if msg.len() != response::LEN {
        return None;
    }
    let remote_ephemeral = read_32(msg, response::EPHEMERAL)?;
    let mut chaining_key = ChainingKey(state.chaining_key.0);
    chaining_key.mix(&remote_ephemeral);
    let hash_state = hash(&[&state.hash, &remote_ephemeral]);
    chaining_key.mix(&dh(&state.ephemeral, &remote_ephemeral)?[..]);
    chaining_key.mix(&dh(&identity.private, &remote_ephemeral)?[..]);
    let (tau, key) = chaining_key.mix_psk(&peer.preshared_key);
    let hash_state = hash(&[&hash_state, &tau[..]]);
    let mut field = [0u8; TAG_LEN];
    field.copy_from_slice(&msg[response::EMPTY..response::MAC1]);
    if !aead_open(&aead_cipher(&key), 0, &mut field, &hash_state) {
        return None;
    }
    Some(chaining_key.split(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::to_hex;

    #[test]
    fn construction_constants_known_answer() {
        // The values wireguard-go, the Linux module and boringtun precompute.
        assert_eq!(
            to_hex(&initial_chaining_key()),
            "60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36"
        );
        assert_eq!(
            to_hex(&initial_hash()),
            "2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3"
        );
    }

    fn secret(byte: u8) -> StaticSecret {
        StaticSecret::from([byte; 32])
    }

    #[test]
    fn both_sides_derive_matching_keys_with_and_without_psk() {
        for psk in [None, Some(PresharedKey::from_bytes([5u8; 32]))] {
            let psk = psk.as_ref();
            let initiator = Identity::new([1; 32]);
            let responder = Identity::new([2; 32]);
            let to_responder = PeerStatic::new(&initiator, responder.public, psk);
            let to_initiator = PeerStatic::new(&responder, initiator.public, psk);
            let mut init = [0u8; initiation::LEN];
            let state =
                create_initiation(&initiator, &to_responder, 7, secret(3), [9; 12], &mut init)
                    .expect("initiation");
            let received = receive_initiation(&responder, &init).expect("static decrypts");
            assert_eq!(received.remote_static, initiator.public.0);
            let accepted =
                accept_initiation(&received, &to_initiator, &init).expect("authenticated");
            assert_eq!(accepted.timestamp, [9; 12]);
            let mut resp = [0u8; response::LEN];
            let responder_keys =
                create_response(&accepted, &to_initiator, 8, 7, secret(4), &mut resp)
                    .expect("response");
            let initiator_keys = consume_response(&state, &initiator, &to_responder, &resp)
                .expect("response consumed");
            assert_eq!(initiator_keys.send, responder_keys.receive);
            assert_eq!(initiator_keys.receive, responder_keys.send);
            assert_ne!(initiator_keys.send, initiator_keys.receive);
        }
    }

    #[test]
    fn psk_mismatch_fails_the_response() {
        let initiator = Identity::new([1; 32]);
        let responder = Identity::new([2; 32]);
        let to_responder = PeerStatic::new(
            &initiator,
            responder.public,
            Some(&PresharedKey::from_bytes([1; 32])),
        );
        let to_initiator = PeerStatic::new(&responder, initiator.public, None);
        let mut init = [0u8; initiation::LEN];
        let state = create_initiation(&initiator, &to_responder, 7, secret(3), [9; 12], &mut init)
            .expect("initiation");
        let received = receive_initiation(&responder, &init).expect("static decrypts");
        let accepted = accept_initiation(&received, &to_initiator, &init).expect("authenticated");
        let mut resp = [0u8; response::LEN];
        create_response(&accepted, &to_initiator, 8, 7, secret(4), &mut resp).expect("response");
        assert!(consume_response(&state, &initiator, &to_responder, &resp).is_none());
    }

    #[test]
    fn initiation_for_someone_else_does_not_decrypt() {
        let initiator = Identity::new([1; 32]);
        let responder = Identity::new([2; 32]);
        let bystander = Identity::new([6; 32]);
        let to_responder = PeerStatic::new(&initiator, responder.public, None);
        let mut init = [0u8; initiation::LEN];
        create_initiation(&initiator, &to_responder, 7, secret(3), [9; 12], &mut init)
            .expect("initiation");
        assert!(receive_initiation(&bystander, &init).is_none());
    }
}
