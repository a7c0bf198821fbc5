//! Handshake floods on the virtual clock: what puts a device under load, what
//! a flooding source can make it compute and send, and that legitimate
//! handshakes and established sessions carry on meanwhile.

mod sim;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use enclave_testkit::flood::{mac1_of, Flooder};
use enclave_wg::ratelimit::{HANDSHAKES_PER_SECOND, HANDSHAKE_BURST, UNDER_LOAD_HANDSHAKES};
use enclave_wg::{DropReason, Encapsulated, Event, PublicKey};
use rand_core::Rng;
use sim::{Conditions, Net, TestRng};

const FLOODER: &str = "203.0.113.66:40000";

/// A flooder of `target` (anyone who knows a public key can make valid mac1s).
fn flooder(target: &PublicKey) -> Flooder {
    Flooder::new(&target.0, 0xf100d)
}

fn count(drops: &[DropReason], reason: DropReason) -> usize {
    drops.iter().filter(|&&drop| drop == reason).count()
}

/// What the flood made the device do (`done` of `what`: cookie replies, X25519 operations) was
/// held to the per-source rate: at most `limit`, but the rate rather than nothing; the rest of
/// the flood (tens of thousands) the rate limiter dropped.
fn assert_held_to_the_rate(drops: &[DropReason], what: &str, done: u64, limit: u64) {
    assert!(done <= limit, "{done} {what}, at most {limit} allowed");
    assert!(
        done >= HANDSHAKES_PER_SECOND * 2,
        "{done} {what}: the rate, not zero"
    );
    assert!(count(drops, DropReason::RateLimited) > 29_000);
}

#[test]
fn datagrams_without_a_valid_mac1_never_put_the_device_under_load() {
    let mut net = Net::mesh(2, Conditions::perfect(), 40);
    let flooder: SocketAddr = FLOODER.parse().expect("address");
    let to = net.nodes[1].addr;
    let mut rng = TestRng(7);
    for _ in 0..10_000 {
        let mut msg = vec![0u8; 148];
        rng.fill_bytes(&mut msg);
        msg[..4].copy_from_slice(&[1, 0, 0, 0]);
        net.deliver(flooder, to, &msg);
        net.now += Duration::from_micros(10);
    }
    assert!(!net.nodes[1].device.under_load());
    assert_eq!(count(&net.nodes[1].drops, DropReason::BadMac1), 10_000);
    assert!(net.nodes[1].sent.is_empty(), "no answer to any of them");
    // And so a handshake needs no cookie.
    net.send_to(0, 1, b"hello");
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.bodies(1), vec![b"hello".to_vec()]);
    assert_eq!(count(&net.nodes[1].drops, DropReason::CookieRequired), 0);
}

/// Floods node 1 from FLOODER with 10 initiations a millisecond for 3 s, while
/// node 2 (already connected) sends node 1 a packet every millisecond and node
/// 0 starts a handshake with node 1 after 500 ms. The legitimate handshake
/// must complete within 2 s and node 2's session must lose nothing.
fn flood_run(net: &mut Net, flooder: &mut Flooder) {
    let (per_ms, duration, legit_at) = (10, Duration::from_secs(3), Duration::from_millis(500));
    let from: SocketAddr = FLOODER.parse().expect("address");
    let to = net.nodes[1].addr;
    let start = net.now;
    let a = net.key(0);
    let mut legit_sent = false;
    let mut completed = None;
    let mut sent_by_2 = 0;
    let delivered_before = net.nodes[1].delivered.len();
    while net.now - start < duration {
        for _ in 0..per_ms {
            let msg = flooder.initiation();
            net.deliver(from, to, &msg);
        }
        if !legit_sent && net.now - start >= legit_at {
            assert_eq!(
                net.send_to(0, 1, b"legit"),
                Encapsulated::Queued { peer: net.key(1) }
            );
            legit_sent = true;
        }
        assert!(
            matches!(net.send_to(2, 1, b"established"), Encapsulated::Send { .. }),
            "node 2's session stays up"
        );
        sent_by_2 += 1;
        net.run_for(Duration::from_millis(1));
        if completed.is_none()
            && net.nodes[1]
                .events
                .contains(&Event::HandshakeCompleted { peer: a })
        {
            completed = Some(net.now - start - legit_at);
        }
    }
    net.run_for(Duration::from_millis(100));
    let through = net.nodes[1].delivered[delivered_before..]
        .iter()
        .filter(|(peer, _)| *peer == net.key(2))
        .count();
    let completed = completed.expect("the legitimate handshake completed");
    assert!(completed < Duration::from_secs(2), "took {completed:?}");
    assert!(net.bodies(1).contains(&b"legit".to_vec()));
    assert_eq!(through, sent_by_2, "the established session lost nothing");
}

/// Three nodes; node 2 already has a session with node 1.
fn connected_mesh(seed: u64) -> Net {
    let mut net = Net::mesh(3, Conditions::perfect(), seed);
    net.send_to(2, 1, b"hi");
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.bodies(1), vec![b"hi".to_vec()]);
    net.nodes[1].drops.clear();
    net
}

#[test]
fn a_valid_mac1_flood_gets_few_cookies_while_a_legitimate_handshake_completes_within_2_s() {
    let mut net = connected_mesh(41);
    let mut flooder = flooder(&net.key(1));
    flood_run(&mut net, &mut flooder);
    let drops = &net.nodes[1].drops;
    // Only the initiations that fill the load meter cost an X25519 (one
    // window's worth, plus what drained meanwhile); after that the flood
    // only gets cookie replies.
    assert!(
        count(drops, DropReason::HandshakeFailed) <= UNDER_LOAD_HANDSHAKES as usize + 16,
        "{} handshakes computed",
        count(drops, DropReason::HandshakeFailed)
    );
    // Cookie replies are held to the source's rate too (plus the one the
    // legitimate peer got): the flood is not reflected.
    let cookies = count(drops, DropReason::CookieRequired) as u64;
    let limit = HANDSHAKE_BURST + HANDSHAKES_PER_SECOND * 4 + 1;
    assert_held_to_the_rate(drops, "cookie replies", cookies, limit);
    assert!(net.nodes[1].device.under_load());
}

/// Floods node 1 from [`FLOODER`] with initiations (valid mac1, no mac2) until it is under load:
/// the flooder, its address and node 1's.
fn flooded_to_load(net: &mut Net) -> (Flooder, SocketAddr, SocketAddr) {
    let mut flooder = flooder(&net.key(1));
    let from: SocketAddr = FLOODER.parse().expect("address");
    let to = net.nodes[1].addr;
    for _ in 0..=UNDER_LOAD_HANDSHAKES {
        let msg = flooder.initiation();
        net.deliver(from, to, &msg);
    }
    assert!(net.nodes[1].device.under_load());
    (flooder, from, to)
}

#[test]
fn a_flood_with_valid_mac2_is_held_to_the_per_source_rate() {
    let mut net = connected_mesh(42);
    // Put node 1 under load, then fetch a cookie as a real flooder can.
    let (mut flooder, from, to) = flooded_to_load(&mut net);
    let msg = flooder.initiation();
    net.deliver(from, to, &msg);
    let reply = net.nodes[1].sent.last().cloned().expect("a cookie reply");
    let cookie = flooder
        .open_cookie(&mac1_of(&msg), &reply)
        .expect("the cookie reply opens with our mac1");
    flooder.use_cookie(cookie);
    net.nodes[1].drops.clear();

    let started = net.now;
    flood_run(&mut net, &mut flooder);
    let elapsed = net.now - started;
    let drops = &net.nodes[1].drops;
    let computed = count(drops, DropReason::HandshakeFailed) as u64;
    let limit = HANDSHAKE_BURST + HANDSHAKES_PER_SECOND * (elapsed.as_secs() + 1);
    assert_held_to_the_rate(drops, "X25519 for the flooder", computed, limit);
    // The flooder's mac2 is valid: the one cookie required was the legitimate
    // peer's first initiation.
    assert_eq!(count(drops, DropReason::CookieRequired), 1);
}

#[test]
fn under_load_is_left_a_second_after_the_flood_ends() {
    let mut net = connected_mesh(43);
    flooded_to_load(&mut net);
    let quiet: Instant = net.now + Duration::from_millis(1100);
    net.run_until(quiet);
    // The next handshake is processed without a cookie round trip.
    net.nodes[1].drops.clear();
    net.send_to(0, 1, b"calm");
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.bodies(1).last().map(Vec::as_slice), Some(&b"calm"[..]));
    assert_eq!(count(&net.nodes[1].drops, DropReason::CookieRequired), 0);
    assert!(!net.nodes[1].device.under_load());
}

#[test]
fn a_forged_source_cannot_spend_the_mac2_budget_of_its_owner() {
    let mut net = connected_mesh(45);
    net.nodes[1].device.set_under_load(true);
    let (a, owner) = (net.key(0), net.nodes[0].addr);
    // Node 0 gets through under load, and so holds a cookie from node 1.
    net.send_to(0, 1, b"first");
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.bodies(1).last().map(Vec::as_slice), Some(&b"first"[..]));
    // Node 1 forgets node 0's session; node 0 will handshake again (with mac2)
    // once its data goes unanswered.
    let config = enclave_wg::PeerConfig {
        public_key: a,
        preshared_key: None,
        endpoint: Some(owner),
        allowed_ips: vec!["10.0.0.1/32".parse().expect("net")],
        persistent_keepalive: None,
    };
    net.nodes[1].device.remove_peer(&a);
    net.nodes[1].device.upsert_peer(config);
    let completed_before = net.handshakes(1);

    // Meanwhile someone forges node 0's address on a flood whose mac1 is
    // valid and whose mac2 is not.
    let mut forger = flooder(&net.key(1));
    forger.use_cookie([7; 16]);
    let to = net.nodes[1].addr;
    let start = net.now;
    assert!(matches!(
        net.send_to(0, 1, b"again"),
        Encapsulated::Send { .. }
    ));
    let mut completed = None;
    while net.now - start < Duration::from_secs(20) && completed.is_none() {
        for _ in 0..10 {
            let msg = forger.initiation();
            net.deliver(owner, to, &msg);
        }
        net.run_for(Duration::from_millis(1));
        if net.handshakes(1) > completed_before {
            completed = Some(net.now - start);
        }
    }
    let completed = completed.expect("node 0's handshake with mac2 got through the forged flood");
    // Node 0 retries after KEEPALIVE_TIMEOUT + REKEY_TIMEOUT of silence.
    assert!(completed < Duration::from_secs(17), "took {completed:?}");
    assert!(count(&net.nodes[1].drops, DropReason::RateLimited) > 100_000);
}
