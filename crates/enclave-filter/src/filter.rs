//! The per-peer stateful filter: allow rules for the packets that open flows, a connection
//! tracker for everything after.

use std::time::Instant;

use crate::conntrack::{ConnTrack, Timeouts};
use crate::packet::{self, Flow, Packet, Transport, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};
use crate::{AllowRule, Protocol, TCP_FIN, TCP_RST};

/// Which way a packet travels through the tunnel, seen from this system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// From the peer, decrypted, towards this system or the networks behind it.
    Ingress,
    /// From this system or the networks behind it, towards the peer, before encryption.
    Egress,
}

impl Direction {
    /// The other direction.
    pub fn opposite(self) -> Direction {
        match self {
            Direction::Ingress => Direction::Egress,
            Direction::Egress => Direction::Ingress,
        }
    }
}

/// Why the filter dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// The IPv4 header or the transport header is truncated or inconsistent.
    Malformed,
    /// Not an IPv4 packet (the rules speak of IPv4 only).
    NotIpv4,
    /// A later fragment that no port-less rule allows (its ports are unknown).
    Fragment,
    /// No rule allows it and it belongs to no allowed flow.
    NoRule,
}

impl DropReason {
    /// Every reason, in the order [`DropCounts`] keeps them.
    pub const ALL: [DropReason; 4] = [
        DropReason::Malformed,
        DropReason::NotIpv4,
        DropReason::Fragment,
        DropReason::NoRule,
    ];

    /// A short stable name, for counters and status output.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NotIpv4 => "not-ipv4",
            DropReason::Fragment => "fragment",
            DropReason::NoRule => "no-rule",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Dropped packets counted by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::ALL.len()]);

impl DropCounts {
    /// The count for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    /// The total over all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Each reason with its count.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.get(*r)))
    }

    fn add(&mut self, reason: DropReason) {
        self.0[reason.index()] += 1;
    }
}

/// The counters of one filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterStats {
    /// Packets let through.
    pub passed: u64,
    /// Flows opened by a rule.
    pub opened: u64,
    /// Flows evicted to make room while still live.
    pub evicted: u64,
    /// Flows removed because new rules no longer allow them.
    pub revoked: u64,
    /// Packets dropped, by reason.
    pub dropped: DropCounts,
}

/// The filter's decision on one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Pass,
    /// Drop it, for this reason (already counted).
    Drop(DropReason),
}

/// The allow rules of one peer, by the direction of the packet that opens a flow.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct FilterRules {
    /// Flows the peer may open towards this system (or the networks behind it).
    pub ingress: Vec<AllowRule>,
    /// Flows this system (or the networks behind it) may open towards the peer.
    pub egress: Vec<AllowRule>,
}

impl FilterRules {
    /// The rules for flows opened in `direction`.
    pub fn for_direction(&self, direction: Direction) -> &[AllowRule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// Sizes and timeouts of a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterConfig {
    /// The most flows remembered at once; beyond it the least recently used is evicted.
    pub max_flows: usize,
    /// How long flows are remembered.
    pub timeouts: Timeouts,
}

impl Default for FilterConfig {
    fn default() -> Self {
        Self {
            max_flows: 4096,
            timeouts: Timeouts::default(),
        }
    }
}

/// Whether `rule` lets a flow with these facts be opened. A rule with ports matches only TCP
/// and UDP packets whose destination port is in range.
fn rule_allows(rule: &AllowRule, protocol: u8, flow: &Flow, dst_port: Option<u16>) -> bool {
    let protocol_ok = match rule.protocol {
        Protocol::Any => true,
        Protocol::Icmp => protocol == IPPROTO_ICMP,
        Protocol::Tcp => protocol == IPPROTO_TCP,
        Protocol::Udp => protocol == IPPROTO_UDP,
    };
    protocol_ok
        && match rule.ports {
            None => true,
            Some(range) => dst_port.is_some_and(|p| range.contains(p)),
        }
        && rule.sources.iter().any(|s| s.contains(flow.src))
        && rule.destinations.iter().any(|d| d.contains(flow.dst))
}

pub(crate) fn rules_allow(rules: &[AllowRule], packet: &Packet) -> bool {
    let flow = packet.flow();
    let port = packet.dst_port();
    rules
        .iter()
        .any(|r| rule_allows(r, packet.protocol(), &flow, port))
}

/// The stateful filter of one peer. Feed it every packet to or from the peer with
/// [`PeerFilter::check`]; call [`PeerFilter::handle_timeout`] now and then (every second is
/// plenty) to forget expired flows.
#[derive(Debug)]
pub struct PeerFilter {
    rules: FilterRules,
    flows: ConnTrack,
    stats: FilterStats,
}

impl PeerFilter {
    /// A filter with these rules and an empty flow table.
    pub fn new(rules: FilterRules, config: FilterConfig) -> Self {
        Self {
            rules,
            flows: ConnTrack::new(config.max_flows, config.timeouts),
            stats: FilterStats::default(),
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &FilterRules {
        &self.rules
    }

    /// Replaces the rules. Flows whose opening packet the new rules no longer allow are
    /// forgotten at once, so a revoked grant stops their replies too.
    pub fn set_rules(&mut self, rules: FilterRules) {
        self.rules = rules;
        let rules = &self.rules;
        let revoked = self.flows.retain_keys(|(direction, flow)| {
            let port = matches!(flow.protocol, IPPROTO_TCP | IPPROTO_UDP).then_some(flow.dst_port);
            rules
                .for_direction(*direction)
                .iter()
                .any(|r| rule_allows(r, flow.protocol, flow, port))
        });
        self.stats.revoked += revoked as u64;
    }

    /// The counters so far.
    pub fn stats(&self) -> &FilterStats {
        &self.stats
    }

    /// The number of flows remembered (expired ones may linger until the next timeout).
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// Forgets the flows that expired by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.flows.sweep(now);
    }

    /// Decides on one IPv4 packet travelling in `direction` at `now`, and updates the flow
    /// table and the counters. Never allocates, never panics.
    pub fn check(&mut self, direction: Direction, bytes: &[u8], now: Instant) -> Verdict {
        let verdict = match packet::parse(bytes) {
            Ok(packet) => self.decide(direction, &packet, now),
            Err(reason) => Verdict::Drop(reason),
        };
        match verdict {
            Verdict::Pass => self.stats.passed += 1,
            Verdict::Drop(reason) => self.stats.dropped.add(reason),
        }
        verdict
    }

    fn decide(&mut self, direction: Direction, packet: &Packet, now: Instant) -> Verdict {
        let flow = packet.flow();
        match packet.transport {
            Transport::Tcp { flags, .. } => {
                self.stateful(direction, packet, now, flags & (TCP_FIN | TCP_RST) != 0)
            }
            Transport::Udp { .. } => self.stateful(direction, packet, now, false),
            Transport::IcmpEcho { request: true, .. } => {
                if let Some(slot) = self.flows.lookup(&(direction, flow), now) {
                    self.flows.touch(slot, false, false, now);
                    Verdict::Pass
                } else {
                    self.open(direction, packet, now, false)
                }
            }
            Transport::IcmpEcho { request: false, .. } => {
                let opener = (direction.opposite(), flow.reversed());
                if let Some(slot) = self.flows.lookup(&opener, now) {
                    self.flows.touch(slot, true, false, now);
                    Verdict::Pass
                } else {
                    self.stateless(direction, packet, DropReason::NoRule)
                }
            }
            Transport::IcmpError { quoted } => {
                // The quoted packet was sent by this error's receiver, so it travelled the
                // other way. It is related to a flow if it was that flow's opener or a reply.
                let related = quoted.src == packet.dst
                    && (self
                        .flows
                        .lookup(&(direction.opposite(), quoted), now)
                        .is_some()
                        || self
                            .flows
                            .lookup(&(direction, quoted.reversed()), now)
                            .is_some());
                if related {
                    Verdict::Pass
                } else {
                    self.stateless(direction, packet, DropReason::NoRule)
                }
            }
            Transport::IcmpOther { .. } => self.stateless(direction, packet, DropReason::NoRule),
            Transport::Opaque { protocol } => {
                if matches!(protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP) {
                    // A later fragment: its ports are unknown.
                    self.stateless(direction, packet, DropReason::Fragment)
                } else {
                    self.stateful(direction, packet, now, false)
                }
            }
        }
    }

    /// A packet of a protocol with flows (TCP, UDP, and port-less protocols): the same flow,
    /// a reply to a flow, or a new flow that a rule must allow.
    fn stateful(
        &mut self,
        direction: Direction,
        packet: &Packet,
        now: Instant,
        closing: bool,
    ) -> Verdict {
        let flow = packet.flow();
        if let Some(slot) = self.flows.lookup(&(direction, flow), now) {
            self.flows.touch(slot, false, closing, now);
            return Verdict::Pass;
        }
        let opener = (direction.opposite(), flow.reversed());
        if let Some(slot) = self.flows.lookup(&opener, now) {
            self.flows.touch(slot, true, closing, now);
            return Verdict::Pass;
        }
        self.open(direction, packet, now, closing)
    }

    fn open(
        &mut self,
        direction: Direction,
        packet: &Packet,
        now: Instant,
        closing: bool,
    ) -> Verdict {
        if !rules_allow(self.rules.for_direction(direction), packet) {
            return Verdict::Drop(DropReason::NoRule);
        }
        let protocol = packet.protocol();
        let evicted = self.flows.insert(
            (direction, packet.flow()),
            protocol == IPPROTO_TCP,
            protocol == IPPROTO_ICMP,
            closing,
            now,
        );
        self.stats.opened += 1;
        if evicted.is_some() {
            self.stats.evicted += 1;
        }
        Verdict::Pass
    }

    /// A packet that opens no flow: a rule must allow it.
    fn stateless(&mut self, direction: Direction, packet: &Packet, reason: DropReason) -> Verdict {
        if rules_allow(self.rules.for_direction(direction), packet) {
            Verdict::Pass
        } else {
            Verdict::Drop(reason)
        }
    }
}
