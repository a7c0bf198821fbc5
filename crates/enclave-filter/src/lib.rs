//! The per-peer packet filter of the overlay: allow rules and a connection tracker.
//!
//! The policy engine (`enclave-policy`) produces the rules; the data plane
//! (`enclave-dataplane`) enforces them, one [`PeerFilter`] per peer, calling
//! [`PeerFilter::check`] on every packet that enters or leaves the tunnel. This crate is the
//! shared vocabulary between the two.
//!
//! Semantics: everything is denied unless an [`AllowRule`] in the right direction matches the
//! packet that *opens* a flow. Replies to an allowed flow pass through connection tracking, so
//! "one way" access is expressed by granting only one direction. Revoking a rule
//! ([`PeerFilter::set_rules`]) cuts the flows it had opened, replies included.
//!
//! # What it is for
//!
//! - Deciding, per packet and per peer, pass or drop, with the reason counted
//!   ([`FilterStats`]); never allocating or panicking on the packet path, whatever the bytes.
//! - Holding a bounded flow table (least recently used flows are evicted) with per-protocol
//!   timeouts ([`Timeouts`]).
//! - Describing rules as plain, serialisable values ([`FilterRules`]) that other layers can
//!   compare, print and store.
//!
//! # What it is not for
//!
//! - I/O: it never reads a packet from a device, never reads the clock (the caller passes
//!   `now`), never touches a file or a socket. `clippy.toml` enforces this.
//! - Deciding *who* may reach *what*: that is the policy engine's job; this crate only applies
//!   the rules it is given.
//! - IPv6, NAT, or the kernel's firewall (nftables, iptables): IPv6 packets are dropped as
//!   [`DropReason::NotIpv4`]; NAT and forwarding rules belong to `enclave-nat`.
//! - Being a general firewall: it parses just enough IPv4, TCP, UDP and ICMP to find a flow.
//!
//! # Example
//!
//! `cargo run -p enclave-filter --example one_way` builds a one-way HTTPS rule and shows an
//! allowed packet, its reply, and three packets that are dropped. In short:
//!
//! ```
//! use enclave_filter::packet::build;
//! use enclave_filter::*;
//! # #[allow(clippy::disallowed_methods)]
//! # let now = std::time::Instant::now();
//! let laptop = std::net::Ipv4Addr::new(100, 64, 0, 11);
//! let server = std::net::Ipv4Addr::new(192, 168, 77, 20);
//! let rules = FilterRules {
//!     ingress: vec![AllowRule {
//!         protocol: Protocol::Tcp,
//!         ports: Some(PortRange::single(443)),
//!         sources: vec![AddrEntry::Net(laptop.into())],
//!         destinations: vec![AddrEntry::Net(server.into())],
//!         label: None,
//!     }],
//!     egress: vec![],
//! };
//! let mut filter = PeerFilter::new(rules, FilterConfig::default());
//! let syn = build::tcp(laptop, 40000, server, 443, TCP_SYN);
//! let syn_ack = build::tcp(server, 443, laptop, 40000, TCP_SYN | TCP_ACK);
//! let back = build::tcp(server, 50000, laptop, 22, TCP_SYN);
//! assert_eq!(filter.check(Direction::Ingress, &syn, now), Verdict::Pass);
//! assert_eq!(filter.check(Direction::Egress, &syn_ack, now), Verdict::Pass);
//! assert_eq!(
//!     filter.check(Direction::Egress, &back, now),
//!     Verdict::Drop(DropReason::NoRule)
//! );
//! ```

#![warn(missing_docs)]

use std::net::Ipv4Addr;

mod conntrack;
mod filter;
pub mod packet;

pub use conntrack::Timeouts;
pub use filter::{
    Direction, DropCounts, DropReason, FilterConfig, FilterRules, FilterStats, PeerFilter, Verdict,
};
pub use packet::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

#[cfg(test)]
mod tests;
#[cfg(test)]
use filter::rules_allow as filter_rules_allow_for_tests;

/// The start of a test's simulated clock.
///
/// `Instant` has no constructor, so a test reads the real clock once, here, and moves time on by
/// adding durations to it. Nothing else in this crate reads the clock (clippy.toml forbids it).
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
fn test_clock_start() -> std::time::Instant {
    std::time::Instant::now()
}

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The transport protocol an [`AllowRule`] matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Every IPv4 packet, whatever it carries.
    Any,
    /// ICMP (IPv4).
    Icmp,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// An inclusive range of ports, `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    /// The first port of the range.
    pub first: u16,
    /// The last port of the range (equal to `first` for one port).
    pub last: u16,
}

impl PortRange {
    /// A range of one port.
    pub fn single(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }

    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// One entry of an address set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddrEntry {
    /// A CIDR block (a single address is a `/32`).
    Net(Ipv4Net),
    /// An inclusive range of addresses, `first..=last`.
    Range {
        /// The first address of the range.
        first: Ipv4Addr,
        /// The last address of the range.
        last: Ipv4Addr,
    },
}

impl AddrEntry {
    /// Whether `addr` lies in this entry.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        match self {
            AddrEntry::Net(net) => net.contains(&addr),
            AddrEntry::Range { first, last } => *first <= addr && addr <= *last,
        }
    }
}

/// A rule that lets a flow be opened.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AllowRule {
    /// The protocol of the opening packet.
    pub protocol: Protocol,
    /// Destination ports; `None` means every port (and is the only choice for `Any`/`Icmp`).
    pub ports: Option<PortRange>,
    /// Source addresses the opening packet may come from; empty means none.
    pub sources: Vec<AddrEntry>,
    /// Destination addresses the opening packet may go to; empty means none.
    pub destinations: Vec<AddrEntry>,
    /// A label from the policy, shown in status and traces.
    pub label: Option<String>,
}
