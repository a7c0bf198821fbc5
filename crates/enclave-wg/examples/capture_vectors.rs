//! Re-captures the wireguard-go vectors of `tests/wireguard_go_vectors.rs`.
//!
//! Not a test: it needs root, a TUN device and wireguard-go, and is run by
//! `examples/capture-vectors.sh` inside a network namespace of its own,
//! where wireguard-go listens on 127.0.0.1:51820. It drives a `Device` over
//! a plain UDP socket with the same seeded generator as the tests and
//! prints every datagram in hex.
//!
//! Usage: `capture_vectors pubkeys` | `capture_vectors initiator|responder|responder_load WG_PUBLIC_KEY`.

// An I/O tool around the core, not part of it: it may read the clock and open a socket.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, UNIX_EPOCH};

// The simulator's seeded generator (`tests/sim/mod.rs`), from the shared test kit.
use enclave_testkit::TestRng;
use enclave_wg::{Decapsulated, Device, PeerConfig, PrivateKey, PublicKey};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request from 10.99.0.2 to 10.99.0.1 with valid checksums.
fn echo_request() -> Vec<u8> {
    let mut icmp = vec![8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
    icmp.extend_from_slice(b"enclave-wg interop");
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut packet = vec![
        0x45u8, 0, 0, 0, 0, 1, 0x40, 0, 64, 1, 0, 0, 10, 99, 0, 2, 10, 99, 0, 1,
    ];
    let total = (packet.len() + icmp.len()) as u16;
    packet[2..4].copy_from_slice(&total.to_be_bytes());
    let sum = checksum(&packet);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet.extend_from_slice(&icmp);
    packet
}

/// Answers everything wireguard-go sends until a packet is delivered.
fn converse(device: &mut Device, socket: &UdpSocket, now: Instant) {
    let wall = UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let mut buffer = [0u8; 2048];
    let mut out = [0u8; 2048];
    loop {
        let (len, from) = socket
            .recv_from(&mut buffer)
            .expect("a datagram from wireguard-go");
        let outcome = device.decapsulate(from, &buffer[..len], now, wall, &mut out);
        println!("wg_datagram {} -> {outcome:?}", hex(&buffer[..len]));
        if let Decapsulated::Deliver { len, .. } = outcome {
            println!("delivered {}", hex(&out[..len]));
            return;
        }
        while let Some(transmit) = device.poll_transmit() {
            println!("our_datagram {}", hex(&transmit.payload));
            socket
                .send_to(&transmit.payload, transmit.dst)
                .expect("send");
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().expect("a mode");
    if mode == "pubkeys" {
        println!("{}", PrivateKey::from_bytes([0x11; 32]).public_key());
        println!("{}", PrivateKey::from_bytes([0x33; 32]).public_key());
        return;
    }
    let theirs =
        PublicKey::from_base64(&args.next().expect("wireguard-go's public key")).expect("a key");
    let wall = UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    let now = Instant::now();
    let wg_go: SocketAddr = "127.0.0.1:51820".parse().expect("address");
    let peer = |endpoint| PeerConfig {
        public_key: theirs,
        preshared_key: None,
        endpoint,
        allowed_ips: vec!["10.99.0.1/32".parse().expect("network")],
        persistent_keepalive: None,
    };
    if mode == "initiator" {
        let socket = UdpSocket::bind("127.0.0.1:40000").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let mut device = Device::new(PrivateKey::from_bytes([0x11; 32]), TestRng(7));
        device.upsert_peer(peer(Some(wg_go)));
        let packet = echo_request();
        println!("ping {}", hex(&packet));
        let mut out = [0u8; 2048];
        println!(
            "encap {:?}",
            device.encapsulate(&packet, now, wall, &mut out)
        );
        let initiation = device.poll_transmit().expect("an initiation");
        println!("our_initiation {}", hex(&initiation.payload));
        socket.send_to(&initiation.payload, wg_go).expect("send");
        converse(&mut device, &socket, now);
    } else {
        let socket = UdpSocket::bind("127.0.0.1:40001").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_secs(12)))
            .expect("timeout");
        let mut device = Device::new(PrivateKey::from_bytes([0x33; 32]), TestRng(8));
        device.set_under_load(mode == "responder_load");
        device.upsert_peer(peer(None));
        println!("ready");
        converse(&mut device, &socket, now);
    }
}
