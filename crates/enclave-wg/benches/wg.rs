//! Criterion benches of the protocol core: sealing and opening one
//! 1420-byte packet, and one complete handshake.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use enclave_wg::{
    encapsulated_len, Decapsulated, Device, Encapsulated, Event, PeerConfig, PrivateKey,
};

const PACKET_LEN: usize = 1420;

struct Pair {
    a: Device,
    b: Device,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    now: Instant,
    wall: SystemTime,
}

fn ipv4(len: usize) -> Vec<u8> {
    let mut packet = vec![0xa5u8; len];
    packet[0] = 0x45;
    packet[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    packet[12..16].copy_from_slice(&[10, 0, 0, 1]);
    packet[16..20].copy_from_slice(&[10, 0, 0, 2]);
    packet
}

impl Pair {
    fn new() -> Self {
        let mut a = Device::new(PrivateKey::from_bytes([1; 32]), rand_core::OsRng);
        let mut b = Device::new(PrivateKey::from_bytes([2; 32]), rand_core::OsRng);
        let a_addr: SocketAddr = "192.0.2.1:51820".parse().expect("address");
        let b_addr: SocketAddr = "192.0.2.2:51820".parse().expect("address");
        let (a_key, b_key) = (a.public_key(), b.public_key());
        a.upsert_peer(PeerConfig {
            public_key: b_key,
            endpoint: Some(b_addr),
            allowed_ips: vec!["10.0.0.2/32".parse().expect("network")],
            ..PeerConfig::default()
        });
        b.upsert_peer(PeerConfig {
            public_key: a_key,
            endpoint: Some(a_addr),
            allowed_ips: vec!["10.0.0.1/32".parse().expect("network")],
            ..PeerConfig::default()
        });
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
        assert!(matches!(queued, Encapsulated::Queued { .. }));
        assert_eq!(pair.exchange(), 2);
        pair
    }

    /// Carries handshake messages and keepalives back and forth until
    /// quiet; returns how many handshakes completed on either side.
    fn exchange(&mut self) -> usize {
        let mut out = vec![0u8; 2048];
        loop {
            let mut moved = false;
            while let Some(transmit) = self.a.poll_transmit() {
                self.b.decapsulate(
                    self.a_addr,
                    &transmit.payload,
                    self.now,
                    self.wall,
                    &mut out,
                );
                moved = true;
            }
            while let Some(transmit) = self.b.poll_transmit() {
                self.a.decapsulate(
                    self.b_addr,
                    &transmit.payload,
                    self.now,
                    self.wall,
                    &mut out,
                );
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

fn transport(c: &mut Criterion) {
    let mut group = c.benchmark_group("transport");
    group.throughput(Throughput::Bytes(PACKET_LEN as u64));
    let packet = ipv4(PACKET_LEN);
    let mut pair = Pair::new();
    let mut wire = vec![0u8; encapsulated_len(PACKET_LEN)];
    let mut plain = vec![0u8; wire.len()];

    group.bench_function("seal_1420", |bencher| {
        bencher.iter(|| {
            let sealed = pair
                .a
                .encapsulate(black_box(&packet), pair.now, pair.wall, &mut wire);
            assert!(matches!(sealed, Encapsulated::Send { .. }));
        })
    });

    group.bench_function("seal_open_1420", |bencher| {
        bencher.iter(|| {
            let Encapsulated::Send { len, .. } =
                pair.a
                    .encapsulate(black_box(&packet), pair.now, pair.wall, &mut wire)
            else {
                panic!("session is up");
            };
            let opened =
                pair.b
                    .decapsulate(pair.a_addr, &wire[..len], pair.now, pair.wall, &mut plain);
            assert!(matches!(
                opened,
                Decapsulated::Deliver {
                    len: PACKET_LEN,
                    ..
                }
            ));
        })
    });

    group.bench_function("open_1420", |bencher| {
        bencher.iter_batched_ref(
            || {
                let mut wire = vec![0u8; encapsulated_len(PACKET_LEN)];
                let sealed = pair.a.encapsulate(&packet, pair.now, pair.wall, &mut wire);
                assert!(matches!(sealed, Encapsulated::Send { .. }));
                wire
            },
            |wire| {
                let opened = pair
                    .b
                    .decapsulate(pair.a_addr, wire, pair.now, pair.wall, &mut plain);
                assert!(matches!(
                    opened,
                    Decapsulated::Deliver {
                        len: PACKET_LEN,
                        ..
                    }
                ));
            },
            BatchSize::SmallInput,
        )
    });
    // The floor: ChaCha20-Poly1305 alone, sealing and opening the same
    // padded plaintext in place, to compare the device's overhead against.
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&[7; 32]));
    let mut buffer = vec![0xa5u8; encapsulated_len(PACKET_LEN) - 32];
    let nonce = Nonce::default();
    group.bench_function("aead_only_seal_open_1420", |bencher| {
        bencher.iter(|| {
            let tag = cipher
                .encrypt_in_place_detached(&nonce, &[], black_box(&mut buffer))
                .expect("seal");
            cipher
                .decrypt_in_place_detached(&nonce, &[], &mut buffer, &tag)
                .expect("open");
        })
    });
    group.finish();
}

fn handshake(c: &mut Criterion) {
    let mut pair = Pair::new();
    let packet = ipv4(100);
    let mut wire = vec![0u8; 2048];
    // Each iteration moves the clocks past REKEY_AFTER_TIME, so the next
    // packet from the initiator starts a handshake: initiation, response,
    // and the keepalive that confirms it, each processed by the other side.
    c.bench_function("handshake/complete", |bencher| {
        bencher.iter(|| {
            pair.now += Duration::from_secs(121);
            pair.wall += Duration::from_secs(121);
            pair.a.encapsulate(&packet, pair.now, pair.wall, &mut wire);
            assert_eq!(pair.exchange(), 2, "both sides complete a handshake");
        })
    });
}

criterion_group!(benches, transport, handshake);
criterion_main!(benches);

/// The origin of the benchmark's virtual clock: read once, then only moved by the benchmark.
#[allow(clippy::disallowed_methods)]
fn clock_start() -> Instant {
    Instant::now()
}
