//! What both fuzz targets share: a seeded generator and device set-up.
//!
//! Building a `Device` costs X25519 operations (the static public key, then the static-static
//! Diffie-Hellman of each peer), and a handshake several more: done per input, they would
//! dominate each run and leave little time for the parsing and state that inputs can reach.
//! So each target builds its devices once per process (in a `thread_local`), brings them into
//! an interesting state (a live session), and lets the inputs play against that state: what an
//! input can change without keys (replay windows, counters, cookie and timer state) carries
//! over to the next, which is itself worth fuzzing. A crash normally reproduces from its
//! artifact alone; when it does not, run the target over the corpus and the artifact together.

// Each target uses a different part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use enclave_wg::{Device, PeerConfig, PrivateKey, PublicKey};

/// The protocol tests' seeded generator (crate `enclave-testkit`), so that a crash replays
/// exactly and the known-answer vectors of `tests/wireguard_go_vectors.rs` apply.
pub use enclave_testkit::TestRng as FuzzRng;

pub fn addr(text: &str) -> SocketAddr {
    text.parse().expect("a literal socket address")
}

/// The clocks at the start of the run: an `Instant` fixed once per process, and a wall clock
/// that never moves (handshake timestamps are compared with the peer's own, not with it).
pub fn clocks() -> (Instant, SystemTime) {
    use std::sync::OnceLock;
    static START: OnceLock<Instant> = OnceLock::new();
    (
        *START.get_or_init(Instant::now),
        UNIX_EPOCH + Duration::from_secs(1_790_000_000),
    )
}

/// A device with private key `[key; 32]`, generator seed `seed`, and one peer.
pub fn device(
    key: u8,
    seed: u64,
    peer: PublicKey,
    endpoint: Option<&str>,
    allowed: &str,
) -> Device {
    let mut device = Device::new(PrivateKey::from_bytes([key; 32]), FuzzRng(seed));
    device.upsert_peer(PeerConfig {
        public_key: peer,
        preshared_key: None,
        endpoint: endpoint.map(addr),
        allowed_ips: vec![allowed.parse().expect("a literal network")],
        persistent_keepalive: None,
    });
    device
}

pub fn public(key: u8) -> PublicKey {
    PrivateKey::from_bytes([key; 32]).public_key()
}

/// The IPv4 source address of a delivered packet.
pub fn ipv4_source(packet: &[u8]) -> Option<[u8; 4]> {
    (packet.len() >= 20 && packet[0] >> 4 == 4)
        .then(|| [packet[12], packet[13], packet[14], packet[15]])
}
