//! What both fuzz targets share: a seeded generator and device set-up.

// Each target uses a different part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use enclave_wg::rand_core::{CryptoRng, Error, RngCore};
use enclave_wg::{Device, PeerConfig, PrivateKey};

/// A seeded generator (splitmix64), so that a crash replays exactly.
pub struct FuzzRng(pub u64);

impl RngCore for FuzzRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

// Fuzzing only: determinism matters more than secrecy here.
impl CryptoRng for FuzzRng {}

pub const A_ADDR: &str = "192.0.2.1:51820";
pub const B_ADDR: &str = "192.0.2.2:51820";

pub fn addr(text: &str) -> SocketAddr {
    text.parse().expect("a literal socket address")
}

pub fn clocks() -> (Instant, SystemTime) {
    (
        Instant::now(),
        UNIX_EPOCH + Duration::from_secs(1_790_000_000),
    )
}

/// Device `seed` with device `other` as its only peer (10.0.0.`other`/32).
pub fn device(seed: u8, other: u8, other_addr: &str) -> Device {
    let mut device = Device::new(PrivateKey::from_bytes([seed; 32]), FuzzRng(u64::from(seed)));
    device.upsert_peer(PeerConfig {
        public_key: PrivateKey::from_bytes([other; 32]).public_key(),
        preshared_key: None,
        endpoint: Some(addr(other_addr)),
        allowed_ips: vec![format!("10.0.0.{other}/32")
            .parse()
            .expect("a literal network")],
        persistent_keepalive: None,
    });
    device
}
