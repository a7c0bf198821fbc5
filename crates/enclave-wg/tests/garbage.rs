//! Whatever bytes arrive, the device neither panics nor delivers them.

mod sim;

use std::time::Duration;

use enclave_wg::{Decapsulated, Encapsulated};
use proptest::prelude::*;
use sim::{Conditions, Net};

/// Two devices with a session, and the real datagrams of that exchange.
fn established() -> (Net, Vec<Vec<u8>>) {
    let mut net = Net::mesh(2, Conditions::perfect(), 99);
    net.send_to(0, 1, b"hello");
    net.run_for(Duration::from_secs(1));
    net.send_to(1, 0, b"back");
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.bodies(0).len(), 1, "session established");
    let mut real: Vec<Vec<u8>> = net.nodes[0].sent.clone();
    real.extend(net.nodes[1].sent.iter().cloned());
    (net, real)
}

fn feed(net: &mut Net, to: usize, datagram: &[u8]) -> Decapsulated {
    let from = net.nodes[1 - to].addr;
    let to = net.nodes[to].addr;
    net.deliver(from, to, datagram).expect("node exists")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_dropped(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let (mut net, _) = established();
        for to in 0..2 {
            let outcome = feed(&mut net, to, &bytes);
            prop_assert!(matches!(outcome, Decapsulated::Dropped(_)), "{:?}", outcome);
        }
    }

    #[test]
    fn well_sized_messages_with_random_content_are_dropped(
        kind in 1u32..=4,
        size in prop_oneof![Just(148usize), Just(92), Just(64), 32usize..200],
        seed in any::<u64>(),
        index_hint in any::<bool>(),
    ) {
        let (mut net, real) = established();
        let mut bytes = vec![0u8; size];
        let mut state = seed | 1;
        for byte in bytes.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        bytes[..4].copy_from_slice(&kind.to_le_bytes());
        if index_hint {
            // Use a live receiver index so the message reaches session lookup.
            let live = real.iter().find(|d| d.len() >= 32 && d[0] == 4).expect("a transport message");
            bytes[4..8].copy_from_slice(&live[4..8]);
        }
        for to in 0..2 {
            let outcome = feed(&mut net, to, &bytes);
            prop_assert!(matches!(outcome, Decapsulated::Dropped(_)), "{:?}", outcome);
        }
    }

    #[test]
    fn mutated_real_messages_are_dropped(pick in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let (mut net, real) = established();
        let mut datagram = real[pick.index(real.len())].clone();
        let position = at.index(datagram.len());
        datagram[position] ^= flip;
        for to in 0..2 {
            let outcome = feed(&mut net, to, &datagram);
            prop_assert!(matches!(outcome, Decapsulated::Dropped(_)), "{:?}", outcome);
        }
    }

    #[test]
    fn arbitrary_ip_packets_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let (mut net, _) = established();
        let outcome = net.send_ip(0, &bytes);
        let fits = matches!(outcome, Encapsulated::Send { len, .. } if len == enclave_wg::encapsulated_len(bytes.len()));
        prop_assert!(fits || matches!(outcome, Encapsulated::Dropped(_)), "{:?}", outcome);
    }
}

#[test]
fn every_size_up_to_a_jumbo_frame() {
    let (mut net, _) = established();
    for size in 0..=9000usize {
        for fill in [0u8, 1, 2, 3, 4, 0xff] {
            let mut bytes = vec![fill; size];
            if size >= 4 {
                bytes[..4].copy_from_slice(&u32::from(fill % 5).to_le_bytes());
            }
            let outcome = feed(&mut net, size % 2, &bytes);
            assert!(
                matches!(outcome, Decapsulated::Dropped(_)),
                "size {size}: {outcome:?}"
            );
        }
    }
}
