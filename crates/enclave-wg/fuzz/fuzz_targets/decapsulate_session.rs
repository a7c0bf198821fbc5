//! Sequences of authentic, replayed, tampered and forged transport messages into a device
//! with an established session.
//!
//! Devices A (10.0.0.1) and B (10.0.0.2) complete a handshake once per process; the clock then
//! stands still, so the session lives for the whole run. Each input is a list of records, one
//! header byte each (`op = header >> 6`, `n = header & 0x3f`):
//! - op 0, forge: the next `8n` bytes go to B as they are;
//! - op 1, forge in session: the same, with the type and B's live receiver index written over
//!   the first 8 bytes, so that the bytes reach the replay window and the AEAD;
//! - op 2, send: the next `n` bytes are `[source, payload…]`; A encrypts an IPv4 packet from
//!   10.0.0.`source & 3` to B, and B receives it at once unless `source & 0x80` holds it back;
//! - op 3, again: the next 2 bytes `[which, tamper]` pick one of this input's authentic
//!   messages and hand it to B again, with the byte at `tamper` XOR-ed with `tamper` if that
//!   is not 0.
//!
//! What must hold: B delivers exactly what A sent, only from A's allowed address 10.0.0.1,
//! each message at most once, every message sent in order, and nothing forged or tampered
//! (beyond the unauthenticated reserved bytes of the header).
//!
//! Corpus (`corpus/decapsulate_session/`): messages sent in order; held back, delivered out of
//! order and replayed; tampered with in the ciphertext and the counter; from sources outside
//! the allowed IPs; empty and long payloads; forged transport and keepalive messages on the
//! live session (from wireguard-go's captured bytes) and a forged initiation.

#![no_main]

use std::cell::RefCell;

use enclave_testkit::Pair;
use enclave_wg::{Decapsulated, Encapsulated};
use libfuzzer_sys::fuzz_target;

/// At most this many records of an input are played, and authentic messages kept.
const MAX_RECORDS: usize = 256;

/// Devices A and B with a session between them, and B's receiver index of that session, as A
/// writes it into its transport messages.
struct Established {
    pair: Pair,
    live_index: [u8; 4],
}

fn established() -> Established {
    let mut pair = enclave_testkit::pair();
    let (now, wall) = (pair.now, pair.wall);
    let packet = ipv4_packet(1, b"hello");
    let mut datagram = vec![0u8; enclave_wg::encapsulated_len(packet.len())];
    let Encapsulated::Send { len, .. } = pair.a.encapsulate(&packet, now, wall, &mut datagram)
    else {
        panic!("A has a live session");
    };
    let live_index = [4, 5, 6, 7].map(|i| datagram[i]);
    let mut out = vec![0u8; 2048];
    let delivered = pair.b.decapsulate(pair.a_addr, &datagram[..len], now, wall, &mut out);
    assert!(matches!(delivered, Decapsulated::Deliver { .. }), "{delivered:?}");
    Established { pair, live_index }
}

thread_local! {
    static ESTABLISHED: RefCell<Established> = RefCell::new(established());
}

/// An authentic message of this input, and what became of it.
struct Sent {
    datagram: Vec<u8>,
    packet: Vec<u8>,
    allowed: bool,
    delivered: bool,
}

fuzz_target!(|data: &[u8]| {
    ESTABLISHED.with_borrow_mut(|established| play(established, data));
});

fn play(established: &mut Established, data: &[u8]) {
    let live_index = established.live_index;
    let pair = &mut established.pair;
    let (now, wall, a_addr) = (pair.now, pair.wall, pair.a_addr);
    let mut sent: Vec<Sent> = Vec::new();
    // The newest of this input's messages that B delivered: an older one may be refused (it
    // may have left the replay window), a newer one must be delivered.
    let mut newest_delivered: Option<usize> = None;
    let mut out = vec![0u8; 2048];
    let mut rest = data;
    for _ in 0..MAX_RECORDS {
        let Some((&header, tail)) = rest.split_first() else {
            break;
        };
        let (op, n) = (header >> 6, usize::from(header & 0x3f));
        let len = match op {
            0 | 1 => 8 * n,
            2 => n,
            _ => 2,
        }
        .min(tail.len());
        let (chunk, next) = tail.split_at(len);
        rest = next;
        match op {
            0 | 1 => {
                let mut datagram = chunk.to_vec();
                if op == 1 && datagram.len() >= 8 {
                    datagram[..4].copy_from_slice(&4u32.to_le_bytes());
                    datagram[4..8].copy_from_slice(&live_index);
                }
                let outcome = pair.b.decapsulate(a_addr, &datagram, now, wall, &mut out);
                assert!(
                    !matches!(outcome, Decapsulated::Deliver { .. }),
                    "forged data delivered: {outcome:?}"
                );
            }
            2 => {
                let Some((&source, payload)) = chunk.split_first() else {
                    continue;
                };
                if sent.len() == MAX_RECORDS {
                    continue;
                }
                let packet = ipv4_packet(source & 3, payload);
                let mut datagram = vec![0u8; enclave_wg::encapsulated_len(packet.len())];
                let outcome = pair.a.encapsulate(&packet, now, wall, &mut datagram);
                let Encapsulated::Send { len, .. } = outcome else {
                    panic!("A has a live session but did not send: {outcome:?}");
                };
                datagram.truncate(len);
                sent.push(Sent {
                    datagram,
                    packet,
                    allowed: source & 3 == 1,
                    delivered: false,
                });
                if source & 0x80 == 0 {
                    let which = sent.len() - 1;
                    deliver(
                        pair,
                        &mut sent,
                        which,
                        None,
                        &mut newest_delivered,
                        &mut out,
                    );
                }
            }
            _ => {
                let [which, tamper] = [0, 1].map(|i| chunk.get(i).copied().unwrap_or(0));
                if sent.is_empty() {
                    continue;
                }
                let which = usize::from(which) % sent.len();
                let tamper = (tamper != 0).then_some(tamper);
                deliver(
                    pair,
                    &mut sent,
                    which,
                    tamper,
                    &mut newest_delivered,
                    &mut out,
                );
            }
        }
    }
    while pair.a.poll_transmit().is_some() || pair.b.poll_transmit().is_some() {}
    while pair.a.poll_event().is_some() || pair.b.poll_event().is_some() {}
}

/// Hands message `which` (tampered with or not) to B and checks the outcome.
fn deliver(
    pair: &mut Pair,
    sent: &mut [Sent],
    which: usize,
    tamper: Option<u8>,
    newest_delivered: &mut Option<usize>,
    out: &mut [u8],
) {
    let (now, wall) = (pair.now, pair.wall);
    let message = &mut sent[which];
    let mut datagram = message.datagram.clone();
    // Only the 3 reserved bytes after the type are not authenticated (the AEAD covers the
    // payload, its nonce is the counter, and the index chooses the key).
    let mut authentic = true;
    if let Some(tamper) = tamper {
        let at = usize::from(tamper) % datagram.len();
        datagram[at] ^= tamper;
        authentic = (1..4).contains(&at);
    }
    let outcome = pair
        .b
        .decapsulate(pair.a_addr, &datagram, now, wall, out);
    let delivered = matches!(outcome, Decapsulated::Deliver { .. });
    if !authentic || message.delivered || !message.allowed {
        assert!(
            !delivered,
            "B delivered a message that was tampered with ({tamper:?}), already delivered \
             ({}) or from a source outside A's allowed IPs ({}): {outcome:?}",
            message.delivered, !message.allowed
        );
        return;
    }
    // A message whose reserved bytes were changed may be refused as malformed; one that was
    // not, and is newer than every message delivered so far, must be delivered.
    let in_order = newest_delivered.is_none_or(|newest| which > newest);
    if in_order && tamper.is_none() {
        assert!(delivered, "B refused A's next message: {outcome:?}");
    }
    if let Decapsulated::Deliver { len, .. } = outcome {
        assert_eq!(
            &out[..len],
            &message.packet[..],
            "B delivered other bytes than A sent"
        );
        message.delivered = true;
        *newest_delivered = Some(newest_delivered.map_or(which, |newest| newest.max(which)));
    }
}

/// An IPv4/UDP-shaped packet from 10.0.0.`source` to 10.0.0.2 carrying `payload`.
fn ipv4_packet(source: u8, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0u8; 20];
    packet[0] = 0x45;
    let total = u16::try_from(20 + payload.len()).expect("payloads are short");
    packet[2..4].copy_from_slice(&total.to_be_bytes());
    packet[8] = 64;
    packet[9] = 17;
    packet[12..16].copy_from_slice(&[10, 0, 0, source]);
    packet[16..20].copy_from_slice(&[10, 0, 0, 2]);
    packet.extend_from_slice(payload);
    packet
}
