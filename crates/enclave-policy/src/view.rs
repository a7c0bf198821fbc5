//! Compilation of one system's view: what its agent must do.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use enclave_filter::{AddrEntry, AllowRule, Protocol};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::{AclEntry, ActiveHours, Network, System, TrustRequirement};
use crate::{Error, Result};

/// The label of the rule that lets a sender ping the gateway's own virtual address, as the
/// seed's troubleshooting checklist expects.
pub const GATEWAY_REACHABILITY: &str = "gateway reachability";

/// Everything one system's agent must apply. A plain value: the same definition gives
/// byte-identical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// The system this view is for.
    pub system: String,
    /// Its virtual address.
    pub address: Ipv4Addr,
    /// The overlay network.
    pub overlay: Ipv4Net,
    /// A disabled system gets no peers, routes or gateway rules.
    pub enabled: bool,
    /// The peers to configure, by name.
    pub peers: BTreeMap<String, PeerView>,
    /// Routes to install through the tunnel, by destination subnet.
    pub routes: BTreeMap<Ipv4Net, RouteView>,
    /// What to do as a gateway, when the system acts as one.
    pub gateway: Option<GatewayView>,
    /// The trust requirements the grants of this view refer to.
    pub trust_requirements: BTreeMap<String, TrustRequirement>,
}

/// One peer: its tunnel and what may flow through it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    /// Its WireGuard public key, base64.
    pub public_key: String,
    /// Its virtual address.
    pub address: Ipv4Addr,
    /// Its underlay endpoint, when the definition knows it.
    pub endpoint: Option<SocketAddr>,
    /// The fixed allowed IPs (its virtual address). The subnets of [`View::routes`] are added
    /// to the allowed IPs of whichever candidate gateway is active, and to no other peer.
    pub allowed_ips: BTreeSet<Ipv4Net>,
    /// Persistent keepalive in seconds.
    pub keepalive: Option<u16>,
    /// The file holding the pre-shared key of this tunnel (base64 of 32 bytes, mode 0600, the
    /// same on both hosts), when the definition gives the pair one. The agent reads it and
    /// sets it as the peer's WireGuard pre-shared key; the view never holds the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preshared_key_file: Option<PathBuf>,
    /// The subnets this peer is a candidate gateway for.
    pub gateway_for: BTreeSet<Ipv4Net>,
    /// Flows the peer may open towards us (and through us, on a gateway), by policy.
    pub inbound: BTreeMap<String, Grant>,
    /// Flows we may open towards the peer (and through it, to a gateway), by policy.
    pub outbound: BTreeMap<String, Grant>,
}

/// A direction of flow opening, seen from the local system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Opened by the peer.
    Inbound,
    /// Opened by the local system.
    Outbound,
}

/// What kind of policy made a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantKind {
    /// A direct access policy.
    Direct,
    /// A gateway access policy.
    Gateway,
}

/// The rules one policy grants between the local system and one peer, and their conditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The kind of the granting policy.
    pub kind: GrantKind,
    /// The filter rules (for the data plane's per-peer filter).
    pub rules: Vec<AllowRule>,
    /// The conditions under which the rules apply.
    pub requirements: Requirements,
}

/// The conditions of a grant: all must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirements {
    /// The sending system, whose observed public address is judged.
    pub sender: String,
    /// The system that enforces them (the receiver or the gateway). Other systems apply the
    /// rules too, to drop early, but only the enforcer judges unobserved facts as failing.
    pub enforced_by: String,
    /// Trust requirements of the policy, by name.
    pub policy_trust: Vec<String>,
    /// The sender's tags through which the policy matched, each with the trust requirements
    /// attached to the tag: at least one tag's requirements must all hold.
    pub via_tags: BTreeMap<String, Vec<String>>,
    /// The policy's active hours, if any.
    pub active_hours: Option<ActiveHours>,
}

/// A route: a subnet and the gateways that may carry it, in order of preference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteView {
    /// Whether this is the default route (`0.0.0.0/0`).
    pub default_route: bool,
    /// Candidate gateways, most preferred first (by priority, then name). The agent uses the
    /// first one it establishes a connection with.
    pub candidates: Vec<RouteCandidate>,
    /// The policies that grant it.
    pub policies: BTreeSet<String>,
}

/// One candidate gateway for a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCandidate {
    /// The gateway's system name (a key of [`View::peers`]).
    pub gateway: String,
    /// Its priority (lower first).
    pub priority: u32,
}

/// What a gateway must do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayView {
    /// Whether to serve discovered subnets (see [`SubnetSource::Discovery`]).
    pub auto_discover: bool,
    /// Subnets removed by hand: never served.
    pub removed: BTreeSet<Ipv4Net>,
    /// The subnets served and why.
    pub subnets: BTreeMap<Ipv4Net, SubnetSource>,
    /// Forwarding rules, by policy: what senders may reach through this gateway.
    pub forward: BTreeMap<String, ForwardRule>,
    /// Source NAT rules: traffic from the overlay into each served subnet leaves with the
    /// gateway's own address on the way out.
    pub snat: Vec<SnatRule>,
}

/// Why a gateway serves a subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubnetSource {
    /// Added by hand: served whatever discovery finds.
    Manual,
    /// Named by a policy and expected from auto-discovery: served only while the gateway's
    /// discovery finds it on an interface.
    Discovery,
}

/// One policy's forwarding through a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardRule {
    /// Overlay addresses of the senders, by system name.
    pub senders: BTreeMap<String, Ipv4Addr>,
    /// Destinations inside the served subnets.
    pub destinations: Vec<AddrEntry>,
    /// What may be opened.
    pub acl: Vec<AclEntry>,
}

/// One SNAT rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SnatRule {
    /// Source addresses to translate (the overlay network).
    pub source: Ipv4Net,
    /// Destination subnet.
    pub destination: Ipv4Net,
}

/// Systems by tag, built once per compilation.
pub(crate) struct TagIndex<'n> {
    // Only looked up, never iterated: its order cannot leak.
    by_tag: HashMap<&'n str, Vec<&'n System>>,
}

impl<'n> TagIndex<'n> {
    pub(crate) fn new(net: &'n Network) -> Self {
        let mut by_tag: HashMap<&str, Vec<&System>> = HashMap::new();
        for system in net.systems.values().filter(|s| s.enabled) {
            for tag in &system.tags {
                by_tag.entry(tag).or_default().push(system);
            }
        }
        Self { by_tag }
    }

    /// Enabled systems carrying any of `tags`, each once, by name.
    pub(crate) fn carriers(&self, tags: &BTreeSet<String>) -> BTreeMap<&'n str, &'n System> {
        let mut out = BTreeMap::new();
        for tag in tags {
            for system in self.by_tag.get(tag.as_str()).into_iter().flatten() {
                out.insert(system.name.as_str(), *system);
            }
        }
        out
    }
}

/// The requirements of a grant to `sender` under a policy with `senders` tags.
pub(crate) fn requirements(
    net: &Network,
    sender: &System,
    enforcer: &str,
    sender_tags: &BTreeSet<String>,
    policy_trust: &[String],
    active_hours: &Option<ActiveHours>,
) -> Requirements {
    let via_tags = sender
        .tags
        .intersection(sender_tags)
        .map(|tag| {
            let trust = net
                .tags
                .get(tag)
                .map(|t| t.trust.clone())
                .unwrap_or_default();
            (tag.clone(), trust)
        })
        .collect();
    Requirements {
        sender: sender.name.clone(),
        enforced_by: enforcer.to_owned(),
        policy_trust: policy_trust.to_vec(),
        via_tags,
        active_hours: active_hours.clone(),
    }
}

fn host(addr: Ipv4Addr) -> AddrEntry {
    AddrEntry::Net(Ipv4Net::from(addr))
}

fn rules(acl: &[AclEntry], source: Ipv4Addr, destinations: &[AddrEntry]) -> Vec<AllowRule> {
    acl.iter()
        .map(|entry| AllowRule {
            protocol: entry.protocol,
            ports: entry.ports,
            sources: vec![host(source)],
            destinations: destinations.to_vec(),
            label: entry.label.clone(),
        })
        .collect()
}

/// The rules a gateway policy grants `sender` through `gateway` into `subnets`, plus ICMP to
/// the gateway's own virtual address.
pub(crate) fn gateway_rules(
    acl: &[AclEntry],
    sender: Ipv4Addr,
    gateway: Ipv4Addr,
    destinations: &[AddrEntry],
) -> Vec<AllowRule> {
    let mut out = rules(acl, sender, destinations);
    out.push(AllowRule {
        protocol: Protocol::Icmp,
        ports: None,
        sources: vec![host(sender)],
        destinations: vec![host(gateway)],
        label: Some(GATEWAY_REACHABILITY.to_owned()),
    });
    out
}

/// The peer entry for `peer`, created on first use (the name is cloned only then).
fn peer_entry<'v>(
    peers: &'v mut BTreeMap<String, PeerView>,
    net: &Network,
    peer: &System,
) -> &'v mut PeerView {
    if !peers.contains_key(&peer.name) {
        peers.insert(peer.name.clone(), new_peer(net, peer));
    }
    peers
        .get_mut(&peer.name)
        .unwrap_or_else(|| unreachable!("inserted just above"))
}

fn new_peer(net: &Network, peer: &System) -> PeerView {
    PeerView {
        public_key: peer.public_key.clone(),
        address: peer.address,
        endpoint: peer.endpoint,
        allowed_ips: BTreeSet::from([Ipv4Net::from(peer.address)]),
        keepalive: net.keepalive,
        preshared_key_file: None,
        gateway_for: BTreeSet::new(),
        inbound: BTreeMap::new(),
        outbound: BTreeMap::new(),
    }
}

/// Compiles the view of the system named `system`.
///
/// # Errors
/// [`Error::UnknownSystem`] when the definition has no such system.
pub fn compile(net: &Network, system: &str) -> Result<View> {
    let me = net
        .systems
        .get(system)
        .ok_or_else(|| Error::UnknownSystem {
            name: system.to_owned(),
        })?;
    let mut view = View {
        system: me.name.clone(),
        address: me.address,
        overlay: net.overlay,
        enabled: me.enabled,
        peers: BTreeMap::new(),
        routes: BTreeMap::new(),
        gateway: None,
        trust_requirements: BTreeMap::new(),
    };
    if !me.enabled {
        return Ok(view);
    }
    let index = TagIndex::new(net);
    direct(net, me, &index, &mut view);
    as_sender(net, me, &mut view);
    if me.is_gateway() {
        as_gateway(net, me, &index, &mut view);
    }
    for (name, peer) in &mut view.peers {
        peer.preshared_key_file = net
            .preshared_key_file(&me.name, name)
            .map(|file| file.to_path_buf());
    }
    let mut used = BTreeSet::new();
    for peer in view.peers.values() {
        for grant in peer.inbound.values().chain(peer.outbound.values()) {
            used.extend(grant.requirements.policy_trust.iter().cloned());
            used.extend(grant.requirements.via_tags.values().flatten().cloned());
        }
    }
    view.trust_requirements = used
        .into_iter()
        .filter_map(|name| net.trust_requirements.get(&name).map(|t| (name, t.clone())))
        .collect();
    Ok(view)
}

fn direct(net: &Network, me: &System, index: &TagIndex<'_>, view: &mut View) {
    for policy in net
        .direct_policies
        .values()
        .filter(|p| p.enabled && !p.acl.is_empty())
    {
        let i_send = !me.tags.is_disjoint(&policy.senders);
        let i_receive = !me.tags.is_disjoint(&policy.receivers);
        if i_send {
            for receiver in index.carriers(&policy.receivers).into_values() {
                if receiver.name == me.name {
                    continue;
                }
                let grant = Grant {
                    kind: GrantKind::Direct,
                    rules: rules(&policy.acl, me.address, &[host(receiver.address)]),
                    requirements: requirements(
                        net,
                        me,
                        &receiver.name,
                        &policy.senders,
                        &policy.trust,
                        &policy.active_hours,
                    ),
                };
                peer_entry(&mut view.peers, net, receiver)
                    .outbound
                    .insert(policy.name.clone(), grant);
            }
        }
        if i_receive {
            for sender in index.carriers(&policy.senders).into_values() {
                if sender.name == me.name {
                    continue;
                }
                let grant = Grant {
                    kind: GrantKind::Direct,
                    rules: rules(&policy.acl, sender.address, &[host(me.address)]),
                    requirements: requirements(
                        net,
                        sender,
                        &me.name,
                        &policy.senders,
                        &policy.trust,
                        &policy.active_hours,
                    ),
                };
                peer_entry(&mut view.peers, net, sender)
                    .inbound
                    .insert(policy.name.clone(), grant);
            }
        }
    }
}

/// The subnets of `policy` that `gateway` serves, with the destinations granted in them.
fn served_by<'p>(
    policy: &'p crate::GatewayPolicy,
    gateway: &System,
) -> impl Iterator<Item = Ipv4Net> + 'p {
    let settings = gateway.gateway.clone();
    policy
        .subnets
        .iter()
        .copied()
        .filter(move |net| settings.as_ref().and_then(|g| g.source_of(*net)).is_some())
}

fn as_sender(net: &Network, me: &System, view: &mut View) {
    for policy in net
        .gateway_policies
        .values()
        .filter(|p| p.enabled && !p.acl.is_empty())
    {
        if me.tags.is_disjoint(&policy.senders) {
            continue;
        }
        for gateway_name in &policy.gateways {
            let Some(gateway) = net.systems.get(gateway_name) else {
                continue;
            };
            if gateway.name == me.name || !gateway.is_gateway() {
                continue;
            }
            let subnets: Vec<Ipv4Net> = served_by(policy, gateway).collect();
            if subnets.is_empty() {
                continue;
            }
            let destinations: Vec<AddrEntry> = subnets
                .iter()
                .flat_map(|s| policy.destinations_in(*s, net.overlay))
                .collect();
            let grant = Grant {
                kind: GrantKind::Gateway,
                rules: gateway_rules(&policy.acl, me.address, gateway.address, &destinations),
                requirements: requirements(
                    net,
                    me,
                    &gateway.name,
                    &policy.senders,
                    &policy.trust,
                    &policy.active_hours,
                ),
            };
            let peer = peer_entry(&mut view.peers, net, gateway);
            peer.outbound.insert(policy.name.clone(), grant);
            peer.gateway_for.extend(subnets.iter().copied());
            let priority = gateway.gateway.as_ref().map_or(0, |g| g.priority);
            for subnet in subnets {
                let route = view.routes.entry(subnet).or_insert_with(|| RouteView {
                    default_route: subnet.prefix_len() == 0,
                    candidates: Vec::new(),
                    policies: BTreeSet::new(),
                });
                route.policies.insert(policy.name.clone());
                if !route.candidates.iter().any(|c| c.gateway == gateway.name) {
                    route.candidates.push(RouteCandidate {
                        gateway: gateway.name.clone(),
                        priority,
                    });
                }
            }
        }
    }
    for route in view.routes.values_mut() {
        route
            .candidates
            .sort_by(|a, b| (a.priority, &a.gateway).cmp(&(b.priority, &b.gateway)));
    }
}

fn as_gateway(net: &Network, me: &System, index: &TagIndex<'_>, view: &mut View) {
    let Some(settings) = &me.gateway else {
        return;
    };
    let mut subnets: BTreeMap<Ipv4Net, crate::SubnetSource> = settings
        .subnets
        .difference(&settings.removed)
        .map(|s| (*s, crate::SubnetSource::Manual))
        .collect();
    let mut forward = BTreeMap::new();
    for policy in net
        .gateway_policies
        .values()
        .filter(|p| p.enabled && !p.acl.is_empty())
    {
        if !policy.gateways.contains(&me.name) {
            continue;
        }
        let served: Vec<Ipv4Net> = served_by(policy, me).collect();
        if served.is_empty() {
            continue;
        }
        for subnet in &served {
            if let Some(source) = settings.source_of(*subnet) {
                subnets.entry(*subnet).or_insert(source);
            }
        }
        let destinations: Vec<AddrEntry> = served
            .iter()
            .flat_map(|s| policy.destinations_in(*s, net.overlay))
            .collect();
        let mut senders = BTreeMap::new();
        for sender in index.carriers(&policy.senders).into_values() {
            if sender.name == me.name {
                continue;
            }
            senders.insert(sender.name.clone(), sender.address);
            let grant = Grant {
                kind: GrantKind::Gateway,
                rules: gateway_rules(&policy.acl, sender.address, me.address, &destinations),
                requirements: requirements(
                    net,
                    sender,
                    &me.name,
                    &policy.senders,
                    &policy.trust,
                    &policy.active_hours,
                ),
            };
            peer_entry(&mut view.peers, net, sender)
                .inbound
                .insert(policy.name.clone(), grant);
        }
        if !senders.is_empty() {
            forward.insert(
                policy.name.clone(),
                ForwardRule {
                    senders,
                    destinations,
                    acl: policy.acl.clone(),
                },
            );
        }
    }
    let snat = subnets
        .keys()
        .map(|subnet| SnatRule {
            source: net.overlay,
            destination: *subnet,
        })
        .collect();
    view.gateway = Some(GatewayView {
        auto_discover: settings.auto_discover,
        removed: settings.removed.clone(),
        subnets,
        forward,
        snat,
    });
}
