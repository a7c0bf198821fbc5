//! Arbitrary datagrams from the network into a device that has a live session.
//!
//! The device is built once per process as the responder of the third known-answer exchange
//! with wireguard-go (`tests/wireguard_go_vectors.rs`: our key 0x33…, generator seed 8): under
//! load it answered wireguard-go's initiation with a cookie reply, accepted the retry that
//! carried a valid mac2, and delivered wireguard-go's first transport packet. So the captured
//! messages in the corpus pass mac1 and mac2, name a live receiver index, and their mutations
//! reach the handshake's Diffie-Hellman and AEAD, the cookie code, the session lookup, the
//! replay window and the transport AEAD, not just the parser.
//!
//! Input: one byte of flags (bit 0: the device is under load), then the datagram, which comes
//! from wireguard-go's address. What must hold for any input:
//! - a delivered packet is a transport message's, and its inner source is in the peer's
//!   allowed IPs (cryptokey routing);
//! - a dropped datagram gets no answer, except a cookie reply when under load (the only
//!   unauthenticated answer WireGuard allows), and every answer goes to the sender;
//! - the same datagram again is never accepted twice (no replayed data, no replayed handshake).
//!
//! Corpus (`corpus/decapsulate/`): the wireguard-go messages of the known-answer test (its
//! initiations, under load and not, which authenticate and are then refused as replays; its
//! transport message on the live session, and one with another counter; messages of the other
//! exchanges), our cookie reply, a keepalive-shaped message, a truncated header.

#![no_main]

use std::cell::RefCell;
use std::time::{Duration, Instant};

use enclave_wg::{Decapsulated, Device, DropReason};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
// The captured wireguard-go datagrams of the known-answer test; exchange 3 (wireguard-go
// initiates while we are under load) warms the device up.
#[path = "../../tests/vectors/mod.rs"]
mod vectors;

use vectors::{LOADED_FIRST_INITIATION, LOADED_SECOND_INITIATION, LOADED_THEIR_TRANSPORT};

const WIREGUARD_GO: &str = "127.0.0.1:51820";
/// wireguard-go's allowed IPs at our device: its tunnel address.
const WIREGUARD_GO_TUNNEL: [u8; 4] = [10, 99, 0, 1];

/// How long a device is used before it is rebuilt: less than REJECT_AFTER_TIME (180 s, when
/// its session dies) and than the cookie secret's lifetime (120 s, when the corpus's mac2
/// stops being valid).
const REBUILD_AFTER: Duration = Duration::from_secs(100);

/// Replays exchange 3 at `now`, so that the device has a live session with wireguard-go.
fn warmed_up(now: Instant) -> Device {
    let (_, wall) = common::clocks();
    let from = common::addr(WIREGUARD_GO);
    let mut device = common::device(0x33, 8, common::public(0x22), None, "10.99.0.1/32");
    let mut out = vec![0u8; 2048];
    device.set_under_load(true);
    let steps = [
        (LOADED_FIRST_INITIATION, "a cookie reply"),
        (LOADED_SECOND_INITIATION, "the handshake"),
        (LOADED_THEIR_TRANSPORT, "wireguard-go's first packet"),
    ];
    let mut outcomes = Vec::new();
    for (datagram, _) in steps {
        outcomes.push(device.decapsulate(from, &vectors::bytes(datagram), now, wall, &mut out));
        while device.poll_transmit().is_some() {}
    }
    while device.poll_event().is_some() {}
    device.set_under_load(false);
    assert!(
        matches!(
            outcomes[..],
            [
                Decapsulated::Dropped(DropReason::CookieRequired),
                Decapsulated::Consumed { peer: Some(_) },
                Decapsulated::Deliver { .. },
            ]
        ),
        "the warm-up replays the known-answer exchange 3 of tests/wireguard_go_vectors.rs and \
         expects {:?}; it got {outcomes:?}: if those vectors were captured again, copy them here",
        steps.map(|(_, what)| what)
    );
    device
}

/// The device and its clock, which moves a little with each input so that timers and rate
/// limits run; the device is rebuilt before its session would expire.
struct State {
    device: Device,
    built: Instant,
    now: Instant,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, datagram)) = data.split_first() else {
        return;
    };
    STATE.with_borrow_mut(|state| {
        let (start, wall) = common::clocks();
        let state = state.get_or_insert_with(|| State {
            device: warmed_up(start),
            built: start,
            now: start,
        });
        // Bits 1-7: 0 to 508 ms pass before this datagram arrives.
        state.now += Duration::from_millis(u64::from(flags >> 1) * 4);
        if state.now - state.built > REBUILD_AFTER {
            state.device = warmed_up(state.now);
            state.built = state.now;
        }
        let (device, now) = (&mut state.device, state.now);
        device.set_under_load(flags & 1 == 1);
        let mut out = vec![0u8; datagram.len()];
        let first = receive(device, datagram, now, &mut out);
        if matches!(
            first,
            Decapsulated::Deliver { .. } | Decapsulated::Consumed { .. }
        ) {
            let again = receive(device, datagram, now, &mut out);
            assert!(
                matches!(
                    again,
                    Decapsulated::Dropped(_) | Decapsulated::Consumed { peer: None }
                ),
                "the same datagram was accepted twice: {first:?}, then {again:?}"
            );
        }
        device.handle_timeout(now, wall);
        while let Some(transmit) = device.poll_transmit() {
            assert_eq!(
                transmit.dst,
                common::addr(WIREGUARD_GO),
                "a timer sent to an address nobody spoke from"
            );
        }
        while device.poll_event().is_some() {}
    });
});

/// Hands `datagram` to the device at `now` and checks what it did with it.
fn receive(device: &mut Device, datagram: &[u8], now: Instant, out: &mut [u8]) -> Decapsulated {
    let (_, wall) = common::clocks();
    let from = common::addr(WIREGUARD_GO);
    let outcome = device.decapsulate(from, datagram, now, wall, out);
    let mut answers = Vec::new();
    while let Some(transmit) = device.poll_transmit() {
        assert_eq!(
            transmit.dst, from,
            "an answer went elsewhere than to the sender"
        );
        answers.push(transmit.payload);
    }
    match outcome {
        Decapsulated::Deliver { len, .. } => {
            assert_eq!(
                datagram.first(),
                Some(&4),
                "delivered from a non-transport message"
            );
            assert!(
                len + 32 <= datagram.len(),
                "delivered more than the datagram held"
            );
            assert_eq!(
                common::ipv4_source(&out[..len]),
                Some(WIREGUARD_GO_TUNNEL),
                "delivered a packet whose source is outside the peer's allowed IPs"
            );
        }
        Decapsulated::Dropped(DropReason::CookieRequired) => {
            assert!(
                device.under_load(),
                "a cookie was required while not under load"
            );
            assert!(
                answers.len() <= 1,
                "{} answers to one datagram",
                answers.len()
            );
            for answer in &answers {
                assert_eq!(
                    (answer.len(), answer[0]),
                    (64, 3),
                    "not a cookie reply: {answer:?}"
                );
            }
        }
        Decapsulated::Dropped(reason) => {
            assert!(
                answers.is_empty(),
                "a datagram dropped as {reason:?} got an answer"
            );
        }
        Decapsulated::Consumed { .. } => {}
    }
    outcome
}
