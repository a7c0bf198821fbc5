//! The validated network definition.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use enclave_filter::{AddrEntry, PortRange, Protocol};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// A validated network definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// The overlay network every virtual address lies in.
    pub overlay: Ipv4Net,
    /// Persistent keepalive for every tunnel, in seconds (`None`: off).
    pub keepalive: Option<u16>,
    /// Systems by name, in name order, in a persistent map (`imbl::OrdMap`): a copy of the
    /// network shares every system it does not change, so a control server that changes one
    /// system of 10,000 copies a path of the tree, not the systems; and [`crate::affected`]
    /// skips what two networks share.
    pub systems: imbl::OrdMap<String, System>,
    /// Tags that carry trust requirements, by name. A tag needs no entry to be used.
    pub tags: BTreeMap<String, Tag>,
    /// Trust requirements by name.
    pub trust_requirements: BTreeMap<String, TrustRequirement>,
    /// Direct access policies by name.
    pub direct_policies: BTreeMap<String, DirectPolicy>,
    /// Gateway access policies by name.
    pub gateway_policies: BTreeMap<String, GatewayPolicy>,
    /// Pre-shared keys, at most one per pair of systems, ordered by the pair.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preshared_keys: Vec<PresharedKey>,
}

impl Network {
    /// The key file of the pre-shared key between systems `a` and `b`, if they have one.
    pub fn preshared_key_file(&self, a: &str, b: &str) -> Option<&Path> {
        self.preshared_keys
            .iter()
            .find(|k| k.joins(a, b))
            .map(|k| k.file.as_path())
    }
}

/// A pre-shared key between two systems: WireGuard's optional symmetric key, mixed into every
/// handshake of their tunnel so that recorded traffic stays secret even if the Curve25519 keys
/// are one day broken (a post-quantum hedge).
///
/// The definition is read by every agent, so it never holds the key: it names a file that the
/// administrator puts on both hosts (the same 32 random bytes in base64, mode 0600). Each of
/// the two agents reads it; no other agent learns anything but the path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresharedKey {
    /// The two systems, in name order.
    pub systems: [String; 2],
    /// The absolute path of the key file, the same on both hosts.
    pub file: PathBuf,
}

impl PresharedKey {
    /// Whether this key joins systems `a` and `b` (in either order).
    pub fn joins(&self, a: &str, b: &str) -> bool {
        let [x, y] = &self.systems;
        (x == a && y == b) || (x == b && y == a)
    }
}

/// One enrolled system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct System {
    /// Its unique name.
    pub name: String,
    /// Its WireGuard public key, base64.
    pub public_key: String,
    /// Its virtual address in the overlay.
    pub address: Ipv4Addr,
    /// Its tags.
    pub tags: BTreeSet<String>,
    /// Where it can be reached on the underlay, when known in advance.
    pub endpoint: Option<SocketAddr>,
    /// A disabled system has no tunnels at all.
    pub enabled: bool,
    /// Its gateway settings, if it has any.
    pub gateway: Option<GatewaySettings>,
}

impl System {
    /// Whether this system currently acts as a gateway.
    pub fn is_gateway(&self) -> bool {
        self.enabled && self.gateway.as_ref().is_some_and(|g| g.allowed)
    }
}

/// The gateway settings of a system (the seed's "Allow this system to act as a gateway").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewaySettings {
    /// Whether the system is allowed to act as a gateway.
    pub allowed: bool,
    /// Subnets added by hand (also ones not directly connected, and `0.0.0.0/0`).
    pub subnets: BTreeSet<Ipv4Net>,
    /// Subnets removed by hand: never served, even when discovered.
    pub removed: BTreeSet<Ipv4Net>,
    /// Whether the gateway serves the subnets it discovers on its interfaces.
    pub auto_discover: bool,
    /// Lower is preferred when several gateways serve the same subnet (default 100).
    pub priority: u32,
}

impl GatewaySettings {
    /// How this gateway serves `subnet`, if it may: added by hand, or expected from discovery.
    /// A default route is never discovered; it must be added by hand.
    pub fn source_of(&self, subnet: Ipv4Net) -> Option<crate::SubnetSource> {
        if !self.allowed {
            None
        } else {
            self.would_offer(subnet)
        }
    }

    /// How this gateway would serve `subnet` if it were allowed to act as a gateway.
    pub fn would_offer(&self, subnet: Ipv4Net) -> Option<crate::SubnetSource> {
        if self.removed.contains(&subnet) {
            None
        } else if self.subnets.contains(&subnet) {
            Some(crate::SubnetSource::Manual)
        } else if self.auto_discover && subnet.prefix_len() > 0 {
            Some(crate::SubnetSource::Discovery)
        } else {
            None
        }
    }
}

/// A tag with trust requirements attached: a system carries the tag, for policies, only while
/// they hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    /// The tag.
    pub name: String,
    /// Names of trust requirements.
    pub trust: Vec<String>,
}

/// A named trust requirement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustRequirement {
    /// Its unique name.
    pub name: String,
    /// What it requires.
    pub kind: TrustKind,
}

/// What a trust requirement checks. More kinds (user authentication through an identity
/// provider) fit here later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TrustKind {
    /// The sender's observed public (underlay) address must lie in `allow` (when not empty)
    /// and not in `block`.
    PublicIp {
        /// Ranges the address must lie in; empty means any.
        allow: Vec<Ipv4Net>,
        /// Ranges the address must not lie in.
        block: Vec<Ipv4Net>,
    },
}

/// One ACL entry of a policy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclEntry {
    /// The protocol.
    pub protocol: Protocol,
    /// Ports for `tcp`/`udp`; `None` is every port.
    pub ports: Option<PortRange>,
    /// An optional label shown in status.
    pub label: Option<String>,
}

impl AclEntry {
    /// Whether a flow of `protocol` to `port` is allowed by this entry. `None` for the
    /// protocol means "any kind of traffic at all"; a port without a protocol means tcp or udp.
    pub fn admits(&self, protocol: Option<Protocol>, port: Option<u16>) -> bool {
        let protocol_ok = match (self.protocol, protocol) {
            (Protocol::Any, _) => true,
            (_, None) => port.is_none() || matches!(self.protocol, Protocol::Tcp | Protocol::Udp),
            (mine, Some(asked)) => mine == asked,
        };
        let port_ok = match (self.ports, port) {
            (None, _) => true,
            (Some(range), Some(port)) => range.contains(port),
            (Some(_), None) => protocol.is_none(),
        };
        protocol_ok && port_ok
    }
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "mon" | "monday" => Self::Mon,
            "tue" | "tuesday" => Self::Tue,
            "wed" | "wednesday" => Self::Wed,
            "thu" | "thursday" => Self::Thu,
            "fri" | "friday" => Self::Fri,
            "sat" | "saturday" => Self::Sat,
            "sun" | "sunday" => Self::Sun,
            _ => return None,
        })
    }
}

/// A window of the day, minutes after midnight, `start` inclusive, `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HoursWindow {
    /// First minute of the window.
    pub start: u16,
    /// First minute after the window (at most 1440).
    pub end: u16,
}

/// When a policy is active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveHours {
    /// Days on which the windows apply.
    pub days: BTreeSet<Weekday>,
    /// Windows of the day, in the zone's local time.
    pub windows: Vec<HoursWindow>,
    /// An IANA time zone name.
    pub zone: String,
}

/// A direct access policy: sender tags to receiver tags, one way, enforced by the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectPolicy {
    /// Its unique name.
    pub name: String,
    /// A disabled policy grants nothing.
    pub enabled: bool,
    /// Sender tags.
    pub senders: BTreeSet<String>,
    /// Receiver tags.
    pub receivers: BTreeSet<String>,
    /// What may be opened.
    pub acl: Vec<AclEntry>,
    /// Names of trust requirements on the sender.
    pub trust: Vec<String>,
    /// When the policy is active; always when `None`.
    pub active_hours: Option<ActiveHours>,
}

/// A gateway access policy: sender tags to subnets through gateways, one way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayPolicy {
    /// Its unique name.
    pub name: String,
    /// A disabled policy grants nothing.
    pub enabled: bool,
    /// Sender tags.
    pub senders: BTreeSet<String>,
    /// The gateways, by system name.
    pub gateways: BTreeSet<String>,
    /// The destination subnets.
    pub subnets: BTreeSet<Ipv4Net>,
    /// The subnet filter: when not empty, only these destinations inside the subnets.
    pub filter: Vec<AddrEntry>,
    /// What may be opened.
    pub acl: Vec<AclEntry>,
    /// Names of trust requirements on the sender.
    pub trust: Vec<String>,
    /// When the policy is active; always when `None`.
    pub active_hours: Option<ActiveHours>,
}

impl GatewayPolicy {
    /// The destinations this policy grants inside `subnet`: the filter entries that lie in it,
    /// or the whole subnet when there is no filter. The overlay network is never a destination
    /// through a gateway (overlay addresses are reached directly), so a subnet that contains
    /// it, such as a default route, is granted minus the overlay.
    pub fn destinations_in(&self, subnet: Ipv4Net, overlay: Ipv4Net) -> Vec<AddrEntry> {
        if self.filter.is_empty() {
            return without(subnet, overlay)
                .into_iter()
                .map(AddrEntry::Net)
                .collect();
        }
        self.filter
            .iter()
            .filter(|entry| entry_within(entry, subnet))
            .copied()
            .collect()
    }
}

/// `net` minus `hole`, as CIDRs in address order.
pub(crate) fn without(net: Ipv4Net, hole: Ipv4Net) -> Vec<Ipv4Net> {
    if !net.contains(&hole) {
        return if hole.contains(&net) {
            Vec::new()
        } else {
            vec![net]
        };
    }
    if net == hole {
        return Vec::new();
    }
    let mut out = Vec::new();
    // A net that strictly contains another is at most a /31, so it splits in two.
    if let Ok(halves) = net.subnets(net.prefix_len() + 1) {
        for half in halves {
            out.extend(without(half, hole));
        }
    }
    out
}

/// Whether an address entry lies wholly inside `net`.
pub(crate) fn entry_within(entry: &AddrEntry, net: Ipv4Net) -> bool {
    match entry {
        AddrEntry::Net(inner) => net.contains(inner),
        AddrEntry::Range { first, last } => net.contains(first) && net.contains(last),
    }
}
