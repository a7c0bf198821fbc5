//! The data plane bringing up a tunnel: a real TUN device, a real UDP socket, and a peer.
//!
//! `sudo cargo run -p enclave-dataplane --example tunnel`
//!
//! It needs root (a TUN device) and runs in a network namespace of its own, made at start
//! (`unshare(CLONE_NEWNET)`), so nothing of the host's network is touched and everything is
//! gone when it exits. The steps:
//!
//! 1. [`Tunnel::start`] creates the interface `enclave-ex0` with a fresh key, listening on
//!    127.0.0.1's port 51900; [`iface`] gives it 10.99.0.1/24 and brings it up.
//! 2. The peer is this program itself: an `enclave_wg::Device` on UDP port 51901 with virtual
//!    address 10.99.0.2 (in real life, another host's agent, wireguard-go or the kernel).
//!    [`Tunnel::set_peers`] tells the tunnel about it, and it about the tunnel.
//! 3. An ordinary UDP socket sends "hello" to 10.99.0.2:7. The kernel routes it into the TUN
//!    device; the data plane does the handshake with the peer and sends it encrypted. The
//!    peer opens it, and answers "hello back" the same way in the other direction; the socket
//!    receives the answer.
//! 4. [`Tunnel::stats`] shows the peer's counters; [`Tunnel::stop`] removes the interface.

// An I/O shell around the libraries: it may read the clock and open sockets.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use enclave_dataplane::{iface, PeerSpec, Tunnel, TunnelConfig};
use enclave_wg::{Decapsulated, Device, Encapsulated, PeerConfig, PrivateKey};

const TUNNEL_PORT: u16 = 51900;
const PEER_PORT: u16 = 51901;
const TUNNEL_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const PEER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

type Error = Box<dyn std::error::Error>;

fn fresh_key() -> PrivateKey {
    let mut bytes = [0u8; 32];
    rand_core::Rng::fill_bytes(&mut rand_core::UnwrapErr(getrandom::SysRng), &mut bytes);
    PrivateKey::from_bytes(bytes)
}

/// A network namespace of this process's own, with its loopback up.
fn private_network() -> Result<(), Error> {
    // SAFETY: unshare has no memory preconditions; it fails cleanly without privileges.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "cannot make a network namespace ({}): run as root",
            std::io::Error::last_os_error()
        )
        .into());
    }
    iface::set_up("lo")?;
    Ok(())
}

/// The internet checksum of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| {
            u32::from(u16::from_be_bytes([
                pair[0],
                pair.get(1).copied().unwrap_or(0),
            ]))
        })
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4/UDP packet (UDP checksum 0: none, which IPv4 allows).
fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Result<Vec<u8>, Error> {
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
        return Err("IPv4 only".into());
    };
    let udp_len = u16::try_from(8 + payload.len())?;
    let total = 20 + udp_len;
    let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    packet[2..4].copy_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&src.ip().octets());
    packet.extend_from_slice(&dst.ip().octets());
    let header_sum = checksum(&packet);
    packet[10..12].copy_from_slice(&header_sum.to_be_bytes());
    packet.extend_from_slice(&src.port().to_be_bytes());
    packet.extend_from_slice(&dst.port().to_be_bytes());
    packet.extend_from_slice(&udp_len.to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(payload);
    Ok(packet)
}

/// The source and the payload of an IPv4/UDP packet.
fn parse_udp(packet: &[u8]) -> Option<(SocketAddr, &[u8])> {
    let header = usize::from(packet.first()? & 0x0f) * 4;
    if packet.get(9) != Some(&17) || packet.len() < header + 8 {
        return None;
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let port = u16::from_be_bytes([packet[header], packet[header + 1]]);
    Some((SocketAddr::from((src, port)), &packet[header + 8..]))
}

fn main() -> Result<(), Error> {
    private_network()?;

    // 1. The tunnel.
    let tunnel_key = fresh_key();
    let tunnel_public = tunnel_key.public_key();
    let tunnel = Tunnel::start(TunnelConfig {
        listen_port: TUNNEL_PORT,
        private_key: Some(tunnel_key),
        uapi_dir: None,
        ..TunnelConfig::bare("enclave-ex0")
    })?;
    iface::set_ipv4_address("enclave-ex0", TUNNEL_ADDR, Ipv4Addr::new(255, 255, 255, 0))?;
    iface::set_up("enclave-ex0")?;
    println!(
        "tunnel enclave-ex0 up: {TUNNEL_ADDR}/24, UDP port {TUNNEL_PORT}, key {tunnel_public}"
    );

    // 2. The peer, and each told about the other.
    let peer_key = fresh_key();
    let peer_public = peer_key.public_key();
    let wire = UdpSocket::bind(("127.0.0.1", PEER_PORT))?;
    wire.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut peer = Device::new(peer_key, rand_core::UnwrapErr(getrandom::SysRng));
    peer.upsert_peer(PeerConfig {
        public_key: tunnel_public,
        preshared_key: None,
        endpoint: Some(SocketAddr::from(([127, 0, 0, 1], TUNNEL_PORT))),
        allowed_ips: vec![format!("{TUNNEL_ADDR}/32").parse()?],
        persistent_keepalive: None,
    });
    tunnel.set_peers(vec![PeerSpec {
        config: PeerConfig {
            public_key: peer_public,
            preshared_key: None,
            endpoint: Some(SocketAddr::from(([127, 0, 0, 1], PEER_PORT))),
            allowed_ips: vec![format!("{PEER_ADDR}/32").parse()?],
            persistent_keepalive: None,
        },
        filter: None,
    }])?;
    println!("peer {peer_public} at 127.0.0.1:{PEER_PORT}, virtual address {PEER_ADDR}");

    // 3. "hello" through the tunnel, and the answer back.
    let app = UdpSocket::bind((TUNNEL_ADDR, 0))?;
    app.set_read_timeout(Some(Duration::from_millis(100)))?;
    app.send_to(b"hello", (PEER_ADDR, 7))?;
    println!("sent \"hello\" from {} to {PEER_ADDR}:7", app.local_addr()?);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    let mut answered = false;
    while Instant::now() < deadline {
        if let Ok((len, from)) = wire.recv_from(&mut buf) {
            let now = Instant::now();
            match peer.decapsulate(from, &buf[..len], now, SystemTime::now(), &mut out) {
                Decapsulated::Deliver { len, .. } => {
                    if let Some((src, payload)) = parse_udp(&out[..len]) {
                        println!(
                            "peer received {:?} from {src}",
                            String::from_utf8_lossy(payload)
                        );
                        let reply = udp_packet((PEER_ADDR, 7).into(), src, b"hello back")?;
                        match peer.encapsulate(&reply, now, SystemTime::now(), &mut out) {
                            Encapsulated::Send { dst, len, .. } => {
                                wire.send_to(&out[..len], dst)?;
                            }
                            other => {
                                return Err(format!("the peer cannot answer: {other:?}").into())
                            }
                        }
                    }
                }
                Decapsulated::Consumed { .. } => println!("peer: handshake message handled"),
                other => println!("peer: {other:?}"),
            }
            while let Some(transmit) = peer.poll_transmit() {
                wire.send_to(&transmit.payload, transmit.dst)?;
            }
        }
        if let Ok((len, from)) = app.recv_from(&mut buf) {
            println!(
                "received {:?} from {from}",
                String::from_utf8_lossy(&buf[..len])
            );
            if &buf[..len] != b"hello back" || from != SocketAddr::from((PEER_ADDR, 7)) {
                return Err("the answer is not the peer's".into());
            }
            answered = true;
            break;
        }
    }
    if !answered {
        return Err("no answer through the tunnel within 10 s".into());
    }

    // 4. Counters, then the tunnel goes (and the namespace with this process).
    let stats = tunnel.stats()?;
    for peer in &stats.peers {
        let info = &peer.info;
        println!(
            "tunnel's peer {}: {} bytes sent, {} received, handshake done: {}",
            info.public_key,
            info.tx_bytes,
            info.rx_bytes,
            info.last_handshake.is_some()
        );
    }
    tunnel.stop()?;
    println!("tunnel stopped; enclave-ex0 is gone");
    Ok(())
}
