//! Compilation of one system's view: what its agent must do.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use enclave_filter::{AddrEntry, AllowRule, Protocol};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::internet::{default_route_destinations, default_route_excludes, narrow, Exclusion};
use crate::model::{
    AclEntry, ActiveHours, DirectPolicy, GatewayPolicy, Network, System, TrustRequirement,
};
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
    /// When this peer is a candidate gateway for our default route: what that route leaves out
    /// (it means the Internet), with the reasons. The outbound grants marked `default_route`
    /// already leave these out; this says why, for status and explain.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub default_route_excludes: BTreeMap<Ipv4Net, Exclusion>,
    /// Flows the peer may open towards us (and through us, on a gateway), by policy.
    pub inbound: Grants,
    /// Flows we may open towards the peer (and through it, to a gateway), by policy.
    pub outbound: Grants,
}

/// The grants between the local system and one peer in one direction, by policy. Each is
/// boxed: a peer has one grant or a few, and a map's node has room for eleven entries, so a
/// node of grants themselves would cost a gateway kilobytes per sender, mostly empty.
pub type Grants = BTreeMap<String, Box<Grant>>;

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
    /// Whether the policy grants a default route through the gateway of this grant: then its
    /// rules' destinations are `0.0.0.0/0` (or its filter) minus the gateway's
    /// `default_route_excludes`, plus whatever other subnets the policy names explicitly.
    #[serde(default, skip_serializing_if = "is_false")]
    pub default_route: bool,
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
    pub via_tags: ViaTags,
    /// The policy's active hours, if any.
    pub active_hours: Option<ActiveHours>,
}

/// The sender's tags through which a policy matched, each with the trust requirements attached
/// to it, in the order of the tags; written and read as a JSON object of tag to requirement
/// names, like a `BTreeMap<String, Vec<String>>`.
///
/// A sorted boxed slice rather than a map: a grant has a tag or two, and a map's node has room
/// for eleven, which cost a gateway half a kilobyte for each of its senders.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ViaTags(Box<[(String, Box<[String]>)]>);

impl ViaTags {
    /// The tags and their requirements, in the order of the tags.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.0.iter().map(|(tag, names)| (tag.as_str(), &**names))
    }

    /// The requirements of each tag, in the order of the tags.
    pub fn values(&self) -> impl Iterator<Item = &[String]> {
        self.0.iter().map(|(_, names)| &**names)
    }

    /// The requirements attached to `tag`, if the policy matched through it.
    pub fn get(&self, tag: &str) -> Option<&[String]> {
        self.0
            .binary_search_by(|(t, _)| t.as_str().cmp(tag))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    /// How many tags.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no tag.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// As a map's `collect`: in the order of the tags, the last of a repeated tag kept.
impl FromIterator<(String, Vec<String>)> for ViaTags {
    fn from_iter<I: IntoIterator<Item = (String, Vec<String>)>>(iter: I) -> Self {
        let map: BTreeMap<String, Vec<String>> = iter.into_iter().collect();
        Self(
            map.into_iter()
                .map(|(tag, names)| (tag, names.into_boxed_slice()))
                .collect(),
        )
    }
}

impl std::fmt::Debug for ViaTags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for ViaTags {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for ViaTags {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let map = BTreeMap::<String, Vec<String>>::deserialize(deserializer)?;
        Ok(map.into_iter().collect())
    }
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
    /// When the gateway serves a default route: what it leaves out, with the reasons (the
    /// overlay, the ranges of [`crate::NOT_THE_INTERNET`], the gateway's other subnets). The
    /// grants and forward rules marked `default_route` already leave these out. The agent adds
    /// the gateway's own interface addresses with [`View::exclude_from_default_route`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub default_route_excludes: BTreeMap<Ipv4Net, Exclusion>,
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
    /// Whether the policy grants a default route through this gateway (see
    /// [`Grant::default_route`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub default_route: bool,
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

fn is_false(value: &bool) -> bool {
    !*value
}

impl View {
    /// Whether [`View::exclude_from_default_route`] would change this view with `extra`: it
    /// serves a default route and one of `extra` is not left out of it yet.
    pub fn excludes_more(&self, extra: impl IntoIterator<Item = Ipv4Net>) -> bool {
        self.gateway.as_ref().is_some_and(|gateway| {
            let excludes = &gateway.default_route_excludes;
            !excludes.is_empty()
                && extra
                    .into_iter()
                    .any(|net| !excludes.contains_key(&net.trunc()))
        })
    }

    /// Leaves `extra` out of every default route this gateway serves, as well: the agent adds
    /// the gateway's own interface addresses, which only it knows. Records them in
    /// [`GatewayView::default_route_excludes`] and takes them out of the destinations of the
    /// forward rules and inbound grants marked `default_route`; destinations that a policy
    /// grants explicitly (inside a subnet already excluded) are left as they are. Does nothing
    /// on a system that is not a gateway or serves no default route.
    pub fn exclude_from_default_route(
        &mut self,
        extra: impl IntoIterator<Item = (Ipv4Net, Exclusion)>,
    ) {
        let Some(gateway) = &mut self.gateway else {
            return;
        };
        if gateway.default_route_excludes.is_empty() {
            return;
        }
        let old: Vec<Ipv4Net> = gateway.default_route_excludes.keys().copied().collect();
        let mut new = Vec::new();
        for (net, why) in extra {
            let net = net.trunc();
            if let std::collections::btree_map::Entry::Vacant(slot) =
                gateway.default_route_excludes.entry(net)
            {
                slot.insert(why);
                new.push(net);
            }
        }
        if new.is_empty() {
            return;
        }
        for forward in gateway.forward.values_mut().filter(|f| f.default_route) {
            forward.destinations = narrow(&forward.destinations, &old, &new);
        }
        for peer in self.peers.values_mut() {
            for grant in peer.inbound.values_mut().filter(|g| g.default_route) {
                for rule in &mut grant.rules {
                    rule.destinations = narrow(&rule.destinations, &old, &new);
                }
            }
        }
    }
}

/// Which enabled systems carry which tags: what every view looks up.
pub(crate) trait Carriers<'n> {
    /// Enabled systems of `net` carrying any of `tags`, each once, by name.
    fn carriers(&self, net: &'n Network, tags: &BTreeSet<String>) -> BTreeMap<&'n str, &'n System>;
}

/// Systems by tag, built once per compilation, borrowing the network.
#[derive(Debug)]
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
}

impl<'n> Carriers<'n> for TagIndex<'n> {
    fn carriers(&self, _: &'n Network, tags: &BTreeSet<String>) -> BTreeMap<&'n str, &'n System> {
        let mut out = BTreeMap::new();
        for tag in tags {
            for system in self.by_tag.get(tag.as_str()).into_iter().flatten() {
                out.insert(system.name.as_str(), *system);
            }
        }
        out
    }
}

/// Names of systems by tag: the same index, owning its data, so that it can live beside the
/// network it indexes (in a [`SharedCompiler`]). A carrier costs one more lookup by name. The
/// names are persistent sets, so that the index of the next version of a network is this one
/// copied (one set per tag, shared) and updated for the systems that changed.
#[derive(Debug, Clone)]
struct NameIndex {
    // Only looked up, never iterated: its order cannot leak.
    by_tag: HashMap<String, imbl::OrdSet<String>>,
}

impl NameIndex {
    fn new(net: &Network) -> Self {
        let mut index = Self {
            by_tag: HashMap::new(),
        };
        for system in net.systems.values() {
            index.add(system);
        }
        index
    }

    /// Indexes `system` (when enabled: only enabled systems carry their tags).
    fn add(&mut self, system: &System) {
        if system.enabled {
            for tag in &system.tags {
                self.by_tag
                    .entry(tag.clone())
                    .or_default()
                    .insert(system.name.clone());
            }
        }
    }

    /// Forgets `system`, as [`NameIndex::add`] indexed it.
    fn remove(&mut self, system: &System) {
        if system.enabled {
            for tag in &system.tags {
                if let Some(names) = self.by_tag.get_mut(tag) {
                    names.remove(&system.name);
                    if names.is_empty() {
                        self.by_tag.remove(tag);
                    }
                }
            }
        }
    }
}

impl<'n> Carriers<'n> for NameIndex {
    fn carriers(&self, net: &'n Network, tags: &BTreeSet<String>) -> BTreeMap<&'n str, &'n System> {
        let mut out = BTreeMap::new();
        for tag in tags {
            for name in self.by_tag.get(tag.as_str()).into_iter().flatten() {
                if let Some(system) = net.systems.get(name) {
                    out.insert(system.name.as_str(), system);
                }
            }
        }
        out
    }
}

/// What a policy of either kind says about its senders: their tags, the trust requirements on
/// them, and when the policy is active.
#[derive(Clone, Copy)]
pub(crate) struct Terms<'p> {
    senders: &'p BTreeSet<String>,
    trust: &'p [String],
    active_hours: &'p Option<ActiveHours>,
}

impl<'p> From<&'p DirectPolicy> for Terms<'p> {
    fn from(policy: &'p DirectPolicy) -> Self {
        Self {
            senders: &policy.senders,
            trust: &policy.trust,
            active_hours: &policy.active_hours,
        }
    }
}

impl<'p> From<&'p GatewayPolicy> for Terms<'p> {
    fn from(policy: &'p GatewayPolicy) -> Self {
        Self {
            senders: &policy.senders,
            trust: &policy.trust,
            active_hours: &policy.active_hours,
        }
    }
}

/// The requirements of a grant to `sender`, enforced by `enforcer`, under a policy's `terms`.
pub(crate) fn requirements(
    net: &Network,
    sender: &System,
    enforcer: &str,
    terms: Terms<'_>,
) -> Requirements {
    let via_tags = sender
        .tags
        .intersection(terms.senders)
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
        policy_trust: terms.trust.to_vec(),
        via_tags,
        active_hours: terms.active_hours.clone(),
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
    // Room for exactly one more: a gateway keeps these for each of its senders.
    out.reserve_exact(1);
    out.push(AllowRule {
        protocol: Protocol::Icmp,
        ports: None,
        sources: vec![host(sender)],
        destinations: vec![host(gateway)],
        label: Some(GATEWAY_REACHABILITY.to_owned()),
    });
    out
}

impl PeerView {
    /// The grants of flows opened in `direction`.
    fn grants_mut(&mut self, direction: Direction) -> &mut Grants {
        match direction {
            Direction::Inbound => &mut self.inbound,
            Direction::Outbound => &mut self.outbound,
        }
    }
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
        default_route_excludes: BTreeMap::new(),
        inbound: BTreeMap::new(),
        outbound: BTreeMap::new(),
    }
}

/// Compiles the view of the system named `system`.
///
/// To compile the views of many systems of one network (a control server after an edit), use
/// a [`Compiler`]: it indexes the network once instead of once per view.
///
/// # Errors
/// [`Error::UnknownSystem`] when the definition has no such system.
pub fn compile(net: &Network, system: &str) -> Result<View> {
    Compiler::new(net).compile(system)
}

/// Compiles views of one network, sharing what every view needs: the index of which systems
/// carry which tag. Building it costs a pass over every system; each view then costs only
/// what that system's policies reach (for a sender, its gateways; for a gateway, its senders).
/// A view compiled here is the view [`compile`] gives.
#[derive(Debug)]
pub struct Compiler<'n> {
    net: &'n Network,
    index: TagIndex<'n>,
}

impl<'n> Compiler<'n> {
    /// Indexes `net`.
    pub fn new(net: &'n Network) -> Self {
        Self {
            net,
            index: TagIndex::new(net),
        }
    }

    /// The view of the system named `system`.
    ///
    /// # Errors
    /// [`Error::UnknownSystem`] when the definition has no such system.
    pub fn compile(&self, system: &str) -> Result<View> {
        compile_with(self.net, &self.index, system)
    }
}

/// A [`Compiler`] that owns (a share of) its network, so that it can be kept beside the
/// network at one revision and used from many tasks (a control server's agents). A view
/// compiled here is the view [`compile`] gives.
#[derive(Debug)]
pub struct SharedCompiler {
    net: Arc<Network>,
    index: NameIndex,
}

impl SharedCompiler {
    /// Indexes `net`.
    pub fn new(net: Arc<Network>) -> Self {
        let index = NameIndex::new(&net);
        Self { net, index }
    }

    /// The network.
    pub fn network(&self) -> &Arc<Network> {
        &self.net
    }

    /// The compiler of `net`, a later version of this compiler's network: this one's index
    /// updated for the systems that differ (the persistent maps skip what the networks
    /// share), the index [`SharedCompiler::new`] would build. Costs the change, not the
    /// network.
    pub fn next(&self, net: Arc<Network>) -> Self {
        use imbl::ordmap::DiffItem;
        let mut index = self.index.clone();
        for item in self.net.systems.diff(&net.systems) {
            match item {
                DiffItem::Add(_, system) => index.add(system),
                DiffItem::Remove(_, system) => index.remove(system),
                DiffItem::Update {
                    old: (_, old),
                    new: (_, new),
                } => {
                    index.remove(old);
                    index.add(new);
                }
            }
        }
        Self { net, index }
    }

    /// The view of the system named `system`.
    ///
    /// # Errors
    /// [`Error::UnknownSystem`] when the definition has no such system.
    pub fn compile(&self, system: &str) -> Result<View> {
        compile_with(&self.net, &self.index, system)
    }
}

fn compile_with<'n>(net: &'n Network, index: &impl Carriers<'n>, system: &str) -> Result<View> {
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
    direct(net, me, index, &mut view);
    as_sender(net, me, &mut view);
    if me.is_gateway() {
        as_gateway(net, me, index, &mut view);
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

fn direct<'n>(net: &'n Network, me: &System, index: &impl Carriers<'n>, view: &mut View) {
    for policy in net
        .direct_policies
        .values()
        .filter(|p| p.enabled && !p.acl.is_empty())
    {
        // As a sender, flows we open towards each receiver; as a receiver, flows each sender
        // opens towards us.
        let sides = [
            (Direction::Outbound, &policy.senders, &policy.receivers),
            (Direction::Inbound, &policy.receivers, &policy.senders),
        ];
        for (direction, my_tags, their_tags) in sides {
            if me.tags.is_disjoint(my_tags) {
                continue;
            }
            for peer in index.carriers(net, their_tags).into_values() {
                if peer.name == me.name {
                    continue;
                }
                let (sender, receiver) = match direction {
                    Direction::Outbound => (me, peer),
                    Direction::Inbound => (peer, me),
                };
                let grant = Box::new(Grant {
                    kind: GrantKind::Direct,
                    default_route: false,
                    rules: rules(&policy.acl, sender.address, &[host(receiver.address)]),
                    requirements: requirements(net, sender, &receiver.name, policy.into()),
                });
                peer_entry(&mut view.peers, net, peer)
                    .grants_mut(direction)
                    .insert(policy.name.clone(), grant);
            }
        }
    }
}

/// The grant of gateway `policy` to `sender` through `gateway`, towards `destinations` (with
/// whether they come from a default route).
fn gateway_grant(
    net: &Network,
    policy: &GatewayPolicy,
    sender: &System,
    gateway: &System,
    (destinations, default_route): &(Vec<AddrEntry>, bool),
) -> Box<Grant> {
    Box::new(Grant {
        kind: GrantKind::Gateway,
        default_route: *default_route,
        rules: gateway_rules(&policy.acl, sender.address, gateway.address, destinations),
        requirements: requirements(net, sender, &gateway.name, policy.into()),
    })
}

/// The destinations `policy` grants through `gateway` in the subnets it serves (`served`),
/// and whether one of them is a default route (then it means the Internet: see
/// [`crate::internet`]).
fn destinations(
    net: &Network,
    policy: &GatewayPolicy,
    gateway: &System,
    served: &[Ipv4Net],
) -> (Vec<AddrEntry>, bool) {
    let mut out = Vec::new();
    let mut default_route = false;
    for subnet in served {
        if subnet.prefix_len() == 0 {
            default_route = true;
            let excludes = default_route_excludes(net, gateway);
            out.extend(default_route_destinations(policy, &excludes));
        } else {
            out.extend(policy.destinations_in(*subnet, net.overlay));
        }
    }
    (out, default_route)
}

/// The subnets of `policy` that `gateway` serves, with the destinations granted in them.
fn served_by<'p>(
    policy: &'p GatewayPolicy,
    gateway: &'p System,
) -> impl Iterator<Item = Ipv4Net> + 'p {
    let settings = gateway.gateway.as_ref();
    policy
        .subnets
        .iter()
        .copied()
        .filter(move |net| settings.and_then(|g| g.source_of(*net)).is_some())
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
            let granted = destinations(net, policy, gateway, &subnets);
            let default_route = granted.1;
            let grant = gateway_grant(net, policy, me, gateway, &granted);
            let peer = peer_entry(&mut view.peers, net, gateway);
            peer.outbound.insert(policy.name.clone(), grant);
            if default_route && peer.default_route_excludes.is_empty() {
                peer.default_route_excludes = default_route_excludes(net, gateway);
            }
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

fn as_gateway<'n>(net: &'n Network, me: &System, index: &impl Carriers<'n>, view: &mut View) {
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
        let granted = destinations(net, policy, me, &served);
        let mut senders = BTreeMap::new();
        for sender in index.carriers(net, &policy.senders).into_values() {
            if sender.name == me.name {
                continue;
            }
            senders.insert(sender.name.clone(), sender.address);
            let grant = gateway_grant(net, policy, sender, me, &granted);
            peer_entry(&mut view.peers, net, sender)
                .inbound
                .insert(policy.name.clone(), grant);
        }
        if !senders.is_empty() {
            let (destinations, default_route) = granted;
            forward.insert(
                policy.name.clone(),
                ForwardRule {
                    senders,
                    default_route,
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
    let default_route_excludes = if subnets.keys().any(|s| s.prefix_len() == 0) {
        default_route_excludes(net, me)
    } else {
        BTreeMap::new()
    };
    view.gateway = Some(GatewayView {
        auto_discover: settings.auto_discover,
        removed: settings.removed.clone(),
        subnets,
        forward,
        default_route_excludes,
        snat,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries
            .iter()
            .map(|(tag, names)| {
                let names = names.iter().map(|n| (*n).to_owned()).collect();
                ((*tag).to_owned(), names)
            })
            .collect()
    }

    #[test]
    fn via_tags_read_and_write_the_json_of_a_map() {
        let cases: [&[(&str, &[&str])]; 4] = [
            &[],
            &[("users", &[])],
            &[("users", &["office", "no-tor"]), ("admins", &["vpn"])],
            &[("z", &[]), ("a", &["x"]), ("m", &["y", "x"]), ("b", &[])],
        ];
        for entries in cases {
            let map = map(entries);
            let tags: ViaTags = map.clone().into_iter().collect();
            let json = serde_json::to_string(&map).unwrap();
            assert_eq!(serde_json::to_string(&tags).unwrap(), json);
            assert_eq!(serde_json::from_str::<ViaTags>(&json).unwrap(), tags);
            assert_eq!(tags.len(), map.len());
            assert_eq!(tags.is_empty(), map.is_empty());
            let pairs: Vec<(&str, &[String])> = tags.iter().collect();
            let expected: Vec<(&str, &[String])> = map
                .iter()
                .map(|(t, n)| (t.as_str(), n.as_slice()))
                .collect();
            assert_eq!(pairs, expected, "in the order of the tags");
            for (tag, names) in &map {
                assert_eq!(tags.get(tag), Some(names.as_slice()));
            }
            assert_eq!(tags.get("nobody"), None);
            assert_eq!(format!("{tags:?}"), format!("{map:?}"));
        }
        // As a map: unordered and repeated keys read in order, the last one kept.
        let tags: ViaTags = serde_json::from_str(r#"{"b": ["1"], "a": [], "b": ["2"]}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&tags).unwrap(),
            r#"{"a":[],"b":["2"]}"#
        );
        assert!(serde_json::from_str::<ViaTags>(r#"["a"]"#).is_err());
    }
}
