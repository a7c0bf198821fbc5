//! The filter of one peer, by hand: a gateway lets a user's laptop open HTTPS connections to a
//! web server behind it, one way, and we watch what it decides.
//!
//! ```text
//! cargo run -p enclave-filter --example one_way
//! ```
//!
//! In the product the policy engine writes these rules and the data plane calls
//! [`PeerFilter::check`] on every packet; here we do both by hand.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use enclave_filter::packet::build;
use enclave_filter::{
    AddrEntry, AllowRule, Direction, FilterConfig, FilterRules, PeerFilter, PortRange, Protocol,
    Timeouts, Verdict, TCP_ACK, TCP_SYN,
};

/// The laptop's address in the overlay.
const LAPTOP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 11);
/// A web server on the gateway's LAN.
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 20);

fn main() {
    // The rules of the gateway's filter for its peer "laptop". Ingress rules say which flows the
    // peer may open towards us; there are no egress rules, so nothing here may open a flow
    // towards the laptop: the access is one way.
    let rules = FilterRules {
        ingress: vec![AllowRule {
            protocol: Protocol::Tcp,
            ports: Some(PortRange::single(443)),
            sources: vec![AddrEntry::Net(LAPTOP.into())],
            destinations: vec![AddrEntry::Net(SERVER.into())],
            label: Some("HTTPS".to_owned()),
        }],
        egress: vec![],
    };
    let mut filter = PeerFilter::new(rules, FilterConfig::default());

    // The filter never reads the clock: the caller passes the time of each packet. The data
    // plane passes `Instant::now()`; an example may too (enclave-filter itself may not, which
    // its clippy.toml enforces for the library, hence the allow).
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();

    let packets = [
        (
            "laptop opens HTTPS to the server (a rule allows it)",
            Direction::Ingress,
            build::tcp(LAPTOP, 40000, SERVER, 443, TCP_SYN),
            start,
        ),
        (
            "the server answers (a reply of the allowed flow)",
            Direction::Egress,
            build::tcp(SERVER, 443, LAPTOP, 40000, TCP_SYN | TCP_ACK),
            start,
        ),
        (
            "laptop tries SSH to the server (no rule)",
            Direction::Ingress,
            build::tcp(LAPTOP, 40001, SERVER, 22, TCP_SYN),
            start,
        ),
        (
            "the server tries to open a connection to the laptop (one way: no egress rule)",
            Direction::Egress,
            build::tcp(SERVER, 50000, LAPTOP, 22, TCP_SYN),
            start,
        ),
        (
            "garbage from the peer (not an IPv4 packet)",
            Direction::Ingress,
            vec![0x60; 40],
            start,
        ),
        (
            "the server answers again after 2 idle hours (the flow expired)",
            Direction::Egress,
            build::tcp(SERVER, 443, LAPTOP, 40000, TCP_ACK),
            start + Timeouts::default().tcp_established + Duration::from_secs(1),
        ),
    ];

    // Whether each packet above must pass; the example fails when the filter disagrees.
    let expected_pass = [true, true, false, false, false, false];
    for ((what, direction, bytes, at), pass) in packets.iter().zip(expected_pass) {
        let verdict = filter.check(*direction, bytes, *at);
        assert_eq!(
            verdict == Verdict::Pass,
            pass,
            "{what}: the filter said {verdict:?}"
        );
        let verdict = match verdict {
            Verdict::Pass => "pass".to_owned(),
            Verdict::Drop(reason) => format!("drop ({})", reason.as_str()),
        };
        let direction = match direction {
            Direction::Ingress => "from the peer",
            Direction::Egress => "to the peer  ",
        };
        println!("{direction}  {verdict:<16}  {what}");
    }

    let stats = filter.stats();
    println!(
        "\npassed {}, flows opened {}, dropped {} ({})",
        stats.passed,
        stats.opened,
        stats.dropped.total(),
        stats
            .dropped
            .iter()
            .filter(|(_, count)| *count > 0)
            .map(|(reason, count)| format!("{} {count}", reason.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
