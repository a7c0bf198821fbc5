//! Two and three devices over the simulated network, on a virtual clock.

mod sim;

use std::net::SocketAddr;
use std::time::Duration;

use enclave_wg::timers::{
    KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_AFTER_TIME, REKEY_ATTEMPT_TIME, REKEY_TIMEOUT,
};
use enclave_wg::{Decapsulated, DropReason, Encapsulated, Event, PeerConfig};
use sim::{ipv4_packet, overlay, Conditions, Net};

#[test]
fn handshake_then_data_both_ways() {
    let mut net = Net::mesh(2, Conditions::perfect(), 1);
    let b_key = net.key(1);
    assert_eq!(
        net.send_to(0, 1, b"first"),
        Encapsulated::Queued { peer: b_key }
    );
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.bodies(1), vec![b"first".to_vec()]);
    assert_eq!(net.nodes[1].delivered[0].0, net.key(0));
    assert_eq!(net.handshakes(0), 1);
    assert_eq!(
        net.handshakes(1),
        1,
        "the responder completes on the first data packet"
    );

    assert!(matches!(
        net.send_to(1, 0, b"reply"),
        Encapsulated::Send { .. }
    ));
    assert!(matches!(
        net.send_to(0, 1, b"second"),
        Encapsulated::Send { .. }
    ));
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.bodies(0), vec![b"reply".to_vec()]);
    assert_eq!(net.bodies(1), vec![b"first".to_vec(), b"second".to_vec()]);
    assert!(
        net.nodes.iter().all(|node| node.drops.is_empty()),
        "no drops on a perfect network"
    );

    let info = net.nodes[0].device.peer(&b_key).expect("peer");
    assert!(info.last_handshake.is_some());
    assert!(info.tx_bytes > 0 && info.rx_bytes > 0);
    assert_eq!(info.tx_packets, 2);
}

#[test]
fn transport_plaintext_is_padded_to_16_bytes() {
    let mut net = Net::pair_after(b"x", 2);
    for body_len in [0usize, 1, 15, 16, 17, 100] {
        let packet = ipv4_packet(overlay(0), overlay(1), &vec![7u8; body_len]);
        let Encapsulated::Send { len, .. } = net.send_ip(0, &packet) else {
            panic!("session is up");
        };
        assert_eq!(len, enclave_wg::encapsulated_len(packet.len()));
        assert_eq!((len - 32) % 16, 0);
    }
    net.nodes[0].device.set_mtu(Some(1420));
    for (ip_len, wire_len) in [(1420, 1452), (1419, 1452), (1401, 1440)] {
        let packet = ipv4_packet(overlay(0), overlay(1), &vec![7u8; ip_len - 20]);
        let sent = net.send_ip(0, &packet);
        assert!(
            matches!(sent, Encapsulated::Send { len, .. } if len == wire_len),
            "{sent:?}"
        );
    }
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        net.nodes[1].delivered.len(),
        10,
        "padding is stripped using the IP length"
    );
    assert_eq!(net.nodes[1].delivered[3].1.len(), 20 + 15);
}

#[test]
fn data_gets_through_loss_duplication_and_reordering_without_duplicates() {
    let mut net = Net::mesh(2, Conditions::hostile(), 3);
    for n in 0u32..600 {
        net.send_to(0, 1, &n.to_be_bytes());
        net.send_to(1, 0, &n.to_be_bytes());
        net.run_for(Duration::from_millis(100));
    }
    net.run_for(Duration::from_secs(5));
    for i in 0..2 {
        let bodies = net.bodies(i);
        let mut unique = bodies.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            bodies.len(),
            "node {i}: a duplicated datagram was delivered twice"
        );
        // 20 % loss; the first packets wait for the handshake (which may itself be lost).
        assert!(
            bodies.len() > 400,
            "node {i} received only {} of 600",
            bodies.len()
        );
    }
    assert!(
        net.nodes[1].drops.contains(&DropReason::Replay),
        "duplicates are caught by the window"
    );
}

#[test]
fn rekey_after_time_loses_nothing() {
    rekey_run(false);
}

#[test]
fn rekey_after_time_loses_nothing_after_simultaneous_start() {
    rekey_run(true);
}

fn rekey_run(simultaneous: bool) {
    let mut conditions = Conditions::perfect();
    conditions.jitter = Duration::from_millis(5);
    let mut net = Net::mesh(2, conditions, 4);
    if !simultaneous {
        // A alone starts the first handshake; B only answers.
        net.send_to(0, 1, &u32::MAX.to_be_bytes());
        net.run_for(Duration::from_millis(100));
        net.nodes[1].delivered.clear();
    }
    let total = 4500u32; // 450 s of traffic, past three REKEY_AFTER_TIMEs
    for n in 0..total {
        net.send_to(0, 1, &n.to_be_bytes());
        net.send_to(1, 0, &n.to_be_bytes());
        net.run_for(Duration::from_millis(100));
    }
    net.run_for(Duration::from_secs(1));
    assert!(
        net.handshakes(0) >= 3,
        "initiator rekeyed {} times",
        net.handshakes(0)
    );
    assert!(net.handshakes(1) >= 3);
    for i in 0..2 {
        let bodies = net.bodies(i);
        assert_eq!(
            bodies.len(),
            total as usize,
            "node {i} lost packets across rekeys"
        );
    }
    assert!(
        net.nodes.iter().all(|node| node.drops.is_empty()),
        "drops: {:?}",
        net.nodes[0].drops
    );
    let expired = net
        .nodes
        .iter()
        .flat_map(|node| &node.events)
        .any(|e| matches!(e, Event::SessionExpired { .. }));
    assert!(
        !expired,
        "a rekeyed session never reaches REJECT_AFTER_TIME while in use"
    );
}

#[test]
fn sessions_expire_after_reject_after_time() {
    let mut net = Net::pair_after(b"hello", 5);
    // Keep a transport datagram to replay after expiry.
    let old = net.nodes[0].sent.last().cloned().expect("sent a datagram");
    net.run_for(REJECT_AFTER_TIME);
    let a_key = net.key(0);
    assert!(net.nodes[1]
        .events
        .contains(&Event::SessionExpired { peer: a_key }));
    let outcome = net.replay(0, 1, &old).expect("node exists");
    assert!(
        matches!(
            outcome,
            Decapsulated::Dropped(DropReason::UnknownSession | DropReason::SessionExpired)
        ),
        "{outcome:?}"
    );
    // Sending again needs a new handshake.
    assert!(matches!(
        net.send_to(0, 1, b"again"),
        Encapsulated::Queued { .. }
    ));
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.bodies(1).last().map(Vec::as_slice), Some(&b"again"[..]));
}

#[test]
fn replayed_transport_is_dropped() {
    let mut net = Net::pair_after(b"once", 6);
    let datagram = net.nodes[0].sent.last().cloned().expect("sent");
    assert_eq!(
        net.replay(0, 1, &datagram),
        Some(Decapsulated::Dropped(DropReason::Replay))
    );
    assert_eq!(net.bodies(1).len(), 1);
    // The drop is counted against the peer whose session the datagram named.
    let sender = net.key(0);
    let info = net.nodes[1]
        .device
        .peer(&sender)
        .expect("peer 0 is configured on node 1");
    assert_eq!(info.drops[DropReason::Replay as usize], 1);
    assert_eq!(info.drops.iter().sum::<u64>(), 1);
}

/// Two nodes a second after their handshake, and node 0's initiation as captured on the wire.
fn handshake_captured(seed: u64) -> (Net, Vec<u8>) {
    let mut net = Net::mesh(2, Conditions::perfect(), seed);
    net.send_to(0, 1, b"x");
    let initiation = net.nodes[0].sent[0].clone();
    assert_eq!(initiation.len(), 148);
    net.run_for(Duration::from_secs(1));
    (net, initiation)
}

#[test]
fn replayed_initiation_is_rejected_by_its_timestamp() {
    let (mut net, initiation) = handshake_captured(7);
    assert_eq!(
        net.replay(0, 1, &initiation),
        Some(Decapsulated::Dropped(DropReason::StaleTimestamp))
    );
}

#[test]
fn cookie_reply_under_load_then_handshake_with_mac2() {
    let mut net = Net::mesh(2, Conditions::perfect(), 8);
    net.nodes[1].device.set_under_load(true);
    net.send_to(0, 1, b"under load");
    // One way: the initiation without mac2 gets a cookie reply.
    net.run_for(Duration::from_millis(10));
    assert_eq!(net.nodes[1].drops, vec![DropReason::CookieRequired]);
    assert_eq!(net.nodes[1].sent.len(), 1);
    assert_eq!(net.nodes[1].sent[0].len(), 64, "a cookie reply");
    assert!(net.bodies(1).is_empty());
    // The initiator resends at once, with mac2, and gets through: two round
    // trips rather than REKEY_TIMEOUT.
    net.run_for(Duration::from_millis(50));
    assert_eq!(net.bodies(1), vec![b"under load".to_vec()]);
    assert_eq!(net.nodes[1].drops, vec![DropReason::CookieRequired]);
    assert_eq!(
        net.nodes[0].sent.iter().filter(|m| m.len() == 148).count(),
        2,
        "one resend per cookie reply, no more"
    );
}

#[test]
fn roaming_endpoint_follows_authenticated_packets() {
    let mut net = Net::pair_after(b"before", 9);
    let new_addr: std::net::SocketAddr = "198.51.100.7:40000".parse().expect("address");
    net.nodes[0].addr = new_addr;
    net.send_to(0, 1, b"after");
    net.run_for(Duration::from_secs(1));
    let a_key = net.key(0);
    assert!(net.nodes[1].events.contains(&Event::EndpointChanged {
        peer: a_key,
        endpoint: new_addr
    }));
    assert_eq!(endpoints_of_0_at_1(&net).0, Some(new_addr));
    net.send_to(1, 0, b"to the new place");
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.bodies(0), vec![b"to the new place".to_vec()]);

    // An unauthenticated packet from elsewhere does not move the endpoint.
    let spoofer: std::net::SocketAddr = "203.0.113.9:1".parse().expect("address");
    let mut garbage = vec![4u8, 0, 0, 0];
    garbage.extend_from_slice(&[0u8; 60]);
    let to = net.nodes[1].addr;
    net.deliver(spoofer, to, &garbage);
    assert_eq!(endpoints_of_0_at_1(&net).0, Some(new_addr));
}

#[test]
fn simultaneous_initiation_converges() {
    let mut net = Net::mesh(2, Conditions::perfect(), 10);
    assert!(matches!(
        net.send_to(0, 1, b"from a"),
        Encapsulated::Queued { .. }
    ));
    assert!(matches!(
        net.send_to(1, 0, b"from b"),
        Encapsulated::Queued { .. }
    ));
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.bodies(1), vec![b"from a".to_vec()]);
    assert_eq!(net.bodies(0), vec![b"from b".to_vec()]);
    for n in 0u32..50 {
        net.send_to(0, 1, &n.to_be_bytes());
        net.send_to(1, 0, &n.to_be_bytes());
        net.run_for(Duration::from_millis(50));
    }
    assert_eq!(net.bodies(1).len(), 51);
    assert_eq!(net.bodies(0).len(), 51);
}

#[test]
fn handshake_gives_up_after_rekey_attempt_time() {
    let mut net = Net::mesh(2, Conditions::perfect(), 11);
    net.conditions.loss = 1.0;
    net.send_to(0, 1, b"lost");
    net.run_for(REKEY_ATTEMPT_TIME + REKEY_TIMEOUT * 2);
    let b_key = net.key(1);
    assert!(net.nodes[0]
        .events
        .contains(&Event::HandshakeTimedOut { peer: b_key }));
    let initiations = net.nodes[0].sent.iter().filter(|d| d.len() == 148).count();
    // One every REKEY_TIMEOUT (+ jitter) for REKEY_ATTEMPT_TIME.
    assert!(
        (17..=19).contains(&initiations),
        "{initiations} initiations"
    );
    net.run_for(Duration::from_secs(60));
    assert_eq!(
        net.nodes[0].sent.len(),
        initiations,
        "silence after giving up"
    );
}

#[test]
fn passive_keepalive_answers_one_way_traffic() {
    let mut net = Net::pair_after(b"one way", 12);
    let before = net.nodes[1].sent.len();
    net.run_for(KEEPALIVE_TIMEOUT + Duration::from_secs(1));
    let keepalives = net.nodes[1].sent[before..]
        .iter()
        .filter(|d| d.len() == 32)
        .count();
    assert_eq!(keepalives, 1, "B answers A's data with one keepalive");
}

#[test]
fn persistent_keepalive_sends_on_schedule() {
    let mut net = Net::mesh(2, Conditions::perfect(), 13);
    let b_key = net.key(1);
    net.nodes[0]
        .device
        .set_persistent_keepalive(&b_key, Some(25))
        .expect("peer exists");
    net.tick();
    net.run_for(Duration::from_secs(101));
    assert_eq!(
        net.handshakes(0),
        1,
        "the first keepalive starts a handshake"
    );
    let keepalives = net.nodes[0].sent.iter().filter(|d| d.len() == 32).count();
    assert!(
        (4..=5).contains(&keepalives),
        "{keepalives} keepalives in 100 s at 25 s"
    );
}

#[test]
fn three_peers_cryptokey_routing_and_source_check() {
    let mut net = Net::mesh(3, Conditions::perfect(), 14);
    let (b, c) = (net.key(1), net.key(2));
    // C also routes 10.9.0.0/16; B owns the more specific 10.9.9.0/24.
    net.allow(0, 2, &["10.0.0.3/32", "10.9.0.0/16"]);
    net.allow(0, 1, &["10.0.0.2/32", "10.9.9.0/24"]);
    let to = |d: [u8; 4]| ipv4_packet(overlay(0), d.into(), b"routed");
    assert_eq!(
        net.send_ip(0, &to([10, 9, 9, 1])),
        Encapsulated::Queued { peer: b }
    );
    assert_eq!(
        net.send_ip(0, &to([10, 9, 1, 1])),
        Encapsulated::Queued { peer: c }
    );
    assert_eq!(
        net.send_ip(0, &to([10, 8, 0, 1])),
        Encapsulated::Dropped(DropReason::NoRoute)
    );
    assert_eq!(net.nodes[0].device.route([10, 9, 9, 200].into()), Some(b));
    assert_eq!(net.nodes[0].device.route([10, 9, 200, 1].into()), Some(c));
    assert_eq!(net.nodes[0].device.route([10, 8, 0, 1].into()), None);
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.nodes[1].delivered.len(), 1);
    assert_eq!(net.nodes[2].delivered.len(), 1);

    // B sends with C's source address: A drops it.
    let spoofed = ipv4_packet(overlay(2), overlay(0), b"spoofed");
    net.send_ip(1, &spoofed);
    net.send_to(1, 0, b"honest");
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.bodies(0), vec![b"honest".to_vec()]);
    assert!(net.nodes[0].drops.contains(&DropReason::SourceNotAllowed));
    // Packets that B routes to A come from B (not C) per the allowed IPs.
    assert!(net.nodes[0].delivered.iter().all(|(peer, _)| *peer == b));
}

#[test]
fn removed_peer_stops_at_once_and_unknown_keys_never_handshake() {
    let mut net = Net::pair_after(b"hello", 15);
    let a_key = net.key(0);
    assert!(net.nodes[1].device.remove_peer(&a_key));
    net.send_to(0, 1, b"after removal");
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.bodies(1), vec![b"hello".to_vec()]);
    assert!(net.nodes[1].drops.contains(&DropReason::UnknownSession));
    // A's retried handshakes reach a device that no longer knows A.
    net.run_for(KEEPALIVE_TIMEOUT + REKEY_TIMEOUT * 2);
    assert!(net.nodes[1].drops.contains(&DropReason::UnknownPeer));
    assert!(net.bodies(1).len() == 1);
    assert_eq!(
        net.send_to(1, 0, b"x"),
        Encapsulated::Dropped(DropReason::NoRoute)
    );
}

#[test]
fn preshared_key_must_match() {
    /// Gives node `i` a pre-shared key for its peer `j`.
    fn set_psk(net: &mut Net, i: usize, j: usize) {
        let peer = net.key(j);
        let psk = enclave_wg::PresharedKey::from_bytes([42; 32]);
        net.nodes[i]
            .device
            .set_preshared_key(&peer, Some(psk))
            .expect("peer");
    }

    let mut net = Net::mesh(2, Conditions::perfect(), 16);
    set_psk(&mut net, 0, 1);
    set_psk(&mut net, 1, 0);
    net.send_to(0, 1, b"with psk");
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.bodies(1), vec![b"with psk".to_vec()]);

    let mut net = Net::mesh(2, Conditions::perfect(), 17);
    set_psk(&mut net, 0, 1);
    net.send_to(0, 1, b"mismatch");
    net.run_for(Duration::from_secs(1));
    assert!(net.bodies(1).is_empty());
    assert!(net.nodes[0].drops.contains(&DropReason::HandshakeFailed));
}

#[test]
fn upsert_replaces_configuration_and_keeps_sessions() {
    let mut net = Net::pair_after(b"x", 18);
    let b = net.key(1);
    let info = net.nodes[0].device.peer(&b).expect("peer");
    net.nodes[0].device.upsert_peer(PeerConfig {
        public_key: b,
        preshared_key: None,
        endpoint: info.endpoint,
        allowed_ips: vec![
            "10.0.0.2/32".parse().expect("net"),
            "fd00::2/128".parse().expect("net"),
        ],
        persistent_keepalive: None,
    });
    assert!(matches!(net.send_to(0, 1, b"y"), Encapsulated::Send { .. }));
    let peers: Vec<_> = net.nodes[0].device.peers().collect();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].allowed_ips.len(), 2);
    assert!(net.nodes[0]
        .device
        .set_endpoint(&enclave_wg::PublicKey([9; 32]), None)
        .is_err());
}

#[test]
fn zero_key_material_after_three_reject_after_times() {
    let mut net = Net::pair_after(b"x", 19);
    net.run_for(REJECT_AFTER_TIME * 3);
    // Nothing left to time: no sessions, no pending handshakes.
    assert_eq!(net.nodes[0].device.poll_timeout(), None);
    assert_eq!(net.nodes[1].device.poll_timeout(), None);
    assert!(REKEY_AFTER_TIME < REJECT_AFTER_TIME);
}

fn ipv6_packet(src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr, body: &[u8]) -> Vec<u8> {
    let mut packet = vec![0u8; 40 + body.len()];
    packet[0] = 0x60;
    packet[4..6].copy_from_slice(&(body.len() as u16).to_be_bytes());
    packet[6] = 59; // no next header
    packet[7] = 64;
    packet[8..24].copy_from_slice(&src.octets());
    packet[24..40].copy_from_slice(&dst.octets());
    packet[40..].copy_from_slice(body);
    packet
}

#[test]
fn ipv6_inside_the_tunnel() {
    let mut net = Net::mesh(2, Conditions::perfect(), 20);
    let a = net.key(0);
    let a6: std::net::Ipv6Addr = "fd00::1".parse().expect("address");
    let b6: std::net::Ipv6Addr = "fd00::2".parse().expect("address");
    net.allow(0, 1, &["fd00::2/128"]);
    net.allow(1, 0, &["fd00::1/128"]);
    let packet = ipv6_packet(a6, b6, b"seven b");
    net.send_ip(0, &packet);
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        net.nodes[1].delivered,
        vec![(a, packet)],
        "padding stripped by the payload length"
    );

    let spoofed = ipv6_packet("fd00::99".parse().expect("address"), a6, b"spoofed");
    net.send_ip(1, &spoofed);
    net.run_for(Duration::from_secs(1));
    assert!(net.nodes[0].delivered.is_empty());
    assert_eq!(net.nodes[0].drops, vec![DropReason::SourceNotAllowed]);
}

#[test]
fn one_way_traffic_to_the_initiator_survives_rekeys() {
    // A initiates once, then only B sends: A answers with keepalives and
    // must rekey before its receiving session reaches REJECT_AFTER_TIME.
    let mut net = Net::pair_after(b"hello", 21);
    let total = 4000u32;
    for n in 0..total {
        net.send_to(1, 0, &n.to_be_bytes());
        net.run_for(Duration::from_millis(100));
    }
    net.run_for(Duration::from_secs(1));
    assert_eq!(
        net.bodies(0).len(),
        total as usize,
        "drops: {:?}",
        net.nodes[0].drops
    );
    assert!(net.handshakes(0) >= 3, "{} handshakes", net.handshakes(0));
    let initiations_by_b = net.nodes[1].sent.iter().filter(|d| d.len() == 148).count();
    assert_eq!(initiations_by_b, 0, "only the initiator rekeys");
}

#[test]
fn three_peers_all_to_all_over_a_hostile_network() {
    let mut net = Net::mesh(3, Conditions::hostile(), 22);
    let rounds = 600u32;
    for n in 0..rounds {
        for i in 0..3 {
            for j in (0..3).filter(|&j| j != i) {
                let mut body = vec![i as u8];
                body.extend_from_slice(&n.to_be_bytes());
                net.send_to(i, j, &body);
            }
        }
        net.run_for(Duration::from_millis(100));
    }
    net.run_for(Duration::from_secs(5));
    let keys: Vec<_> = (0..3).map(|i| net.key(i)).collect();
    for j in 0..3 {
        let delivered = &net.nodes[j].delivered;
        let mut unique: Vec<_> = delivered.iter().map(|(_, packet)| packet.clone()).collect();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), delivered.len(), "node {j} got a duplicate");
        for (peer, packet) in delivered {
            let sender = usize::from(packet[20]);
            assert_eq!(
                *peer, keys[sender],
                "attributed to the peer whose source it is"
            );
        }
        for i in (0..3).filter(|&i| i != j) {
            let from_i = delivered
                .iter()
                .filter(|(peer, _)| *peer == keys[i])
                .count();
            assert!(from_i > 400, "node {j} got {from_i} of {rounds} from {i}");
        }
    }
}

/// Node 1's view of node 0: (current endpoint, proven endpoint).
fn endpoints_of_0_at_1(net: &Net) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let info = net.nodes[1].device.peer(&net.key(0)).expect("peer 0");
    (info.endpoint, info.proven_endpoint)
}

#[test]
fn learnt_endpoint_survives_reconfiguration() {
    let mut net = Net::mesh(2, Conditions::perfect(), 30);
    let a = net.key(0);
    // Node 1 knows node 0 as a laptop: no configured endpoint.
    let laptop = PeerConfig {
        public_key: a,
        preshared_key: None,
        endpoint: None,
        allowed_ips: vec!["10.0.0.1/32".parse().expect("net")],
        persistent_keepalive: None,
    };
    net.nodes[1].device.remove_peer(&a);
    net.nodes[1].device.upsert_peer(laptop.clone());
    assert_eq!(endpoints_of_0_at_1(&net), (None, None));
    net.send_to(0, 1, b"hello");
    net.run_for(Duration::from_secs(1));
    let learnt = net.nodes[0].addr;
    assert_eq!(endpoints_of_0_at_1(&net), (Some(learnt), Some(learnt)));
    let before = net.nodes[1].device.peer(&a).expect("peer");

    // The same configuration again, then one that differs only in its allowed IPs.
    net.nodes[1].device.upsert_peer(laptop.clone());
    assert_eq!(endpoints_of_0_at_1(&net), (Some(learnt), Some(learnt)));
    let mut wider = laptop.clone();
    wider.allowed_ips.push("10.9.0.0/24".parse().expect("net"));
    net.nodes[1].device.upsert_peer(wider.clone());
    let after = net.nodes[1].device.peer(&a).expect("peer");
    assert_eq!(
        (after.endpoint, after.proven_endpoint),
        (Some(learnt), Some(learnt))
    );
    assert_eq!(after.last_handshake, before.last_handshake);
    assert_eq!(
        (after.rx_bytes, after.rx_packets),
        (before.rx_bytes, before.rx_packets)
    );
    // The session survived too: the reply goes out at once, to the learnt endpoint.
    assert_eq!(
        net.send_to(1, 0, b"reply"),
        Encapsulated::Send {
            peer: a,
            dst: learnt,
            len: enclave_wg::encapsulated_len(20 + 5)
        }
    );
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.bodies(0), vec![b"reply".to_vec()]);

    // A configured endpoint that is new does move the current one (not the proven one).
    let configured: SocketAddr = "203.0.113.5:51820".parse().expect("address");
    let mut moved = wider.clone();
    moved.endpoint = Some(configured);
    net.nodes[1].device.upsert_peer(moved.clone());
    assert_eq!(endpoints_of_0_at_1(&net), (Some(configured), Some(learnt)));
    // Re-applying that same configured endpoint keeps a newly learnt one.
    net.send_to(0, 1, b"again");
    net.run_for(Duration::from_secs(1));
    assert_eq!(endpoints_of_0_at_1(&net).0, Some(learnt));
    net.nodes[1].device.upsert_peer(moved);
    assert_eq!(endpoints_of_0_at_1(&net).0, Some(learnt));
}

#[test]
fn forged_outer_source_moves_endpoint_but_not_proven_endpoint() {
    let mut net = Net::pair_after(b"first", 31);
    let (real_0, real_1) = (net.nodes[0].addr, net.nodes[1].addr);
    // Both sides proved each other's address by the handshake.
    assert_eq!(endpoints_of_0_at_1(&net), (Some(real_0), Some(real_0)));
    let b_info = net.nodes[0].device.peer(&net.key(1)).expect("peer 1");
    assert_eq!(b_info.proven_endpoint, Some(real_1));

    // An attacker on the path races node 0's next packet with a copy whose
    // outer source is rewritten to an address it likes.
    net.send_to(0, 1, b"second");
    let captured = net.nodes[0].sent.last().cloned().expect("sent");
    let forged: SocketAddr = "198.51.100.66:4444".parse().expect("address");
    let sent_before = net.nodes[1].sent.len();
    let outcome = net.deliver(forged, real_1, &captured);
    assert!(
        matches!(outcome, Some(Decapsulated::Deliver { .. })),
        "{outcome:?}"
    );
    assert_eq!(endpoints_of_0_at_1(&net), (Some(forged), Some(real_0)));
    // Node 1 tests the new address with a handshake initiation at once.
    let probes: Vec<usize> = net.nodes[1].sent[sent_before..]
        .iter()
        .map(Vec::len)
        .collect();
    assert_eq!(
        probes,
        vec![148],
        "one handshake initiation towards the new address"
    );
    // Nobody answers from the forged address: it never becomes proven.
    net.run_for(Duration::from_secs(30));
    assert_eq!(endpoints_of_0_at_1(&net).1, Some(real_0));
    // The real packet arrived too late (a replay) and moved nothing back.
    assert!(net.nodes[1].drops.contains(&DropReason::Replay));
}

#[test]
fn a_real_roam_is_proven_within_a_round_trip() {
    let mut net = Net::pair_after(b"before", 32);
    let old = net.nodes[0].addr;
    assert_eq!(endpoints_of_0_at_1(&net), (Some(old), Some(old)));
    let new: SocketAddr = "198.51.100.7:40000".parse().expect("address");
    net.nodes[0].addr = new;
    net.send_to(0, 1, b"after");
    // One way (10 ms) for the data, one round trip (20 ms) for node 1's probe handshake.
    net.run_for(Duration::from_millis(35));
    assert_eq!(endpoints_of_0_at_1(&net), (Some(new), Some(new)));
    assert_eq!(net.bodies(1), vec![b"before".to_vec(), b"after".to_vec()]);
    assert!(net.nodes.iter().all(|node| node.drops.is_empty()));
}

#[test]
fn a_roam_right_after_our_own_handshake_is_proven_after_rekey_timeout() {
    let mut net = Net::mesh(2, Conditions::perfect(), 33);
    // Node 1 initiates, so its next initiation must wait for REKEY_TIMEOUT.
    net.send_to(1, 0, b"from 1");
    net.run_for(Duration::from_secs(1));
    let new: SocketAddr = "198.51.100.8:40000".parse().expect("address");
    net.nodes[0].addr = new;
    net.send_to(0, 1, b"moved");
    net.run_for(Duration::from_millis(100));
    assert_eq!(endpoints_of_0_at_1(&net).0, Some(new));
    assert_ne!(endpoints_of_0_at_1(&net).1, Some(new), "rate limited");
    net.run_for(REKEY_TIMEOUT + Duration::from_secs(1));
    assert_eq!(endpoints_of_0_at_1(&net), (Some(new), Some(new)));
}

#[test]
fn a_captured_initiation_is_rejected_after_the_peer_is_removed_and_added_again() {
    let (mut net, initiation) = handshake_captured(34);
    assert_eq!(net.handshakes(1), 1);

    let a = net.key(0);
    let config = PeerConfig {
        public_key: a,
        preshared_key: None,
        endpoint: Some(net.nodes[0].addr),
        allowed_ips: vec!["10.0.0.1/32".parse().expect("net")],
        persistent_keepalive: None,
    };
    assert!(net.nodes[1].device.remove_peer(&a));
    net.nodes[1].device.upsert_peer(config);
    net.run_for(Duration::from_secs(1));

    let attacker: SocketAddr = "198.51.100.66:4444".parse().expect("address");
    let to = net.nodes[1].addr;
    assert_eq!(
        net.deliver(attacker, to, &initiation),
        Some(Decapsulated::Dropped(DropReason::StaleTimestamp))
    );
    assert_eq!(endpoints_of_0_at_1(&net).0, Some(net.nodes[0].addr));
    // Fresh handshakes still work.
    net.send_to(1, 0, b"fresh");
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.bodies(0), vec![b"fresh".to_vec()]);
}
