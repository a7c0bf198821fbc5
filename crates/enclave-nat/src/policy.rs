//! The NAT policy: plain data that says what a gateway's NAT and forward filter must be.
//!
//! It knows nothing of network definitions or access policies; the policy engine fills it in.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Everything the NAT manager is asked to put in place on one gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatPolicy {
    /// The tunnel interface (`enclave0`): traffic from the overlay comes in through it.
    pub tunnel_interface: String,
    /// The overlay network (for example `100.64.0.0/10`).
    pub overlay: Ipv4Net,
    /// Source NAT on each egress interface.
    pub snat: Vec<SnatRule>,
    /// What the overlay may open connections to, through this gateway.
    pub grants: Vec<ForwardGrant>,
    /// The host's own traffic on the tunnel, when the data plane does not filter it itself
    /// (an external WireGuard: the kernel module or wireguard-go). nftables only.
    pub host: Option<HostFilter>,
}

impl NatPolicy {
    /// Whether this policy forwards anything (a gateway): only then is IPv4 forwarding on.
    pub fn forwards(&self) -> bool {
        !self.snat.is_empty() || !self.grants.is_empty()
    }

    /// The guide's office gateway, for examples, documentation and tests: tunnel `enclave0`,
    /// overlay `100.64.0.0/10` masqueraded to `192.168.77.1` on `lan0`, and one grant that lets
    /// the laptop `100.64.0.11` open anything in `192.168.77.0/24`. Callers change what they
    /// need (the grants, say) with struct update syntax.
    pub fn sample() -> Self {
        let overlay = Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 10).expect("a valid prefix");
        NatPolicy {
            tunnel_interface: "enclave0".into(),
            overlay,
            snat: vec![SnatRule {
                egress_interface: "lan0".into(),
                to: Ipv4Addr::new(192, 168, 77, 1),
                source: overlay,
            }],
            grants: vec![ForwardGrant {
                sources: AddressSet::new()
                    .net(Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 11), 32).expect("a valid prefix")),
                destinations: AddressSet::new()
                    .net(Ipv4Net::new(Ipv4Addr::new(192, 168, 77, 0), 24).expect("a valid prefix")),
                protocol: None,
                ports: None,
                label: "all".into(),
            }],
            host: None,
        }
    }
}

/// Which flows the host itself may have on the tunnel interface: opened by peers towards it
/// (`inbound`) or by it towards peers (`outbound`). Replies pass; everything else on the
/// tunnel is dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFilter {
    /// Flows peers may open towards this host.
    pub inbound: Vec<ForwardGrant>,
    /// Flows this host may open towards peers.
    pub outbound: Vec<ForwardGrant>,
}

/// `oifname EGRESS ip saddr SOURCE snat to TO`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SnatRule {
    /// The LAN interface the translated traffic leaves through.
    pub egress_interface: String,
    /// The gateway's own address on that LAN.
    pub to: Ipv4Addr,
    /// Which sources are translated (normally the overlay network).
    pub source: Ipv4Net,
}

/// New connections from `sources` to `destinations` (optionally one protocol and port range) are
/// forwarded; everything else from the tunnel is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardGrant {
    /// Overlay addresses allowed to open connections.
    pub sources: AddressSet,
    /// Destinations behind the gateway.
    pub destinations: AddressSet,
    /// `None` is any protocol.
    pub protocol: Option<Protocol>,
    /// Destination ports (only with TCP or UDP); `None` is every port.
    pub ports: Option<PortRange>,
    /// A label shown in rule comments and counters (`allow [web]`).
    pub label: String,
}

/// A transport protocol a grant can be restricted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    /// ICMP.
    Icmp,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Icmp => 1,
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    /// The name nft and iptables use.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Icmp => "icmp",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// An inclusive destination port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    /// The first port.
    pub first: u16,
    /// The last port (equal to `first` for one port).
    pub last: u16,
}

impl PortRange {
    /// One port.
    pub fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// One entry of an address set: a network or an inclusive range of addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AddressEntry {
    /// A network.
    Net(Ipv4Net),
    /// The addresses from the first to the last, both included.
    Range(Ipv4Addr, Ipv4Addr),
}

impl AddressEntry {
    /// The inclusive range of addresses this entry covers (first, last).
    pub fn bounds(&self) -> (u32, u32) {
        match *self {
            AddressEntry::Net(net) => (net.network().into(), net.broadcast().into()),
            AddressEntry::Range(a, b) => {
                let (a, b) = (u32::from(a), u32::from(b));
                (a.min(b), a.max(b))
            }
        }
    }
}

/// A set of IPv4 addresses given as networks and ranges, in any order and possibly overlapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressSet {
    entries: BTreeSet<AddressEntry>,
}

impl AddressSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a network.
    pub fn net(mut self, net: Ipv4Net) -> Self {
        self.entries.insert(AddressEntry::Net(net.trunc()));
        self
    }

    /// Adds an inclusive range.
    pub fn range(mut self, first: Ipv4Addr, last: Ipv4Addr) -> Self {
        self.entries.insert(AddressEntry::Range(first, last));
        self
    }

    /// Adds one entry.
    pub fn insert(&mut self, entry: AddressEntry) {
        let entry = match entry {
            AddressEntry::Net(net) => AddressEntry::Net(net.trunc()),
            other => other,
        };
        self.entries.insert(entry);
    }

    /// The entries as given (sorted, duplicates removed).
    pub fn entries(&self) -> impl Iterator<Item = &AddressEntry> {
        self.entries.iter()
    }

    /// True when the set has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The set as disjoint, non-adjacent inclusive intervals in ascending order: what an nftables
    /// interval set holds.
    pub fn intervals(&self) -> Vec<(Ipv4Addr, Ipv4Addr)> {
        let mut bounds: Vec<(u32, u32)> = self.entries.iter().map(AddressEntry::bounds).collect();
        bounds.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(bounds.len());
        for (first, last) in bounds {
            match merged.last_mut() {
                Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
                _ => merged.push((first, last)),
            }
        }
        merged
            .into_iter()
            .map(|(a, b)| (Ipv4Addr::from(a), Ipv4Addr::from(b)))
            .collect()
    }
}

impl FromIterator<AddressEntry> for AddressSet {
    fn from_iter<I: IntoIterator<Item = AddressEntry>>(iter: I) -> Self {
        let mut set = AddressSet::new();
        for entry in iter {
            set.insert(entry);
        }
        set
    }
}

impl fmt::Display for AddressEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressEntry::Net(net) if net.prefix_len() == 32 => write!(f, "{}", net.addr()),
            AddressEntry::Net(net) => write!(f, "{net}"),
            AddressEntry::Range(a, b) => write!(f, "{a}-{b}"),
        }
    }
}

/// Text as it goes into a rule comment: quotes, backslashes and control characters replaced,
/// at most 120 bytes of whole characters (nft and iptables both limit comments).
pub(crate) fn comment_text(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = match c {
            '"' | '\\' => '\'',
            c if c.is_control() => ' ',
            c => c,
        };
        if out.len() + c.len_utf8() > 120 {
            break;
        }
        out.push(c);
    }
    out
}

/// Writes an inclusive interval the way `nft list` shows it: an address, a prefix when the
/// interval is exactly one, or `first-last`.
pub(crate) fn interval_text(first: Ipv4Addr, last: Ipv4Addr) -> String {
    let (a, b) = (u32::from(first), u32::from(last));
    if a == b {
        return first.to_string();
    }
    let size = u64::from(b) - u64::from(a) + 1;
    if size.is_power_of_two() && u64::from(a) % size == 0 {
        let prefix = 32 - size.trailing_zeros();
        return format!("{first}/{prefix}");
    }
    format!("{first}-{last}")
}

/// A grant for the backends' tests: the laptop `100.64.0.11` may open TCP ports 80 to 443 on
/// the addresses 192.168.77.20 to `last` and on 192.168.78.0/24, under `label`.
#[cfg(test)]
pub(crate) fn web_grant(last: Ipv4Addr, label: &str) -> ForwardGrant {
    ForwardGrant {
        sources: AddressSet::new().net("100.64.0.11/32".parse().unwrap()),
        destinations: AddressSet::new()
            .range("192.168.77.20".parse().unwrap(), last)
            .net("192.168.78.0/24".parse().unwrap()),
        protocol: Some(Protocol::Tcp),
        ports: Some(PortRange {
            first: 80,
            last: 443,
        }),
        label: label.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn intervals_merge_overlapping_and_adjacent_entries() {
        let set = AddressSet::new()
            .net("192.168.77.0/25".parse().unwrap())
            .range(ip("192.168.77.128"), ip("192.168.77.130"))
            .range(ip("192.168.77.20"), ip("192.168.77.21"))
            .net("10.0.0.7/32".parse().unwrap())
            .range(ip("10.0.0.9"), ip("10.0.0.8"));
        assert_eq!(
            set.intervals(),
            vec![
                (ip("10.0.0.7"), ip("10.0.0.9")),
                (ip("192.168.77.0"), ip("192.168.77.130")),
            ]
        );
    }

    #[test]
    fn intervals_cover_the_whole_space_without_overflow() {
        let set = AddressSet::new()
            .net("0.0.0.0/1".parse().unwrap())
            .net("128.0.0.0/1".parse().unwrap());
        assert_eq!(
            set.intervals(),
            vec![(ip("0.0.0.0"), ip("255.255.255.255"))]
        );
    }

    #[test]
    fn comments_are_made_safe_and_short() {
        assert_eq!(comment_text("web \"x\"\n\\"), "web 'x' '");
        assert_eq!(comment_text(&"é".repeat(300)), "é".repeat(60));
    }

    #[test]
    fn interval_text_prefers_prefixes() {
        assert_eq!(
            interval_text(ip("10.1.0.0"), ip("10.1.255.255")),
            "10.1.0.0/16"
        );
        assert_eq!(interval_text(ip("10.1.0.1"), ip("10.1.0.1")), "10.1.0.1");
        assert_eq!(
            interval_text(ip("10.1.0.1"), ip("10.1.0.2")),
            "10.1.0.1-10.1.0.2"
        );
        assert_eq!(
            interval_text(ip("0.0.0.0"), ip("255.255.255.255")),
            "0.0.0.0/0"
        );
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Entries inside 10.0.0.0/23, so that they overlap and touch often.
        fn entry() -> impl Strategy<Value = AddressEntry> {
            let base = u32::from(Ipv4Addr::new(10, 0, 0, 0));
            prop_oneof![
                (0u32..512, 22u8..=32).prop_map(move |(offset, prefix)| {
                    AddressEntry::Net(
                        Ipv4Net::new(Ipv4Addr::from(base + offset), prefix)
                            .expect("prefix is at most 32")
                            .trunc(),
                    )
                }),
                (0u32..512, 0u32..40).prop_map(move |(offset, len)| {
                    AddressEntry::Range(
                        Ipv4Addr::from(base + offset),
                        Ipv4Addr::from(base + offset + len),
                    )
                }),
            ]
        }

        proptest! {
            #[test]
            fn intervals_hold_exactly_the_entries(
                entries in proptest::collection::vec(entry(), 0..12),
                probes in proptest::collection::vec(0u32..2048, 32),
            ) {
                let set: AddressSet = entries.iter().copied().collect();
                let intervals = set.intervals();
                for pair in intervals.windows(2) {
                    // Sorted, disjoint and not adjacent (adjacent ones are merged).
                    prop_assert!(u64::from(u32::from(pair[0].1)) + 1 < u64::from(u32::from(pair[1].0)));
                }
                let base = u32::from(Ipv4Addr::new(9, 255, 254, 0));
                for probe in probes {
                    let addr = base + probe;
                    let in_entries = entries.iter().any(|e| {
                        let (a, b) = e.bounds();
                        a <= addr && addr <= b
                    });
                    let in_intervals = intervals
                        .iter()
                        .any(|(a, b)| u32::from(*a) <= addr && addr <= u32::from(*b));
                    prop_assert_eq!(in_entries, in_intervals, "address {}", Ipv4Addr::from(addr));
                }
            }
        }
    }
}
