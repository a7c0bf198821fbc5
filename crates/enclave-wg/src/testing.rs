//! Test support: two devices that know each other, on a virtual clock ([`Pair`]).
//!
//! Compiled for this crate's own unit tests and with the `testing` feature, which only
//! `enclave-testkit` turns on (so benches, integration tests and fuzz targets reach it as
//! `enclave_testkit::Pair`); never part of a build that ships. It lives here rather than in
//! the testkit because the unit tests reach into a device's sessions, and a fixture outside
//! the crate would hold the other build's `Device`.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand_core::CryptoRng;

use crate::{Device, Encapsulated, Event, PeerConfig, PrivateKey};

/// Devices A (private key `[1; 32]`, tunnel address 10.0.0.1, at 192.0.2.1:51820) and B
/// (`[2; 32]`, 10.0.0.2, at 192.0.2.2:51820), each the other's only peer, with one session
/// between them. The clocks move only when a test moves them.
#[derive(Debug)]
pub struct Pair {
    /// The initiator of the first handshake.
    pub a: Device,
    /// The responder.
    pub b: Device,
    /// Where B receives A's datagrams from.
    pub a_addr: SocketAddr,
    /// Where A receives B's datagrams from.
    pub b_addr: SocketAddr,
    /// The virtual monotonic clock.
    pub now: Instant,
    /// The virtual wall clock (handshake timestamps).
    pub wall: SystemTime,
}

impl Pair {
    /// Configures both devices with the given generators, queues a packet from A to B and
    /// exchanges messages until the handshake is complete on both sides.
    ///
    /// # Panics
    /// If the handshake does not complete: a fixture that is not what it says is a failed
    /// test.
    pub fn established(
        rng_a: impl CryptoRng + Send + 'static,
        rng_b: impl CryptoRng + Send + 'static,
    ) -> Self {
        let a_addr = SocketAddr::from(([192, 0, 2, 1], 51820));
        let b_addr = SocketAddr::from(([192, 0, 2, 2], 51820));
        let mut a = Device::new(PrivateKey::from_bytes([1; 32]), rng_a);
        let mut b = Device::new(PrivateKey::from_bytes([2; 32]), rng_b);
        let (a_key, b_key) = (a.public_key(), b.public_key());
        for (device, peer, endpoint, allowed) in [
            (&mut a, b_key, b_addr, "10.0.0.2/32"),
            (&mut b, a_key, a_addr, "10.0.0.1/32"),
        ] {
            device.upsert_peer(PeerConfig {
                public_key: peer,
                endpoint: Some(endpoint),
                allowed_ips: vec![allowed.parse().expect("a literal network")],
                ..PeerConfig::default()
            });
        }
        let mut pair = Self {
            a,
            b,
            a_addr,
            b_addr,
            now: clock_start(),
            wall: UNIX_EPOCH + Duration::from_secs(1_790_000_000),
        };
        let mut out = vec![0u8; 2048];
        let queued = pair
            .a
            .encapsulate(&ipv4(100), pair.now, pair.wall, &mut out);
        assert_eq!(queued, Encapsulated::Queued { peer: b_key });
        assert_eq!(pair.exchange(), 2, "both sides complete the handshake");
        pair
    }

    /// Carries datagrams back and forth until neither side has any to send, then drains both
    /// sides' events; returns how many of them were completed handshakes.
    pub fn exchange(&mut self) -> usize {
        let mut out = vec![0u8; 2048];
        loop {
            let mut moved = false;
            while let Some(transmit) = self.a.poll_transmit() {
                let (now, wall) = (self.now, self.wall);
                self.b
                    .decapsulate(self.a_addr, &transmit.payload, now, wall, &mut out);
                moved = true;
            }
            while let Some(transmit) = self.b.poll_transmit() {
                let (now, wall) = (self.now, self.wall);
                self.a
                    .decapsulate(self.b_addr, &transmit.payload, now, wall, &mut out);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        let mut completed = 0;
        for device in [&mut self.a, &mut self.b] {
            while let Some(event) = device.poll_event() {
                completed += usize::from(matches!(event, Event::HandshakeCompleted { .. }));
            }
        }
        completed
    }
}

/// An IPv4 packet of `len` bytes (at least 20) from A's tunnel address 10.0.0.1 to B's
/// 10.0.0.2, its payload filled with `0xa5`.
pub fn ipv4(len: usize) -> Vec<u8> {
    let mut packet = vec![0xa5u8; len];
    packet[0] = 0x45;
    packet[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    packet[12..16].copy_from_slice(&[10, 0, 0, 1]);
    packet[16..20].copy_from_slice(&[10, 0, 0, 2]);
    packet
}

/// The origin of a virtual clock. `Instant` has no constructor, so the fixture reads the real
/// clock once and tests only add durations to it.
#[allow(clippy::disallowed_methods)]
fn clock_start() -> Instant {
    Instant::now()
}
