//! Behaviour of the filter as a whole, including property tests against a model.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use proptest::prelude::*;

use crate::packet::build;
use crate::packet::Flow;
use crate::*;

const SENDER: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 20);
/// The verdict on a packet that opens a flow no rule allows and belongs to none.
const NO_RULE: Verdict = Verdict::Drop(DropReason::NoRule);

fn net(s: &str) -> AddrEntry {
    AddrEntry::Net(s.parse::<Ipv4Net>().unwrap())
}

fn rule(protocol: Protocol, ports: Option<PortRange>, src: &str, dst: &str) -> AllowRule {
    AllowRule {
        protocol,
        ports,
        sources: vec![net(src)],
        destinations: vec![net(dst)],
        label: None,
    }
}

/// A gateway's view of a sender peer allowed to open TCP 443 and ping into the LAN, one way.
fn one_way() -> PeerFilter {
    PeerFilter::new(
        FilterRules {
            ingress: vec![
                rule(
                    Protocol::Tcp,
                    Some(PortRange::single(443)),
                    "100.64.0.2/32",
                    "192.168.77.0/24",
                ),
                rule(Protocol::Icmp, None, "100.64.0.2/32", "192.168.77.0/24"),
            ],
            egress: vec![],
        },
        FilterConfig::default(),
    )
}

#[test]
fn one_way_access_lets_replies_back_and_nothing_else() {
    let now = crate::test_clock_start();
    let mut f = one_way();
    let syn = build::tcp(SENDER, 40000, HOST, 443, TCP_SYN);
    let synack = build::tcp(HOST, 443, SENDER, 40000, TCP_SYN | TCP_ACK);
    assert_eq!(f.check(Direction::Egress, &synack, now), NO_RULE);
    assert_eq!(f.check(Direction::Ingress, &syn, now), Verdict::Pass);
    assert_eq!(f.check(Direction::Egress, &synack, now), Verdict::Pass);
    // The LAN host cannot open its own connection to the sender.
    let open_back = build::tcp(HOST, 50000, SENDER, 22, TCP_SYN);
    assert_eq!(f.check(Direction::Egress, &open_back, now), NO_RULE);
    // Another port is not allowed.
    let other = build::tcp(SENDER, 40001, HOST, 80, TCP_SYN);
    assert_eq!(f.check(Direction::Ingress, &other, now), NO_RULE);
    // Ping one way only.
    let request = build::echo(SENDER, HOST, true, 9);
    let reply = build::echo(HOST, SENDER, false, 9);
    let reverse_request = build::echo(HOST, SENDER, true, 9);
    assert_eq!(f.check(Direction::Egress, &reply, now), NO_RULE);
    assert_eq!(f.check(Direction::Ingress, &request, now), Verdict::Pass);
    assert_eq!(f.check(Direction::Egress, &reply, now), Verdict::Pass);
    assert_eq!(f.check(Direction::Egress, &reverse_request, now), NO_RULE);
    let stats = f.stats();
    assert_eq!(stats.passed, 4);
    assert_eq!(stats.opened, 2);
    assert_eq!(stats.dropped.get(DropReason::NoRule), 5);
}

#[test]
fn icmp_errors_about_allowed_flows_pass() {
    let now = crate::test_clock_start();
    let mut f = one_way();
    let syn = build::tcp(SENDER, 40000, HOST, 443, TCP_SYN);
    let unreachable = build::icmp_error(HOST, SENDER, 3, &syn);
    assert_eq!(f.check(Direction::Egress, &unreachable, now), NO_RULE);
    assert_eq!(f.check(Direction::Ingress, &syn, now), Verdict::Pass);
    assert_eq!(f.check(Direction::Egress, &unreachable, now), Verdict::Pass);
    // An error quoting a flow that does not exist does not pass.
    let stray = build::tcp(SENDER, 40009, HOST, 443, TCP_SYN);
    let unrelated = build::icmp_error(HOST, SENDER, 3, &stray);
    assert_eq!(f.check(Direction::Egress, &unrelated, now), NO_RULE);
}

#[test]
fn flows_expire_and_revoked_rules_cut_replies() {
    let t0 = crate::test_clock_start();
    let mut f = one_way();
    let request = build::udp(SENDER, 5000, HOST, 53);
    let reply = build::udp(HOST, 53, SENDER, 5000);
    f.set_rules(FilterRules {
        ingress: vec![rule(
            Protocol::Udp,
            Some(PortRange::single(53)),
            "100.64.0.0/10",
            "192.168.77.20/32",
        )],
        egress: vec![],
    });
    assert_eq!(f.check(Direction::Ingress, &request, t0), Verdict::Pass);
    assert_eq!(f.check(Direction::Egress, &reply, t0), Verdict::Pass);
    let later = t0 + Timeouts::default().udp_replied + Duration::from_secs(1);
    assert_eq!(f.check(Direction::Egress, &reply, later), NO_RULE);
    assert_eq!(f.check(Direction::Ingress, &request, later), Verdict::Pass);
    f.set_rules(FilterRules::default());
    assert_eq!(f.stats().revoked, 1);
    assert_eq!(f.flow_count(), 0);
    assert_eq!(f.check(Direction::Egress, &reply, later), NO_RULE);
}

#[test]
fn malformed_and_foreign_packets_are_counted() {
    let now = crate::test_clock_start();
    let mut f = one_way();
    assert_eq!(
        f.check(Direction::Ingress, &[0x45, 0], now),
        Verdict::Drop(DropReason::Malformed)
    );
    assert_eq!(
        f.check(Direction::Ingress, &[0x60; 48], now),
        Verdict::Drop(DropReason::NotIpv4)
    );
    let mut fragment = build::tcp(SENDER, 40000, HOST, 443, TCP_ACK);
    fragment[6..8].copy_from_slice(&10u16.to_be_bytes());
    assert_eq!(
        f.check(Direction::Ingress, &fragment, now),
        Verdict::Drop(DropReason::Fragment)
    );
    assert_eq!(f.stats().dropped.total(), 3);
}

#[test]
fn the_table_stays_bounded() {
    let now = crate::test_clock_start();
    let mut f = PeerFilter::new(
        FilterRules {
            ingress: vec![rule(Protocol::Udp, None, "0.0.0.0/0", "0.0.0.0/0")],
            egress: vec![],
        },
        FilterConfig {
            max_flows: 16,
            timeouts: Timeouts::default(),
        },
    );
    for port in 0..1000 {
        f.check(Direction::Ingress, &build::udp(SENDER, port, HOST, 53), now);
    }
    assert_eq!(f.flow_count(), 16);
    assert_eq!(f.stats().evicted, 1000 - 16);
    // The newest flow is still there, the first one is gone.
    assert_eq!(
        f.check(Direction::Egress, &build::udp(HOST, 53, SENDER, 999), now),
        Verdict::Pass
    );
    assert_eq!(
        f.check(Direction::Egress, &build::udp(HOST, 53, SENDER, 0), now),
        NO_RULE
    );
}

// ---- Property tests -------------------------------------------------------------------------

/// A small world so that random packets often hit rules and each other's flows.
fn small_addr() -> impl Strategy<Value = Ipv4Addr> {
    (0u8..4).prop_map(|i| Ipv4Addr::new(10, 0, 0, i))
}

fn small_entry() -> impl Strategy<Value = AddrEntry> {
    prop_oneof![
        (0u8..4, 30u8..=32).prop_map(|(i, len)| AddrEntry::Net(
            Ipv4Net::new(Ipv4Addr::new(10, 0, 0, i), len)
                .unwrap()
                .trunc()
        )),
        (0u8..4, 0u8..4).prop_map(|(a, b)| AddrEntry::Range {
            first: Ipv4Addr::new(10, 0, 0, a.min(b)),
            last: Ipv4Addr::new(10, 0, 0, a.max(b)),
        }),
    ]
}

fn any_rule() -> impl Strategy<Value = AllowRule> {
    (
        prop_oneof![
            Just(Protocol::Any),
            Just(Protocol::Icmp),
            Just(Protocol::Tcp),
            Just(Protocol::Udp)
        ],
        proptest::option::of((1u16..4, 0u16..3).prop_map(|(f, n)| PortRange {
            first: f,
            last: f + n,
        })),
        proptest::collection::vec(small_entry(), 0..3),
        proptest::collection::vec(small_entry(), 0..3),
    )
        .prop_map(|(protocol, ports, sources, destinations)| AllowRule {
            protocol,
            ports,
            sources,
            destinations,
            label: None,
        })
}

fn any_rules() -> impl Strategy<Value = FilterRules> {
    (
        proptest::collection::vec(any_rule(), 0..4),
        proptest::collection::vec(any_rule(), 0..4),
    )
        .prop_map(|(ingress, egress)| FilterRules { ingress, egress })
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Tcp(u8),
    Udp,
    Echo(bool),
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    direction: Direction,
    kind: Kind,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
}

impl Sent {
    fn bytes(&self) -> Vec<u8> {
        match self.kind {
            Kind::Tcp(flags) => build::tcp(self.src, self.src_port, self.dst, self.dst_port, flags),
            Kind::Udp => build::udp(self.src, self.src_port, self.dst, self.dst_port),
            Kind::Echo(request) => build::echo(self.src, self.dst, request, self.src_port),
        }
    }

    fn packet(&self) -> crate::packet::Packet {
        crate::packet::parse(&self.bytes()).unwrap()
    }
}

fn any_sent() -> impl Strategy<Value = Sent> {
    (
        prop_oneof![Just(Direction::Ingress), Just(Direction::Egress)],
        prop_oneof![
            prop_oneof![
                Just(TCP_SYN),
                Just(TCP_ACK),
                Just(TCP_SYN | TCP_ACK),
                Just(TCP_FIN | TCP_ACK)
            ]
            .prop_map(Kind::Tcp),
            Just(Kind::Udp),
            any::<bool>().prop_map(Kind::Echo),
        ],
        small_addr(),
        small_addr(),
        1u16..6,
        1u16..6,
    )
        .prop_map(|(direction, kind, src, dst, src_port, dst_port)| Sent {
            direction,
            kind,
            src,
            dst,
            src_port,
            dst_port,
        })
}

fn allowed_by_rule(rules: &FilterRules, s: &Sent) -> bool {
    let p = s.packet();
    super::filter_rules_allow_for_tests(rules.for_direction(s.direction), &p)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// With room for every flow and no time passing, the filter behaves exactly as the model:
    /// a packet passes if a rule of its direction allows it, or it continues a flow a rule
    /// opened, or it answers such a flow.
    #[test]
    fn matches_the_model(rules in any_rules(), sent in proptest::collection::vec(any_sent(), 0..60)) {
        let now = crate::test_clock_start();
        let mut filter = PeerFilter::new(rules.clone(), FilterConfig::default());
        let mut opened: BTreeSet<(Direction, Flow)> = BTreeSet::new();
        for s in &sent {
            let flow = s.packet().flow();
            let by_rule = allowed_by_rule(&rules, s);
            let same = opened.contains(&(s.direction, flow));
            let reply = opened.contains(&(s.direction.opposite(), flow.reversed()));
            let expected = match s.kind {
                Kind::Echo(true) => by_rule || same,
                Kind::Echo(false) => by_rule || reply,
                _ => by_rule || same || reply,
            };
            let opens = match s.kind {
                Kind::Echo(true) => by_rule && !same,
                Kind::Echo(false) => false,
                _ => by_rule && !same && !reply,
            };
            if opens {
                opened.insert((s.direction, flow));
            }
            let verdict = filter.check(s.direction, &s.bytes(), now);
            prop_assert_eq!(verdict == Verdict::Pass, expected, "{:?}", s);
        }
    }

    /// Whatever the table size and timing: nothing passes that no rule allows unless it
    /// belongs to a flow that a rule-allowed packet opened earlier.
    #[test]
    fn nothing_passes_without_a_grant(
        rules in any_rules(),
        sent in proptest::collection::vec((any_sent(), 0u64..100), 0..80),
        max_flows in 1usize..6,
    ) {
        let mut now = crate::test_clock_start();
        let mut filter = PeerFilter::new(rules.clone(), FilterConfig { max_flows, timeouts: Timeouts::default() });
        let mut ever_opened: BTreeSet<(Direction, Flow)> = BTreeSet::new();
        for (s, advance) in &sent {
            now += Duration::from_secs(*advance);
            let flow = s.packet().flow();
            let by_rule = allowed_by_rule(&rules, s);
            if filter.check(s.direction, &s.bytes(), now) == Verdict::Pass {
                prop_assert!(
                    by_rule
                        || ever_opened.contains(&(s.direction, flow))
                        || ever_opened.contains(&(s.direction.opposite(), flow.reversed())),
                    "{:?} passed without a grant", s
                );
            }
            if by_rule {
                ever_opened.insert((s.direction, flow));
            }
        }
        prop_assert!(filter.flow_count() <= max_flows);
    }

    /// The reply to any packet a rule lets open a TCP or UDP flow passes right after.
    #[test]
    fn replies_pass(rules in any_rules(), s in any_sent()) {
        let now = crate::test_clock_start();
        let mut filter = PeerFilter::new(rules, FilterConfig::default());
        if matches!(s.kind, Kind::Echo(false)) {
            return Ok(());
        }
        if filter.check(s.direction, &s.bytes(), now) == Verdict::Pass {
            let reply = Sent {
                direction: s.direction.opposite(),
                kind: match s.kind { Kind::Echo(_) => Kind::Echo(false), k => k },
                src: s.dst,
                dst: s.src,
                src_port: if matches!(s.kind, Kind::Echo(_)) { s.src_port } else { s.dst_port },
                dst_port: s.src_port,
            };
            prop_assert_eq!(filter.check(reply.direction, &reply.bytes(), now), Verdict::Pass);
        }
    }

    /// Arbitrary bytes never panic and never pass without a rule.
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let mut filter = PeerFilter::new(FilterRules::default(), FilterConfig::default());
        prop_assert_ne!(filter.check(Direction::Ingress, &bytes, crate::test_clock_start()), Verdict::Pass);
    }
}
