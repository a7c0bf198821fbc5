//! Test-only fixtures shared across crates, so that each exists once.
//!
//! What is here: [`TestRng`], the seeded generator that the protocol tests' simulator, the
//! vector-capture example and (by design) the fuzz targets draw keys and losses from, so that a
//! run replays from its seed; [`pair`], two WireGuard devices with a session between them (the
//! benches' and fuzz targets' [`Pair`], defined in `enclave-wg` so that its unit tests share
//! it); and [`flood::Flooder`], the handshake flooder of the protocol's flood tests and the
//! flood scenario.
//!
//! What is not: anything a library uses. This crate is only ever a `dev-dependency` (or a
//! dependency of a test-only package); it is a crate of its own, rather than a module copied
//! into each test directory, because its users live in different packages (integration tests,
//! examples and the fuzz package cannot share a `tests/` module).

#![warn(missing_docs)]

pub mod flood;

use rand_core::Rng as _;

pub use enclave_wg::testing::{ipv4, Pair};

/// Devices A and B with a session between them (see [`Pair`]), drawing from the seeded
/// generators `TestRng(1)` and `TestRng(2)`.
pub fn pair() -> Pair {
    Pair::established(TestRng(1), TestRng(2))
}

/// A seeded generator (splitmix64). Test-only: marked `CryptoRng` because the WireGuard device
/// demands one; determinism is what tests need, and this is never a source of real keys.
#[derive(Debug, Clone)]
pub struct TestRng(pub u64);

impl rand_core::TryRng for TestRng {
    type Error = core::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok((self.next_u64() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Ok(z ^ (z >> 31))
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Self::Error> {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for TestRng {}

#[cfg(test)]
mod tests {
    use rand_core::Rng;

    use super::TestRng;

    #[test]
    fn the_same_seed_gives_the_same_stream_and_another_seed_another() {
        let (mut a, mut b, mut c) = (TestRng(7), TestRng(7), TestRng(8));
        let mut first = [0u8; 13];
        let mut second = [0u8; 13];
        a.fill_bytes(&mut first);
        b.fill_bytes(&mut second);
        assert_eq!(first, second);
        assert_ne!(a.next_u64(), c.next_u64());
    }
}
