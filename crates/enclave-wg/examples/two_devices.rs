//! Two WireGuard devices talking in memory: the sans-IO core with no socket, no TUN and no
//! thread.
//!
//! `cargo run -p enclave-wg --example two_devices`
//!
//! Alice and Bob each get a [`Device`] and know each other's public key. Alice seals an IP
//! packet for Bob; as no session exists yet, the core queues it and starts a handshake. The
//! "network" here is a queue of datagrams that this program carries from one device to the
//! other, exactly where a real shell would call `send_to` and `recv_from`. When the handshake
//! is done the queued packet goes out, Bob opens it and hands it to his "TUN device" (here:
//! a check that it is the packet Alice sent), and Bob answers.
//!
//! A shell of your own does the same with real I/O: read packets from a TUN device and call
//! [`Device::encapsulate`], receive datagrams and call [`Device::decapsulate`], send whatever
//! [`Device::poll_transmit`] gives, and call [`Device::handle_timeout`] at
//! [`Device::poll_timeout`]. `enclave-dataplane` is that shell for Linux.

// An I/O shell around the core, not part of it: it may read the clock.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use enclave_wg::{Decapsulated, Device, Encapsulated, PeerConfig, PrivateKey, PublicKey};

/// A datagram in flight between the two devices.
struct Datagram {
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// An IPv4/ICMP echo request from `src` to `dst` with a payload; checksums are left zero,
/// which the WireGuard core does not look at.
fn ip_packet(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
    packet[2..4].copy_from_slice(&u16::try_from(total).expect("small packet").to_be_bytes());
    packet.extend_from_slice(&src);
    packet.extend_from_slice(&dst);
    packet.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
    packet.extend_from_slice(payload);
    packet
}

fn key_pair() -> (PrivateKey, PublicKey) {
    let mut bytes = [0u8; 32];
    rand_core::Rng::fill_bytes(&mut rand_core::UnwrapErr(getrandom::SysRng), &mut bytes);
    let private = PrivateKey::from_bytes(bytes);
    let public = private.public_key();
    (private, public)
}

fn device(private: PrivateKey, peer: PublicKey, endpoint: SocketAddr, allowed: &str) -> Device {
    let mut device = Device::new(private, rand_core::UnwrapErr(getrandom::SysRng));
    device.upsert_peer(PeerConfig {
        public_key: peer,
        preshared_key: None,
        endpoint: Some(endpoint),
        allowed_ips: vec![allowed.parse().expect("a valid prefix")],
        persistent_keepalive: None,
    });
    device
}

/// Moves every datagram each device wants to send onto the wire.
fn collect(device: &mut Device, me: SocketAddr, wire: &mut VecDeque<Datagram>) {
    while let Some(transmit) = device.poll_transmit() {
        wire.push_back(Datagram {
            from: me,
            to: transmit.dst,
            bytes: transmit.payload,
        });
    }
}

fn main() {
    let alice_addr: SocketAddr = "192.0.2.1:51820".parse().expect("address");
    let bob_addr: SocketAddr = "192.0.2.2:51820".parse().expect("address");
    let (alice_key, alice_public) = key_pair();
    let (bob_key, bob_public) = key_pair();
    let mut alice = device(alice_key, bob_public, bob_addr, "10.0.0.2/32");
    let mut bob = device(bob_key, alice_public, alice_addr, "10.0.0.1/32");

    let hello = ip_packet([10, 0, 0, 1], [10, 0, 0, 2], b"hello, Bob");
    let mut wire = VecDeque::new();
    let mut out = vec![0u8; 2048];

    // Alice "reads" the packet from her TUN device: no session yet, so it waits for a handshake.
    match alice.encapsulate(&hello, Instant::now(), SystemTime::now(), &mut out) {
        Encapsulated::Queued { .. } => println!("alice: packet queued, handshake started"),
        other => panic!("expected the packet to wait for a handshake, got {other:?}"),
    }
    collect(&mut alice, alice_addr, &mut wire);

    // Carry datagrams until the wire is quiet.
    let mut delivered = Vec::new();
    while let Some(datagram) = wire.pop_front() {
        let (device, me, name) = if datagram.to == bob_addr {
            (&mut bob, bob_addr, "bob")
        } else {
            (&mut alice, alice_addr, "alice")
        };
        let now = Instant::now();
        match device.decapsulate(
            datagram.from,
            &datagram.bytes,
            now,
            SystemTime::now(),
            &mut out,
        ) {
            Decapsulated::Deliver { peer, len } => {
                println!("{name}: {len}-byte packet from {peer} for the TUN device");
                delivered.push((name, out[..len].to_vec()));
            }
            Decapsulated::Consumed { .. } => {
                println!(
                    "{name}: {}-byte protocol message handled",
                    datagram.bytes.len()
                );
            }
            other => panic!("{name}: unexpected {other:?}"),
        }
        while let Some(event) = device.poll_event() {
            println!("{name}: {event:?}");
        }
        collect(device, me, &mut wire);

        // Bob answers the first packet he receives.
        if name == "bob" && delivered.len() == 1 {
            let reply = ip_packet([10, 0, 0, 2], [10, 0, 0, 1], b"hello, Alice");
            match bob.encapsulate(&reply, now, SystemTime::now(), &mut out) {
                Encapsulated::Send { dst, len, .. } => wire.push_back(Datagram {
                    from: bob_addr,
                    to: dst,
                    bytes: out[..len].to_vec(),
                }),
                other => panic!("bob: expected to send at once, got {other:?}"),
            }
        }
    }

    assert_eq!(delivered.len(), 2, "both packets arrive");
    assert_eq!(delivered[0], ("bob", hello));
    assert_eq!(&delivered[1].1[28..], b"hello, Alice");
    println!("both packets arrived intact");
}
