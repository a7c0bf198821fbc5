//! A sequence of arbitrary datagrams into a device with an established
//! session. Each chunk (length-prefixed by one byte) may borrow the live
//! receiver index, so that the fuzzer reaches session lookup and the AEAD.

#![no_main]

use enclave_wg::{Decapsulated, Encapsulated};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let mut a = common::device(1, 2, common::B_ADDR);
    let mut b = common::device(2, 1, common::A_ADDR);
    let (now, wall) = common::clocks();
    let (a_addr, b_addr) = (common::addr(common::A_ADDR), common::addr(common::B_ADDR));
    let mut out = vec![0u8; 2048];

    // A real handshake first.
    let mut packet = vec![0u8; 40];
    packet[0] = 0x45;
    packet[3] = 40;
    packet[12..16].copy_from_slice(&[10, 0, 0, 1]);
    packet[16..20].copy_from_slice(&[10, 0, 0, 2]);
    assert!(matches!(
        a.encapsulate(&packet, now, wall, &mut out),
        Encapsulated::Queued { .. }
    ));
    let mut live_index = [0u8; 4];
    for _ in 0..3 {
        while let Some(transmit) = a.poll_transmit() {
            if transmit.payload.first() == Some(&4) {
                live_index.copy_from_slice(&transmit.payload[4..8]);
            }
            b.decapsulate(a_addr, &transmit.payload, now, wall, &mut out);
        }
        while let Some(transmit) = b.poll_transmit() {
            a.decapsulate(b_addr, &transmit.payload, now, wall, &mut out);
        }
    }

    let mut rest = data;
    while let Some((&header, tail)) = rest.split_first() {
        let len = (usize::from(header & 0x7f) * 12).min(tail.len());
        let (chunk, next) = tail.split_at(len);
        rest = next;
        let mut datagram = chunk.to_vec();
        if header & 0x80 != 0 && datagram.len() >= 8 {
            datagram[..4].copy_from_slice(&4u32.to_le_bytes());
            datagram[4..8].copy_from_slice(&live_index);
        }
        let mut plain = vec![0u8; datagram.len()];
        let outcome = b.decapsulate(a_addr, &datagram, now, wall, &mut plain);
        assert!(
            !matches!(outcome, Decapsulated::Deliver { .. }),
            "forged data delivered: {outcome:?}"
        );
    }
});
