//! Criterion benches of the protocol core: sealing and opening one
//! 1420-byte packet, and one complete handshake.

use std::hint::black_box;
use std::time::Duration;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use enclave_testkit::{ipv4, pair};
use enclave_wg::{encapsulated_len, Decapsulated, Encapsulated};

const PACKET_LEN: usize = 1420;

fn transport(c: &mut Criterion) {
    let mut group = c.benchmark_group("transport");
    group.throughput(Throughput::Bytes(PACKET_LEN as u64));
    let packet = ipv4(PACKET_LEN);
    let mut pair = pair();
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
    let cipher = ChaCha20Poly1305::new(&Key::from([7; 32]));
    let mut buffer = vec![0xa5u8; encapsulated_len(PACKET_LEN) - 32];
    let nonce = Nonce::default();
    group.bench_function("aead_only_seal_open_1420", |bencher| {
        bencher.iter(|| {
            let tag = cipher
                .encrypt_inout_detached(&nonce, &[], black_box(&mut buffer[..]).into())
                .expect("seal");
            cipher
                .decrypt_inout_detached(&nonce, &[], (&mut buffer[..]).into(), &tag)
                .expect("open");
        })
    });
    // The same through ring, which the device uses for transport data: the
    // ratio of these two is the AEAD's share of the switch between crates.
    let ring_key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &[7; 32]).expect("key"),
    );
    let ring_nonce = || ring::aead::Nonce::assume_unique_for_key([0; 12]);
    group.bench_function("aead_only_seal_open_1420_ring", |bencher| {
        bencher.iter(|| {
            let tag = ring_key
                .seal_in_place_separate_tag(
                    ring_nonce(),
                    ring::aead::Aad::empty(),
                    black_box(&mut buffer[..]),
                )
                .expect("seal");
            ring_key
                .open_in_place_separate_tag(
                    ring_nonce(),
                    ring::aead::Aad::empty(),
                    tag,
                    &mut buffer[..],
                    0..,
                )
                .expect("open");
        })
    });
    group.finish();
}

fn handshake(c: &mut Criterion) {
    let mut pair = pair();
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
