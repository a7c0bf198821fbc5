//! The sans-IO core: what the nftables table must hold for a [`NatPolicy`], as plain values.
//!
//! [`Ruleset::from_policy`] decides every set, chain and rule; the nftables backend only turns
//! them into netlink messages, and [`Ruleset`]'s `Display` writes them in the syntax of
//! `nft list table ip enclave` (counters without their numbers), for tests and for the docs.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::policy::{comment_text, interval_text, ForwardGrant, NatPolicy, PortRange, Protocol};

/// The name of our nftables table (family `ip`).
pub const TABLE: &str = "enclave";
/// The NAT chain (nftables) and the nat-table chain (iptables), as the guide names it.
pub const NAT_CHAIN: &str = "ENCLAVE";
/// The forward-filter chain in both backends.
pub const FORWARD_CHAIN: &str = "ENCLAVE-FORWARD";
/// The host filter's chain for traffic from the tunnel to this host (nftables).
pub const HOST_INPUT_CHAIN: &str = "ENCLAVE-INPUT";
/// The host filter's chain for traffic from this host into the tunnel (nftables).
pub const HOST_OUTPUT_CHAIN: &str = "ENCLAVE-OUTPUT";

/// What our forward chain does with forwarded traffic that neither enters nor leaves the
/// tunnel interface (between two other interfaces of the host, for instance the underlay and a
/// LAN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtherForwarding {
    /// The host forwarded before we turned forwarding on: forwarding between its other
    /// interfaces stays exactly as it was, so the chain adds nothing for it.
    Untouched,
    /// The host did not forward before we turned forwarding on: the chain drops it, so that
    /// only tunnel traffic is forwarded because of us. Being in the kernel, the drop outlives
    /// a crash of the agent (and its tunnel interface).
    Dropped,
}

/// The comment of the rule that drops [`OtherForwarding::Dropped`] traffic.
pub const OTHER_FORWARDING_COMMENT: &str =
    "not via the tunnel: the host did not forward before enclave turned forwarding on";

/// The whole content of our table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// The address sets the rules refer to.
    pub sets: Vec<SetSpec>,
    /// The base chains, each with its rules.
    pub chains: Vec<ChainSpec>,
}

/// A named interval set of IPv4 addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    /// Its name in the table.
    pub name: String,
    /// Disjoint, non-adjacent, ascending inclusive intervals.
    pub intervals: Vec<(Ipv4Addr, Ipv4Addr)>,
}

/// Where a base chain hooks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    /// `type nat hook postrouting priority srcnat` (100).
    NatPostrouting,
    /// `type filter hook forward priority filter` (0).
    FilterForward,
    /// `type filter hook input priority filter` (0).
    FilterInput,
    /// `type filter hook output priority filter` (0).
    FilterOutput,
}

/// A base chain with policy accept: it only acts on what its rules match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSpec {
    /// Its name in the table.
    pub name: &'static str,
    /// Where it hooks in.
    pub kind: ChainKind,
    /// Its rules, in order.
    pub rules: Vec<RuleSpec>,
}

/// One rule: all matches must hold; a counter; a verdict; a comment naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// The conditions, all of which must hold.
    pub matches: Vec<Match>,
    /// What happens to a matching packet.
    pub verdict: Verdict,
    /// Names the rule in `nft list`, in errors and in the read-back check.
    pub comment: String,
}

/// A condition on a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `iifname NAME`.
    IifName(String),
    /// `oifname NAME`.
    OifName(String),
    /// `iifname != NAME`.
    IifNameNot(String),
    /// `oifname != NAME`.
    OifNameNot(String),
    /// `ip saddr NET`.
    Saddr(Ipv4Net),
    /// `ip saddr @SET`.
    SaddrInSet(String),
    /// `ip daddr @SET`.
    DaddrInSet(String),
    /// `meta l4proto P`, alone when no port range follows.
    L4Proto(Protocol),
    /// `tcp dport 80-443` (after an `L4Proto`).
    Dport(Protocol, PortRange),
    /// `ct state …`.
    CtState(CtState),
}

/// The conntrack states we match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtState {
    /// Packets of granted flows: new ones and those already open (`established,new`).
    NewEstablished,
    /// Replies (`established,related`).
    EstablishedRelated,
    /// ICMP errors about open flows (`related`).
    Related,
}

/// What happens to a matching packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Accept,
    /// Drop it.
    Drop,
    /// Rewrite its source address to this one.
    Snat(Ipv4Addr),
}

impl Ruleset {
    /// Decides the table's content for `policy` on a host that forwarded before us
    /// ([`OtherForwarding::Untouched`]).
    pub fn from_policy(policy: &NatPolicy) -> Ruleset {
        Ruleset::for_gateway(policy, OtherForwarding::Untouched)
    }

    /// Decides the table's content for `policy`, with `others` saying what becomes of
    /// forwarded traffic that does not touch the tunnel.
    pub fn for_gateway(policy: &NatPolicy, others: OtherForwarding) -> Ruleset {
        let tun = policy.tunnel_interface.clone();
        let mut snat: Vec<_> = policy.snat.clone();
        snat.sort();
        snat.dedup();
        let nat_rules = snat
            .iter()
            .map(|s| RuleSpec {
                matches: vec![
                    Match::OifName(s.egress_interface.clone()),
                    Match::Saddr(s.source),
                ],
                verdict: Verdict::Snat(s.to),
                comment: comment_text(&format!("snat {} to {}", s.egress_interface, s.to)),
            })
            .collect();

        let mut sets = Vec::new();
        let mut forward = vec![
            RuleSpec {
                matches: vec![
                    Match::OifName(tun.clone()),
                    Match::CtState(CtState::EstablishedRelated),
                ],
                verdict: Verdict::Accept,
                comment: "replies to the overlay".into(),
            },
            RuleSpec {
                matches: vec![
                    Match::IifName(tun.clone()),
                    Match::CtState(CtState::Related),
                ],
                verdict: Verdict::Accept,
                comment: "related from the overlay".into(),
            },
        ];
        for (i, grant) in policy.grants.iter().enumerate() {
            let name = format!("grant{i}");
            let comment = format!("grant {i}: {}", grant.label);
            forward.extend(grant_rule(
                &mut sets,
                &name,
                grant,
                Match::IifName(tun.clone()),
                &comment,
            ));
        }
        forward.push(RuleSpec {
            matches: vec![Match::IifName(tun.clone())],
            verdict: Verdict::Drop,
            comment: "drop the rest from the overlay".into(),
        });
        forward.push(RuleSpec {
            matches: vec![Match::OifName(tun.clone())],
            verdict: Verdict::Drop,
            comment: "one way: no new connections into the overlay".into(),
        });
        if others == OtherForwarding::Dropped {
            forward.push(other_forwarding_rule(&tun));
        }

        let mut chains = vec![
            ChainSpec {
                name: NAT_CHAIN,
                kind: ChainKind::NatPostrouting,
                rules: nat_rules,
            },
            ChainSpec {
                name: FORWARD_CHAIN,
                kind: ChainKind::FilterForward,
                rules: forward,
            },
        ];
        if let Some(host) = &policy.host {
            chains.push(ChainSpec {
                name: HOST_INPUT_CHAIN,
                kind: ChainKind::FilterInput,
                rules: host_rules(&mut sets, "in", &host.inbound, Match::IifName(tun.clone())),
            });
            chains.push(ChainSpec {
                name: HOST_OUTPUT_CHAIN,
                kind: ChainKind::FilterOutput,
                rules: host_rules(
                    &mut sets,
                    "out",
                    &host.outbound,
                    Match::OifName(tun.clone()),
                ),
            });
        }
        Ruleset { sets, chains }
    }

    /// The number of set elements the kernel holds for these sets (an interval is a start
    /// element plus an end element, except one that reaches 255.255.255.255).
    pub fn element_count(&self) -> usize {
        self.sets.iter().map(SetSpec::element_count).sum()
    }
}

/// The rule that drops what is forwarded between two interfaces that are not the tunnel.
fn other_forwarding_rule(tun: &str) -> RuleSpec {
    RuleSpec {
        matches: vec![
            Match::IifNameNot(tun.to_owned()),
            Match::OifNameNot(tun.to_owned()),
        ],
        verdict: Verdict::Drop,
        comment: OTHER_FORWARDING_COMMENT.into(),
    }
}

/// The rule that lets `grant`'s flows open (`on`: the interface match), with its two address
/// sets `NAME_src` and `NAME_dst` added to `sets`; `None` for a grant with no sources or no
/// destinations (it grants nothing). Established flows match too: a revoked grant stops its
/// open connections at the next apply.
fn grant_rule(
    sets: &mut Vec<SetSpec>,
    name: &str,
    grant: &ForwardGrant,
    on: Match,
    comment: &str,
) -> Option<RuleSpec> {
    if grant.sources.is_empty() || grant.destinations.is_empty() {
        return None;
    }
    let (src, dst) = (format!("{name}_src"), format!("{name}_dst"));
    sets.push(SetSpec {
        name: src.clone(),
        intervals: grant.sources.intervals(),
    });
    sets.push(SetSpec {
        name: dst.clone(),
        intervals: grant.destinations.intervals(),
    });
    let mut matches = vec![on, Match::SaddrInSet(src), Match::DaddrInSet(dst)];
    if let Some(proto) = grant.protocol {
        matches.push(Match::L4Proto(proto));
        if let (Some(ports), true) = (grant.ports, proto != Protocol::Icmp) {
            matches.push(Match::Dport(proto, ports));
        }
    }
    matches.push(Match::CtState(CtState::NewEstablished));
    Some(RuleSpec {
        matches,
        verdict: Verdict::Accept,
        comment: comment_text(comment),
    })
}

/// One direction of the host filter: replies of open flows pass, granted flows may open
/// (`ct state established,new`, so a revoked grant stops its open flows too), the rest on the
/// tunnel (`on`: `iifname` or `oifname`) is dropped.
fn host_rules(
    sets: &mut Vec<SetSpec>,
    tag: &str,
    grants: &[ForwardGrant],
    on: Match,
) -> Vec<RuleSpec> {
    let mut rules = vec![RuleSpec {
        matches: vec![on.clone(), Match::CtState(CtState::EstablishedRelated)],
        verdict: Verdict::Accept,
        comment: format!("host {tag}: replies"),
    }];
    for (i, grant) in grants.iter().enumerate() {
        let name = format!("host_{tag}{i}");
        let comment = format!("host {tag} {i}: {}", grant.label);
        rules.extend(grant_rule(sets, &name, grant, on.clone(), &comment));
    }
    rules.push(RuleSpec {
        matches: vec![on],
        verdict: Verdict::Drop,
        comment: format!("host {tag}: drop the rest"),
    });
    rules
}

impl SetSpec {
    /// The number of elements the kernel holds for this set: a start element per interval plus
    /// an end element, except for an interval that reaches 255.255.255.255.
    pub fn element_count(&self) -> usize {
        self.intervals
            .iter()
            .map(|(_, last)| if *last == Ipv4Addr::BROADCAST { 1 } else { 2 })
            .sum()
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::IifName(name) => write!(f, "iifname \"{name}\""),
            Match::OifName(name) => write!(f, "oifname \"{name}\""),
            Match::IifNameNot(name) => write!(f, "iifname != \"{name}\""),
            Match::OifNameNot(name) => write!(f, "oifname != \"{name}\""),
            Match::Saddr(net) => write!(f, "ip saddr {net}"),
            Match::SaddrInSet(set) => write!(f, "ip saddr @{set}"),
            Match::DaddrInSet(set) => write!(f, "ip daddr @{set}"),
            Match::L4Proto(proto) => write!(f, "meta l4proto {}", proto.name()),
            Match::Dport(proto, ports) => write!(f, "{} dport {ports}", proto.name()),
            Match::CtState(CtState::NewEstablished) => f.write_str("ct state established,new"),
            Match::CtState(CtState::Related) => f.write_str("ct state related"),
            Match::CtState(CtState::EstablishedRelated) => {
                f.write_str("ct state established,related")
            }
        }
    }
}

impl fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut matches = self.matches.iter().peekable();
        while let Some(m) = matches.next() {
            // `tcp dport 80` implies `meta l4proto tcp`; nft shows only the former.
            if let (Match::L4Proto(_), Some(Match::Dport(..))) = (m, matches.peek()) {
                continue;
            }
            write!(f, "{m} ")?;
        }
        f.write_str("counter ")?;
        match self.verdict {
            Verdict::Accept => f.write_str("accept")?,
            Verdict::Drop => f.write_str("drop")?,
            Verdict::Snat(to) => write!(f, "snat to {to}")?,
        }
        write!(f, " comment \"{}\"", self.comment)
    }
}

impl fmt::Display for Ruleset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "table ip {TABLE} {{")?;
        let mut first = true;
        let mut separate = |f: &mut fmt::Formatter<'_>| {
            let blank = if first { Ok(()) } else { writeln!(f) };
            first = false;
            blank
        };
        for set in &self.sets {
            separate(f)?;
            writeln!(f, "\tset {} {{", set.name)?;
            writeln!(f, "\t\ttype ipv4_addr")?;
            writeln!(f, "\t\tflags interval")?;
            let elements: Vec<String> = set
                .intervals
                .iter()
                .map(|(a, b)| interval_text(*a, *b))
                .collect();
            writeln!(f, "\t\telements = {{ {} }}", elements.join(", "))?;
            writeln!(f, "\t}}")?;
        }
        for chain in &self.chains {
            separate(f)?;
            writeln!(f, "\tchain {} {{", chain.name)?;
            let hook = match chain.kind {
                ChainKind::NatPostrouting => "type nat hook postrouting priority srcnat",
                ChainKind::FilterForward => "type filter hook forward priority filter",
                ChainKind::FilterInput => "type filter hook input priority filter",
                ChainKind::FilterOutput => "type filter hook output priority filter",
            };
            writeln!(f, "\t\t{hook}; policy accept;")?;
            for rule in &chain.rules {
                writeln!(f, "\t\t{rule}")?;
            }
            writeln!(f, "\t}}")?;
        }
        writeln!(f, "}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{web_grant, AddressSet, ForwardGrant};
    use expect_test::expect;

    fn policy() -> NatPolicy {
        NatPolicy {
            grants: vec![
                web_grant("192.168.77.21".parse().unwrap(), "web"),
                ForwardGrant {
                    sources: AddressSet::new().net("100.64.0.0/24".parse().unwrap()),
                    destinations: AddressSet::new().net("192.168.77.0/24".parse().unwrap()),
                    protocol: Some(Protocol::Icmp),
                    ports: None,
                    label: "ping".into(),
                },
                ForwardGrant {
                    sources: AddressSet::new(),
                    destinations: AddressSet::new().net("10.0.0.0/8".parse().unwrap()),
                    protocol: None,
                    ports: None,
                    label: "nobody".into(),
                },
            ],
            ..NatPolicy::sample()
        }
    }

    #[test]
    fn host_filter_chains_hold_replies_grants_and_a_drop() {
        let mut policy = policy();
        policy.host = Some(crate::policy::HostFilter {
            inbound: vec![ForwardGrant {
                sources: AddressSet::new().net("100.64.0.2/32".parse().unwrap()),
                destinations: AddressSet::new().net("100.64.0.11/32".parse().unwrap()),
                protocol: Some(Protocol::Icmp),
                ports: None,
                label: "gw: ping".into(),
            }],
            outbound: Vec::new(),
        });
        let ruleset = Ruleset::from_policy(&policy);
        let chain = |name: &str| {
            ruleset
                .chains
                .iter()
                .find(|c| c.name == name)
                .unwrap_or_else(|| panic!("no chain {name}"))
        };
        let input: Vec<String> = chain(HOST_INPUT_CHAIN)
            .rules
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            input,
            [
                "iifname \"enclave0\" ct state established,related counter accept comment \"host in: replies\"",
                "iifname \"enclave0\" ip saddr @host_in0_src ip daddr @host_in0_dst meta l4proto icmp ct state established,new counter accept comment \"host in 0: gw: ping\"",
                "iifname \"enclave0\" counter drop comment \"host in: drop the rest\"",
            ]
        );
        let output: Vec<String> = chain(HOST_OUTPUT_CHAIN)
            .rules
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(output.len(), 2, "replies and the drop: {output:?}");
        assert!(Ruleset::from_policy(&self::policy())
            .chains
            .iter()
            .all(|c| c.name != HOST_INPUT_CHAIN));
    }

    #[test]
    fn renders_the_table_as_nft_lists_it() {
        let text = Ruleset::from_policy(&policy()).to_string();
        expect![[r#"
            table ip enclave {
            	set grant0_src {
            		type ipv4_addr
            		flags interval
            		elements = { 100.64.0.11 }
            	}

            	set grant0_dst {
            		type ipv4_addr
            		flags interval
            		elements = { 192.168.77.20/31, 192.168.78.0/24 }
            	}

            	set grant1_src {
            		type ipv4_addr
            		flags interval
            		elements = { 100.64.0.0/24 }
            	}

            	set grant1_dst {
            		type ipv4_addr
            		flags interval
            		elements = { 192.168.77.0/24 }
            	}

            	chain ENCLAVE {
            		type nat hook postrouting priority srcnat; policy accept;
            		oifname "lan0" ip saddr 100.64.0.0/10 counter snat to 192.168.77.1 comment "snat lan0 to 192.168.77.1"
            	}

            	chain ENCLAVE-FORWARD {
            		type filter hook forward priority filter; policy accept;
            		oifname "enclave0" ct state established,related counter accept comment "replies to the overlay"
            		iifname "enclave0" ct state related counter accept comment "related from the overlay"
            		iifname "enclave0" ip saddr @grant0_src ip daddr @grant0_dst tcp dport 80-443 ct state established,new counter accept comment "grant 0: web"
            		iifname "enclave0" ip saddr @grant1_src ip daddr @grant1_dst meta l4proto icmp ct state established,new counter accept comment "grant 1: ping"
            		iifname "enclave0" counter drop comment "drop the rest from the overlay"
            		oifname "enclave0" counter drop comment "one way: no new connections into the overlay"
            	}
            }
        "#]]
        .assert_eq(&text);
    }

    #[test]
    fn a_host_that_did_not_forward_gets_a_drop_for_other_forwarding() {
        let untouched = Ruleset::for_gateway(&policy(), OtherForwarding::Untouched);
        assert_eq!(untouched, Ruleset::from_policy(&policy()));
        let dropped = Ruleset::for_gateway(&policy(), OtherForwarding::Dropped);
        let forward = |r: &Ruleset| -> Vec<String> {
            r.chains
                .iter()
                .find(|c| c.name == FORWARD_CHAIN)
                .map(|c| c.rules.iter().map(|r| r.to_string()).collect())
                .unwrap_or_default()
        };
        let (before, after) = (forward(&untouched), forward(&dropped));
        assert_eq!(after.len(), before.len() + 1);
        assert_eq!(after[..before.len()], before[..], "the rest is unchanged");
        expect![[r#"iifname != "enclave0" oifname != "enclave0" counter drop comment "not via the tunnel: the host did not forward before enclave turned forwarding on""#]]
        .assert_eq(&after[before.len()]);
        assert_eq!(untouched.sets, dropped.sets);
    }

    #[test]
    fn element_count_counts_start_and_end_elements() {
        let ruleset = Ruleset::from_policy(&policy());
        // grant0: 1 + 2 intervals, grant1: 1 + 1 interval, each with an end element.
        assert_eq!(ruleset.element_count(), 10);
    }

    mod properties {
        use super::super::*;
        use crate::policy::{AddressSet, ForwardGrant};
        use proptest::prelude::*;

        /// Whether `rule`'s interface matches can hold for a packet forwarded from `iif` to
        /// `oif` (its other matches are taken as possibly true).
        fn may_match(rule: &RuleSpec, iif: &str, oif: &str) -> bool {
            rule.matches.iter().all(|m| match m {
                Match::IifName(n) => n == iif,
                Match::OifName(n) => n == oif,
                Match::IifNameNot(n) => n != iif,
                Match::OifNameNot(n) => n != oif,
                _ => true,
            })
        }

        fn forward(ruleset: &Ruleset) -> &[RuleSpec] {
            ruleset
                .chains
                .iter()
                .find(|c| c.name == FORWARD_CHAIN)
                .map(|c| c.rules.as_slice())
                .unwrap_or_default()
        }

        fn grant() -> impl Strategy<Value = ForwardGrant> {
            (any::<u32>(), 0u8..=32, any::<u32>(), 0u8..=32).prop_map(|(s, sp, d, dp)| {
                let net = |a: u32, p: u8| {
                    Ipv4Net::new(Ipv4Addr::from(a), p)
                        .expect("prefix is at most 32")
                        .trunc()
                };
                ForwardGrant {
                    sources: AddressSet::new().net(net(s, sp)),
                    destinations: AddressSet::new().net(net(d, dp)),
                    protocol: None,
                    ports: None,
                    label: "g".into(),
                }
            })
        }

        proptest! {
            #[test]
            fn only_tunnel_traffic_is_forwarded_because_of_us(
                tun in "[a-z][a-z0-9]{0,14}",
                iif in "[a-z][a-z0-9]{0,14}",
                oif in "[a-z][a-z0-9]{0,14}",
                grants in proptest::collection::vec(grant(), 0..4),
            ) {
                let policy = NatPolicy {
                    tunnel_interface: tun.clone(),
                    overlay: "100.64.0.0/10".parse().unwrap(),
                    snat: Vec::new(),
                    grants,
                    host: None,
                };
                let untouched = Ruleset::for_gateway(&policy, OtherForwarding::Untouched);
                let dropped = Ruleset::for_gateway(&policy, OtherForwarding::Dropped);
                for (iif, oif) in [
                    (iif.as_str(), oif.as_str()),
                    (tun.as_str(), oif.as_str()),
                    (iif.as_str(), tun.as_str()),
                ] {
                    let touches_tunnel = iif == tun || oif == tun;
                    let hits = |r: &Ruleset| -> Vec<RuleSpec> {
                        forward(r).iter().filter(|rule| may_match(rule, iif, oif)).cloned().collect()
                    };
                    if touches_tunnel {
                        // Tunnel traffic meets exactly the same rules either way.
                        prop_assert_eq!(hits(&untouched), hits(&dropped));
                    } else {
                        // Between two other interfaces: nothing of ours when the host
                        // forwarded before us; else a drop and nothing that could accept.
                        prop_assert!(hits(&untouched).is_empty());
                        let hit = hits(&dropped);
                        prop_assert!(!hit.is_empty());
                        prop_assert!(hit.iter().all(|r| r.verdict == Verdict::Drop));
                    }
                }
            }
        }
    }

    #[test]
    fn the_same_policy_gives_the_same_ruleset() {
        let mut reordered = policy();
        reordered.snat.push(reordered.snat[0].clone());
        assert_eq!(
            Ruleset::from_policy(&policy()),
            Ruleset::from_policy(&reordered)
        );
    }
}
