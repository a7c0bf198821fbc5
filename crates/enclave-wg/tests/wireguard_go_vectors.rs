//! Known-answer test against wireguard-go v0.0.20220316.
//!
//! The datagrams (module `vectors`) were captured once from wireguard-go talking to two of our
//! `Device`s with the seeded `TestRng` of the simulator, in three exchanges: we initiate; it
//! initiates; it initiates while our device is under load and gets a cookie reply.
//!
//! Replaying the same inputs with the same seed must reproduce our bytes
//! exactly and accept wireguard-go's, which proves the handshake, the key
//! derivation, the transport format and the padding interoperate. (If a
//! change alters the order in which the device draws random numbers, our
//! initiation and response change and the vectors must be captured again.)

mod sim;
mod vectors;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use enclave_wg::{
    Decapsulated, Device, DropReason, Encapsulated, PeerConfig, PrivateKey, PublicKey,
};
use sim::TestRng;
use vectors::*;

/// Our device (private key `[key_byte; 32]`, generator seeded with `rng_seed`) with
/// wireguard-go as its one peer at 127.0.0.1:51820, on the virtual clock of the capture.
struct Replay {
    device: Device,
    theirs: PublicKey,
    wg_go: SocketAddr,
    now: Instant,
    wall: SystemTime,
    out: Vec<u8>,
}

impl Replay {
    fn new(key_byte: u8, rng_seed: u64, knows_endpoint: bool) -> Self {
        let theirs = PublicKey::from_base64(WIREGUARD_GO_PUBLIC).expect("key");
        let wg_go: SocketAddr = "127.0.0.1:51820".parse().expect("address");
        let mut device = Device::new(PrivateKey::from_bytes([key_byte; 32]), TestRng(rng_seed));
        device.upsert_peer(PeerConfig {
            public_key: theirs,
            preshared_key: None,
            endpoint: knows_endpoint.then_some(wg_go),
            allowed_ips: vec!["10.99.0.1/32".parse().expect("network")],
            persistent_keepalive: None,
        });
        Self {
            device,
            theirs,
            wg_go,
            now: clock_start(),
            wall: UNIX_EPOCH + Duration::from_secs(1_790_000_000),
            out: vec![0u8; 2048],
        }
    }

    /// Gives the device a datagram from `from`.
    fn receive_from(&mut self, from: SocketAddr, datagram: &[&str]) -> Decapsulated {
        self.device
            .decapsulate(from, &bytes(datagram), self.now, self.wall, &mut self.out)
    }

    /// Gives the device a datagram from wireguard-go.
    fn receive(&mut self, datagram: &[&str]) -> Decapsulated {
        self.receive_from(self.wg_go, datagram)
    }

    /// The device's next datagram, which must go to wireguard-go and be `expected`.
    fn sends(&mut self, what: &str, expected: &[&str]) {
        let transmit = self
            .device
            .poll_transmit()
            .unwrap_or_else(|| panic!("{what}"));
        assert_eq!(transmit.dst, self.wg_go, "{what}");
        assert_eq!(transmit.payload, bytes(expected), "{what}");
    }

    /// wireguard-go's handshake message `datagram` must be taken in, as from wireguard-go.
    fn consumes(&mut self, datagram: &[&str]) {
        let consumed = self.receive(datagram);
        assert_eq!(
            consumed,
            Decapsulated::Consumed {
                peer: Some(self.theirs)
            }
        );
    }

    /// wireguard-go's `transport` datagram must deliver the packet `plain`.
    fn delivers(&mut self, transport: &[&str], plain: &[&str]) {
        let delivered = self.receive(transport);
        let expected = bytes(plain);
        assert_eq!(
            delivered,
            Decapsulated::Deliver {
                peer: self.theirs,
                len: expected.len()
            }
        );
        assert_eq!(&self.out[..expected.len()], &expected[..]);
    }

    /// The endpoint the device has learnt for wireguard-go.
    fn learnt_endpoint(&self) -> Option<SocketAddr> {
        self.device
            .peer(&self.theirs)
            .and_then(|info| info.endpoint)
    }
}

#[test]
fn we_initiate_and_wireguard_go_answers() {
    let mut replay = Replay::new(0x11, 7, true);
    let (now, wall) = (replay.now, replay.wall);
    let queued = replay
        .device
        .encapsulate(&bytes(ECHO_REQUEST), now, wall, &mut replay.out);
    assert_eq!(
        queued,
        Encapsulated::Queued {
            peer: replay.theirs
        }
    );
    replay.sends("an initiation", OUR_INITIATION);

    replay.consumes(THEIR_RESPONSE);
    replay.sends("the queued echo request", OUR_TRANSPORT);
    replay.delivers(THEIR_TRANSPORT, ECHO_REPLY);
}

#[test]
fn wireguard_go_initiates_and_we_answer() {
    let mut replay = Replay::new(0x33, 8, false);
    replay.consumes(THEIR_INITIATION);
    replay.sends("a response", OUR_RESPONSE);
    replay.delivers(THEIR_TRANSPORT_2, THEIR_ECHO_REQUEST);
    assert_eq!(replay.learnt_endpoint(), Some(replay.wg_go));

    // The same initiation again is a replay.
    let replayed = replay.receive(THEIR_INITIATION);
    assert_eq!(replayed, Decapsulated::Dropped(DropReason::StaleTimestamp));
}

#[test]
fn wireguard_go_honours_our_cookie_reply() {
    let mut replay = Replay::new(0x33, 8, false);
    replay.device.set_under_load(true);

    let first = replay.receive(LOADED_FIRST_INITIATION);
    assert_eq!(first, Decapsulated::Dropped(DropReason::CookieRequired));
    replay.sends("a cookie reply", OUR_COOKIE_REPLY);
    assert_eq!(replay.learnt_endpoint(), None, "nothing learnt");

    // wireguard-go's retry carries mac2 made with our cookie.
    replay.consumes(LOADED_SECOND_INITIATION);
    replay.sends("a response", LOADED_OUR_RESPONSE);
    replay.delivers(LOADED_THEIR_TRANSPORT, LOADED_ECHO_REQUEST);

    // From another address the cookie is not valid.
    let elsewhere = "127.0.0.1:51821".parse().expect("address");
    let moved = replay.receive_from(elsewhere, LOADED_SECOND_INITIATION);
    assert_eq!(moved, Decapsulated::Dropped(DropReason::CookieRequired));
}

/// The origin of a test's virtual clock: read once, then only moved by the test.
#[allow(clippy::disallowed_methods)]
fn clock_start() -> Instant {
    Instant::now()
}
