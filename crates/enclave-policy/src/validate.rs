//! Parsing and validation of the network definition: every problem at once, with positions.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;

use base64::Engine as _;
use enclave_filter::{AddrEntry, PortRange, Protocol};
use ipnet::Ipv4Net;

use crate::diag::{Diagnostic, Sink};
use crate::internet::{default_route_excludes, Exclusion};
use crate::model::{
    entry_within, AclEntry, ActiveHours, DirectPolicy, GatewayPolicy, GatewaySettings, HoursWindow,
    Network, PresharedKey, System, Tag, TrustKind, TrustRequirement, Weekday,
};
use crate::raw::{RawAcl, RawActiveHours, RawDefinition, RawPresharedKey, S};
use crate::{Error, Result};

/// The overlay network when the definition does not say.
pub const DEFAULT_OVERLAY: &str = "100.64.0.0/10";
/// Persistent keepalive when the definition does not say, in seconds.
pub const DEFAULT_KEEPALIVE: u16 = 25;
/// A gateway's priority when the definition does not say.
pub const DEFAULT_PRIORITY: u32 = 100;

/// A network definition that passed validation, with the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated definition.
    pub network: Network,
    /// Legal but suspicious things, in file order.
    pub warnings: Vec<Diagnostic>,
}

/// Parses and validates a network definition. `file` is only used in diagnostics.
///
/// # Errors
/// [`Error::Invalid`] with every error (and warning) found, in file order.
pub fn load(file: &str, text: &str) -> Result<Loaded> {
    let mut sink = Sink::new(file, text);
    // One parse: the document (with spans) is walked for unknown fields, then deserialised.
    let doc = match toml_edit::Document::parse(text.to_owned()) {
        Ok(doc) => doc,
        Err(err) => {
            let span = err.span().unwrap_or(0..0);
            sink.error(&span, err.message().trim_end().to_owned());
            return Err(invalid(file, sink));
        }
    };
    if crate::schema::unknown_fields(&doc, &mut sink) {
        return Err(invalid(file, sink));
    }
    let raw: RawDefinition = match toml_edit::de::from_document(doc) {
        Ok(raw) => raw,
        Err(err) => {
            let span = err.span().unwrap_or(0..0);
            sink.error(&span, err.message().trim_end().to_owned());
            return Err(invalid(file, sink));
        }
    };
    let network = Checker {
        sink: &mut sink,
        declared_trust: BTreeSet::new(),
    }
    .check(raw);
    if sink.has_errors() {
        return Err(invalid(file, sink));
    }
    Ok(Loaded {
        network,
        warnings: sink.finish(),
    })
}

fn invalid(file: &str, sink: Sink<'_>) -> Error {
    Error::Invalid {
        file: file.to_owned(),
        diagnostics: sink.finish(),
    }
}

struct Checker<'s, 'a> {
    sink: &'s mut Sink<'a>,
    /// Every trust requirement name declared, valid or not, so that a bad requirement is
    /// reported once and not again at each use.
    declared_trust: BTreeSet<String>,
}

/// A policy that grants a default route, for the warnings that need the whole definition.
struct DefaultRoute {
    policy: String,
    /// Where `0.0.0.0/0` is written in its subnets.
    span: Range<usize>,
    /// Its filter entries and where each is written.
    filter: BTreeMap<AddrEntry, Range<usize>>,
}

/// Whether an address entry and a CIDR share an address.
fn overlaps(entry: &AddrEntry, net: Ipv4Net) -> bool {
    match entry {
        AddrEntry::Net(inner) => inner.contains(&net) || net.contains(inner),
        AddrEntry::Range { first, last } => *first <= net.broadcast() && net.network() <= *last,
    }
}

/// An address entry as written: `10.1.2.3`, `10.0.0.0/24`, `10.0.0.1-10.0.0.9`.
fn show(entry: &AddrEntry) -> String {
    match entry {
        AddrEntry::Net(net) if net.prefix_len() == 32 => net.addr().to_string(),
        AddrEntry::Net(net) => net.to_string(),
        AddrEntry::Range { first, last } => format!("{first}-{last}"),
    }
}

/// Where each thing was defined, for diagnostics that refer back to it.
#[derive(Default)]
struct Places {
    system_names: BTreeMap<String, Range<usize>>,
    tag_carried: BTreeSet<String>,
}

impl Checker<'_, '_> {
    fn check(&mut self, raw: RawDefinition) -> Network {
        let (overlay, keepalive) = self.network_section(raw.network);
        let mut places = Places::default();
        let systems = self.systems(raw.system, overlay, &mut places);
        let trust_requirements = self.trust_requirements(raw.trust_requirement);
        let tags = self.tags(raw.tag, &trust_requirements, &places);
        let mut policy_names = BTreeMap::new();
        let mut direct_policies = BTreeMap::new();
        for raw in raw.direct_policy {
            let (name, policy) = self.policy(raw, |this, raw| {
                let name = this.policy_name(&raw.name, &mut policy_names);
                let policy = DirectPolicy {
                    name: name.clone(),
                    enabled: raw.enabled.unwrap_or(true),
                    senders: this.tag_list(&raw.senders, "senders", &places),
                    receivers: this.tag_list(&raw.receivers, "receivers", &places),
                    acl: this.acl(&raw.acl),
                    trust: this.trust_names(&raw.trust, &trust_requirements),
                    active_hours: raw.active_hours.as_ref().and_then(|h| this.active_hours(h)),
                };
                let grants_something = !policy.acl.is_empty()
                    && carriers(&systems, &policy.senders).next().is_some()
                    && carriers(&systems, &policy.receivers).next().is_some();
                let idle = policy.enabled && !grants_something;
                (name, policy, idle)
            });
            direct_policies.insert(name, policy);
        }
        let mut gateway_policies = BTreeMap::new();
        let mut default_routes = Vec::new();
        for raw in raw.gateway_policy {
            let (name, policy) = self.policy(raw, |this, raw| {
                let name = this.policy_name(&raw.name, &mut policy_names);
                let senders = this.tag_list(&raw.senders, "senders", &places);
                let gateways = this.gateway_list(&raw.gateways, &systems);
                let subnets = this.policy_subnets(&raw.subnets, &gateways, &systems, overlay);
                let filter = raw
                    .filter
                    .as_ref()
                    .map(|f| this.filter(f, &subnets))
                    .unwrap_or_default();
                let default_route = raw.subnets.get_ref().iter().find(|t| {
                    t.get_ref().trim().parse::<Ipv4Net>().ok() == Some(Ipv4Net::default())
                });
                if let Some(text) = default_route.filter(|_| subnets.contains(&Ipv4Net::default()))
                {
                    default_routes.push(DefaultRoute {
                        policy: name.clone(),
                        span: text.span(),
                        filter: filter.clone(),
                    });
                }
                let policy = GatewayPolicy {
                    name: name.clone(),
                    enabled: raw.enabled.unwrap_or(true),
                    senders,
                    gateways,
                    subnets,
                    filter: filter.into_keys().collect(),
                    acl: this.acl(&raw.acl),
                    trust: this.trust_names(&raw.trust, &trust_requirements),
                    active_hours: raw.active_hours.as_ref().and_then(|h| this.active_hours(h)),
                };
                let grants_something = !policy.acl.is_empty()
                    && !policy.subnets.is_empty()
                    && carriers(&systems, &policy.senders).next().is_some();
                let idle = policy.enabled && !grants_something;
                (name, policy, idle)
            });
            gateway_policies.insert(name, policy);
        }
        let preshared_keys = self.preshared_keys(raw.preshared_key, &systems);
        let network = Network {
            overlay,
            keepalive,
            systems: systems.into_iter().collect(),
            tags,
            trust_requirements,
            direct_policies,
            gateway_policies,
            preshared_keys,
        };
        for route in default_routes {
            self.default_route_warnings(&network, route);
        }
        network
    }

    /// A default route means the Internet: says what it leaves out, once per policy, and warns
    /// about filter entries it therefore never reaches.
    fn default_route_warnings(&mut self, net: &Network, route: DefaultRoute) {
        let Some(policy) = net.gateway_policies.get(&route.policy) else {
            return;
        };
        let explicit: Vec<Ipv4Net> = policy
            .subnets
            .iter()
            .copied()
            .filter(|s| s.prefix_len() > 0)
            .collect();
        let mut left_out: BTreeSet<(Ipv4Net, Exclusion)> = BTreeSet::new();
        for gateway in policy.gateways.iter().filter_map(|g| net.systems.get(g)) {
            let serves = gateway
                .gateway
                .as_ref()
                .and_then(|g| g.would_offer(Ipv4Net::default()))
                .is_some();
            if serves {
                left_out.extend(default_route_excludes(net, gateway));
            }
        }
        // What the policy names itself is granted explicitly: not "left out".
        left_out.retain(|(range, _)| !explicit.iter().any(|s| s.contains(range)));
        if left_out.is_empty() {
            return;
        }
        let ranges: Vec<String> = left_out
            .iter()
            .map(|(range, why)| why.describe(*range))
            .collect();
        self.sink.push(
            crate::diag::Severity::Warning,
            &route.span,
            format!(
                "the default route 0.0.0.0/0 of policy {:?} means the Internet: it does not \
                 reach {}",
                route.policy,
                ranges.join(", ")
            ),
            Some(
                "a default route means the Internet (docs/network-definition.md says why each of \
                 these is left out); to reach one, name it (or a subnet inside it) in the \
                 `subnets` of a policy and of the gateway's [system.gateway] table: that \
                 policy's filter and ACL apply"
                    .to_owned(),
            ),
        );
        for (entry, span) in &route.filter {
            if explicit.iter().any(|s| entry_within(entry, *s)) {
                continue;
            }
            let hit: Vec<String> = left_out
                .iter()
                .filter(|(range, _)| overlaps(entry, *range))
                .map(|(range, why)| why.describe(*range))
                .collect();
            if hit.is_empty() {
                continue;
            }
            self.sink.push(
                crate::diag::Severity::Warning,
                span,
                format!(
                    "filter entry {} of policy {:?} is not reached (wholly or in part) through \
                     the default route 0.0.0.0/0, which leaves out {}",
                    show(entry),
                    route.policy,
                    hit.join(", ")
                ),
                Some(
                    "add a subnet that contains it to the policy's `subnets` (and to the \
                     gateway's), or remove it from the filter"
                        .to_owned(),
                ),
            );
        }
    }

    /// `[[preshared_key]]` tables: two distinct known systems, each pair once, an absolute
    /// path. The key itself is never in the definition, only where both hosts keep it.
    fn preshared_keys(
        &mut self,
        raw: Vec<S<RawPresharedKey>>,
        systems: &BTreeMap<String, System>,
    ) -> Vec<PresharedKey> {
        let mut pairs: BTreeMap<[String; 2], PresharedKey> = BTreeMap::new();
        let mut files: BTreeMap<PathBuf, [String; 2]> = BTreeMap::new();
        for raw in raw {
            let raw = raw.into_inner();
            let names = raw.systems.get_ref();
            let mut ok = true;
            if names.len() != 2 {
                self.sink.error_hint(
                    &raw.systems.span(),
                    format!(
                        "a pre-shared key joins exactly two systems, this one names {}",
                        names.len()
                    ),
                    "write one [[preshared_key]] table per pair of systems",
                );
                ok = false;
            }
            for name in names {
                if !systems.contains_key(name.get_ref()) {
                    self.sink.error_hint(
                        &name.span(),
                        format!("no system named {:?}", name.get_ref()),
                        "a pre-shared key joins two systems defined in [[system]] tables",
                    );
                    ok = false;
                }
            }
            if let [a, b] = names.as_slice() {
                if a.get_ref() == b.get_ref() {
                    self.sink.error(
                        &b.span(),
                        format!(
                            "a pre-shared key joins two different systems, not {:?} with itself",
                            a.get_ref()
                        ),
                    );
                    ok = false;
                }
            }
            let file = PathBuf::from(raw.file.get_ref());
            if !file.is_absolute() {
                self.sink.error_hint(
                    &raw.file.span(),
                    format!(
                        "pre-shared key file {:?} is not an absolute path",
                        raw.file.get_ref()
                    ),
                    "write the full path the key file has on both hosts, for example \
                     \"/etc/enclave/psk/laptop--office-gw.key\"",
                );
                ok = false;
            }
            let [a, b] = names.as_slice() else {
                continue;
            };
            if !ok {
                continue;
            }
            let mut pair = [a.get_ref().clone(), b.get_ref().clone()];
            pair.sort();
            if pairs.contains_key(&pair) {
                self.sink.error_hint(
                    &raw.systems.span(),
                    format!(
                        "systems {:?} and {:?} already have a pre-shared key",
                        pair[0], pair[1]
                    ),
                    "a pair of systems has at most one [[preshared_key]] table; remove one",
                );
                continue;
            }
            if let Some([c, d]) = files.get(&file) {
                self.sink.push(
                    crate::diag::Severity::Warning,
                    &raw.file.span(),
                    format!(
                        "pre-shared key file {:?} is also the key of systems {c:?} and {d:?}",
                        raw.file.get_ref()
                    ),
                    Some(
                        "give each pair a key of its own, so that one leaked file opens one \
                         tunnel"
                            .to_owned(),
                    ),
                );
            } else {
                files.insert(file.clone(), pair.clone());
            }
            pairs.insert(
                pair.clone(),
                PresharedKey {
                    systems: pair,
                    file,
                },
            );
        }
        pairs.into_values().collect()
    }

    fn network_section(
        &mut self,
        raw: Option<S<crate::raw::RawNetwork>>,
    ) -> (Ipv4Net, Option<u16>) {
        let default_overlay: Ipv4Net = DEFAULT_OVERLAY.parse().unwrap_or_default();
        let Some(raw) = raw else {
            return (default_overlay, Some(DEFAULT_KEEPALIVE));
        };
        let raw = raw.into_inner();
        let overlay = match &raw.overlay {
            None => default_overlay,
            Some(text) => match self.cidr(text, "overlay network") {
                Some(net) if net.prefix_len() <= 30 => net,
                Some(_) => {
                    self.sink
                        .error(&text.span(), "the overlay network must be a /30 or larger");
                    default_overlay
                }
                None => default_overlay,
            },
        };
        let keepalive = match raw.keepalive {
            None => Some(DEFAULT_KEEPALIVE),
            Some(k) if *k.get_ref() == 0 => None,
            Some(k) => Some(k.into_inner()),
        };
        (overlay, keepalive)
    }

    fn systems(
        &mut self,
        raw: Vec<S<crate::raw::RawSystem>>,
        overlay: Ipv4Net,
        places: &mut Places,
    ) -> BTreeMap<String, System> {
        let mut keys: BTreeMap<String, String> = BTreeMap::new();
        let mut addresses: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
        let mut systems = BTreeMap::new();
        for raw in raw {
            let raw = raw.into_inner();
            let Some(name) = self.named(&raw.name, "system") else {
                continue;
            };
            let duplicate = places.system_names.contains_key(&name);
            if duplicate {
                self.sink
                    .error(&raw.name.span(), format!("duplicate system name {name:?}"));
            } else {
                places.system_names.insert(name.clone(), raw.name.span());
            }
            let key = raw.public_key.get_ref().trim().to_owned();
            match base64::engine::general_purpose::STANDARD.decode(&key) {
                Ok(bytes) if bytes.len() == 32 => {
                    if let Some(other) = keys.insert(key.clone(), name.clone()) {
                        self.sink.error(
                            &raw.public_key.span(),
                            format!("system {name:?} has the same public key as system {other:?}"),
                        );
                    }
                }
                _ => self.sink.error_hint(
                    &raw.public_key.span(),
                    format!("public key of system {name:?} is not a WireGuard key"),
                    "a key is 32 bytes in base64 (44 characters), as `enclave-agent keygen` prints",
                ),
            }
            let address = match raw.address.get_ref().parse::<Ipv4Addr>() {
                Ok(addr) => {
                    if !overlay.contains(&addr)
                        || addr == overlay.network()
                        || addr == overlay.broadcast()
                    {
                        self.sink.error(
                            &raw.address.span(),
                            format!(
                                "virtual address {addr} of system {name:?} is outside the usable \
                                 addresses of the overlay network {overlay}"
                            ),
                        );
                    } else if let Some(other) = addresses.insert(addr, name.clone()) {
                        self.sink.error(
                            &raw.address.span(),
                            format!(
                                "system {name:?} has the same virtual address {addr} as system \
                                 {other:?}"
                            ),
                        );
                    }
                    addr
                }
                Err(_) => {
                    self.sink.error(
                        &raw.address.span(),
                        format!(
                            "virtual address {:?} of system {name:?} is not an IPv4 address",
                            raw.address.get_ref()
                        ),
                    );
                    Ipv4Addr::UNSPECIFIED
                }
            };
            let mut tags = BTreeSet::new();
            for tag in &raw.tags {
                if self.name_ok(tag, "tag") && !tags.insert(tag.get_ref().clone()) {
                    self.sink.warning(
                        &tag.span(),
                        format!("tag {:?} is listed twice on system {name:?}", tag.get_ref()),
                    );
                }
            }
            places.tag_carried.extend(tags.iter().cloned());
            let endpoint = raw.endpoint.as_ref().and_then(|ep| {
                let parsed = ep.get_ref().parse::<SocketAddr>().ok();
                if parsed.is_none() {
                    self.sink.error_hint(
                        &ep.span(),
                        format!(
                            "endpoint {:?} of system {name:?} is not an address and port",
                            ep.get_ref()
                        ),
                        "write it as IP:PORT, for example \"203.0.113.10:51820\"",
                    );
                }
                parsed
            });
            let gateway = raw.gateway.map(|g| {
                let g = g.into_inner();
                let mut subnets = BTreeSet::new();
                for text in &g.subnets {
                    if let Some(net) = self.cidr(text, "subnet") {
                        self.overlap_warning(&net, overlay, text);
                        subnets.insert(net);
                    }
                }
                let removed = g
                    .removed
                    .iter()
                    .filter_map(|s| self.cidr(s, "subnet"))
                    .collect();
                GatewaySettings {
                    allowed: g.allowed,
                    subnets,
                    removed,
                    auto_discover: g.auto_discover.unwrap_or(true),
                    priority: g.priority.map_or(DEFAULT_PRIORITY, |p| p.into_inner()),
                }
            });
            if duplicate {
                continue;
            }
            systems.insert(
                name.clone(),
                System {
                    name,
                    public_key: key,
                    address,
                    tags,
                    endpoint,
                    enabled: raw.enabled.unwrap_or(true),
                    gateway,
                },
            );
        }
        systems
    }

    fn overlap_warning(&mut self, net: &Ipv4Net, overlay: Ipv4Net, text: &S<String>) {
        if net.prefix_len() > 0 && (net.contains(&overlay) || overlay.contains(net)) {
            self.sink.warning(
                &text.span(),
                format!("subnet {net} overlaps the overlay network {overlay}"),
            );
        }
    }

    fn trust_requirements(
        &mut self,
        raw: Vec<S<crate::raw::RawTrust>>,
    ) -> BTreeMap<String, TrustRequirement> {
        let mut out = BTreeMap::new();
        for raw in raw {
            let raw = raw.into_inner();
            let Some(name) = self.named(&raw.name, "trust requirement") else {
                continue;
            };
            if !self.declared_trust.insert(name.clone()) {
                self.sink.error(
                    &raw.name.span(),
                    format!("duplicate trust requirement name {name:?}"),
                );
                continue;
            }
            let kind = match raw.kind.get_ref().as_str() {
                "public_ip" => {
                    let allow: Vec<_> = raw
                        .allow
                        .iter()
                        .filter_map(|s| self.cidr(s, "address range"))
                        .collect();
                    let block: Vec<_> = raw
                        .block
                        .iter()
                        .filter_map(|s| self.cidr(s, "address range"))
                        .collect();
                    if raw.allow.is_empty() && raw.block.is_empty() {
                        self.sink.warning(
                            &raw.name.span(),
                            format!("trust requirement {name:?} has neither allow nor block ranges and always holds"),
                        );
                    }
                    TrustKind::PublicIp { allow, block }
                }
                other => {
                    self.sink.error_hint(
                        &raw.kind.span(),
                        format!("unknown trust requirement kind {other:?}"),
                        "the supported kind is \"public_ip\"",
                    );
                    continue;
                }
            };
            out.insert(name.clone(), TrustRequirement { name, kind });
        }
        out
    }

    fn tags(
        &mut self,
        raw: Vec<S<crate::raw::RawTag>>,
        trust: &BTreeMap<String, TrustRequirement>,
        places: &Places,
    ) -> BTreeMap<String, Tag> {
        let mut out = BTreeMap::new();
        for raw in raw {
            let raw = raw.into_inner();
            let Some(name) = self.named(&raw.name, "tag") else {
                continue;
            };
            if out.contains_key(&name) {
                self.sink
                    .error(&raw.name.span(), format!("tag {name:?} is defined twice"));
                continue;
            }
            if !places.tag_carried.contains(&name) {
                self.sink
                    .warning(&raw.name.span(), format!("no system carries tag {name:?}"));
            }
            let trust = self.trust_names(&raw.trust, trust);
            out.insert(name.clone(), Tag { name, trust });
        }
        out
    }

    fn policy_name(
        &mut self,
        name: &S<String>,
        seen: &mut BTreeMap<String, Range<usize>>,
    ) -> String {
        let text = name.get_ref().clone();
        if self.name_ok(name, "policy") {
            if let Some(other) = seen.insert(text.clone(), name.span()) {
                // Direct policies are read before gateway policies: blame the later one.
                let later = if other.start > name.span().start {
                    other
                } else {
                    name.span()
                };
                self.sink
                    .error(&later, format!("duplicate policy name {text:?}"));
            }
        }
        text
    }

    /// Checks one policy table with `check`, which returns the policy's name, the policy, and
    /// whether it is enabled yet grants nothing: that is warned of, unless the table has errors
    /// of its own.
    fn policy<R, P>(
        &mut self,
        raw: S<R>,
        check: impl FnOnce(&mut Self, R) -> (String, P, bool),
    ) -> (String, P) {
        let span = raw.span();
        let errors_before = self.sink.error_count();
        let (name, policy, idle) = check(self, raw.into_inner());
        if idle && self.sink.error_count() == errors_before {
            self.sink
                .warning(&span, format!("policy {name:?} grants nothing"));
        }
        (name, policy)
    }

    /// The name of a table, or `None` (reported) when it is empty.
    fn named(&mut self, name: &S<String>, what: &str) -> Option<String> {
        self.name_ok(name, what).then(|| name.get_ref().clone())
    }

    fn name_ok(&mut self, name: &S<String>, what: &str) -> bool {
        if name.get_ref().trim().is_empty() {
            self.sink
                .error(&name.span(), format!("{what} name is empty"));
            false
        } else {
            true
        }
    }

    fn tag_list(
        &mut self,
        list: &S<Vec<S<String>>>,
        side: &str,
        places: &Places,
    ) -> BTreeSet<String> {
        if list.get_ref().is_empty() {
            self.sink
                .error(&list.span(), format!("the {side} of a policy name no tag"));
        }
        let mut out = BTreeSet::new();
        for tag in list.get_ref() {
            if !self.name_ok(tag, "tag") {
                continue;
            }
            if !places.tag_carried.contains(tag.get_ref()) {
                self.sink.warning(
                    &tag.span(),
                    format!("no system carries tag {:?}", tag.get_ref()),
                );
            }
            out.insert(tag.get_ref().clone());
        }
        out
    }

    fn gateway_list(
        &mut self,
        list: &S<Vec<S<String>>>,
        systems: &BTreeMap<String, System>,
    ) -> BTreeSet<String> {
        if list.get_ref().is_empty() {
            self.sink
                .error(&list.span(), "a gateway access policy names no gateway");
        }
        let mut out = BTreeSet::new();
        for name in list.get_ref() {
            let text = name.get_ref();
            match systems.get(text) {
                None => self
                    .sink
                    .error(&name.span(), format!("no system named {text:?}")),
                Some(system) if system.gateway.is_none() => self.sink.error_hint(
                    &name.span(),
                    format!("system {text:?} is not allowed to act as a gateway"),
                    format!("add a [system.gateway] table with `allowed = true` to {text:?}"),
                ),
                Some(system) if !system.gateway.as_ref().is_some_and(|g| g.allowed) => {
                    // Unmarked by the administrator: its settings stay, it routes nothing.
                    self.sink.warning(
                        &name.span(),
                        format!(
                            "system {text:?} is switched off as a gateway (allowed = false): \
                             this policy routes nothing through it"
                        ),
                    );
                    out.insert(text.clone());
                }
                Some(_) => {
                    out.insert(text.clone());
                }
            }
        }
        out
    }

    fn policy_subnets(
        &mut self,
        list: &S<Vec<S<String>>>,
        gateways: &BTreeSet<String>,
        systems: &BTreeMap<String, System>,
        overlay: Ipv4Net,
    ) -> BTreeSet<Ipv4Net> {
        if list.get_ref().is_empty() {
            self.sink
                .error(&list.span(), "a gateway access policy names no subnet");
        }
        let mut out = BTreeSet::new();
        for text in list.get_ref() {
            let Some(net) = self.cidr(text, "subnet") else {
                continue;
            };
            self.overlap_warning(&net, overlay, text);
            let offered = gateways.iter().any(|g| {
                systems
                    .get(g)
                    .and_then(|s| s.gateway.as_ref())
                    .and_then(|s| s.would_offer(net))
                    .is_some()
            });
            if !offered && !gateways.is_empty() {
                let names: Vec<_> = gateways.iter().map(|g| format!("{g:?}")).collect();
                self.sink.error_hint(
                    &text.span(),
                    format!(
                        "subnet {net} is not offered by any gateway of this policy ({})",
                        names.join(", ")
                    ),
                    "add it to `subnets` in the [system.gateway] table of a gateway \
                     (and out of `removed`)",
                );
            }
            out.insert(net);
        }
        out
    }

    /// The filter's entries, each with where it was written (the first time).
    fn filter(
        &mut self,
        list: &S<Vec<S<String>>>,
        subnets: &BTreeSet<Ipv4Net>,
    ) -> BTreeMap<AddrEntry, Range<usize>> {
        if list.get_ref().is_empty() {
            self.sink.error_hint(
                &list.span(),
                "the subnet filter is empty and would allow nothing",
                "remove `filter` to grant the whole subnets",
            );
        }
        let mut out = BTreeMap::new();
        for text in list.get_ref() {
            let Some(entry) = self.addr_entry(text) else {
                continue;
            };
            if !subnets.iter().any(|net| entry_within(&entry, *net)) {
                self.sink.error(
                    &text.span(),
                    format!(
                        "filter entry {:?} is not inside the subnets of the policy",
                        text.get_ref()
                    ),
                );
                continue;
            }
            out.entry(entry).or_insert_with(|| text.span());
        }
        out
    }

    fn addr_entry(&mut self, text: &S<String>) -> Option<AddrEntry> {
        let raw = text.get_ref().trim();
        let parsed = if let Some((a, b)) = raw.split_once('-') {
            match (a.trim().parse::<Ipv4Addr>(), b.trim().parse::<Ipv4Addr>()) {
                (Ok(first), Ok(last)) if first <= last => Some(AddrEntry::Range { first, last }),
                (Ok(_), Ok(_)) => {
                    self.sink.error(
                        &text.span(),
                        format!("address range {raw:?} ends before it starts"),
                    );
                    return None;
                }
                _ => None,
            }
        } else if raw.contains('/') {
            raw.parse::<Ipv4Net>()
                .ok()
                .map(|n| AddrEntry::Net(n.trunc()))
        } else {
            raw.parse::<Ipv4Addr>()
                .ok()
                .map(|a| AddrEntry::Net(Ipv4Net::from(a)))
        };
        if parsed.is_none() {
            self.sink.error_hint(
                &text.span(),
                format!("filter entry {raw:?} is not an address, a range or a CIDR"),
                "write 192.168.77.20, 192.168.77.20-192.168.77.21 or 192.168.77.16/28",
            );
        }
        parsed
    }

    fn cidr(&mut self, text: &S<String>, what: &str) -> Option<Ipv4Net> {
        let raw = text.get_ref().trim();
        match raw.parse::<Ipv4Net>() {
            Ok(net) if net.trunc() == net => Some(net),
            Ok(net) => {
                self.sink.error_hint(
                    &text.span(),
                    format!("{what} {raw} has host bits set"),
                    format!("did you mean {}?", net.trunc()),
                );
                None
            }
            Err(_) => {
                self.sink.error_hint(
                    &text.span(),
                    format!("{what} {raw:?} is not an IPv4 CIDR"),
                    "write it as ADDRESS/PREFIX, for example 192.168.77.0/24",
                );
                None
            }
        }
    }

    fn acl(&mut self, list: &S<Vec<S<RawAcl>>>) -> Vec<AclEntry> {
        let mut out = Vec::new();
        for entry in list.get_ref() {
            if let Some(acl) = self.acl_entry(entry) {
                if !out.contains(&acl) {
                    out.push(acl);
                }
            }
        }
        out
    }

    fn acl_entry(&mut self, entry: &S<RawAcl>) -> Option<AclEntry> {
        let raw = entry.get_ref();
        let protocol = match raw.protocol.get_ref().to_ascii_lowercase().as_str() {
            "any" => Protocol::Any,
            "icmp" => Protocol::Icmp,
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => {
                self.sink.error_hint(
                    &raw.protocol.span(),
                    format!("unknown protocol {other:?} in ACL"),
                    "use any, icmp, tcp or udp",
                );
                return None;
            }
        };
        let ports = match &raw.ports {
            None => None,
            Some(_) if matches!(protocol, Protocol::Any | Protocol::Icmp) => {
                let spanned = raw.ports.as_ref().map(|p| p.span()).unwrap_or_default();
                self.sink.error(
                    &spanned,
                    format!(
                        "ports make no sense for protocol {}",
                        raw.protocol.get_ref().to_ascii_lowercase()
                    ),
                );
                return None;
            }
            Some(value) => Some(self.ports(value)?),
        };
        Some(AclEntry {
            protocol,
            ports,
            label: raw.label.clone(),
        })
    }

    fn ports(&mut self, value: &S<toml::Value>) -> Option<PortRange> {
        let hint = "write a port (445) or a range (\"8000-8100\") between 1 and 65535";
        let port = |n: i64| u16::try_from(n).ok().filter(|p| *p != 0);
        let parsed = match value.get_ref() {
            toml::Value::Integer(n) => port(*n).map(PortRange::single),
            toml::Value::String(text) => {
                let (a, b) = text.split_once('-').unwrap_or((text, text));
                match (a.trim().parse::<i64>(), b.trim().parse::<i64>()) {
                    (Ok(a), Ok(b)) => match (port(a), port(b)) {
                        (Some(first), Some(last)) if first <= last => {
                            Some(PortRange { first, last })
                        }
                        (Some(_), Some(_)) => {
                            self.sink.error_hint(
                                &value.span(),
                                format!("port range {text:?} ends before it starts"),
                                hint,
                            );
                            return None;
                        }
                        _ => None,
                    },
                    _ => None,
                }
            }
            _ => None,
        };
        if parsed.is_none() {
            self.sink.error_hint(
                &value.span(),
                format!("bad port or port range {}", value.get_ref()),
                hint,
            );
        }
        parsed
    }

    fn trust_names(
        &mut self,
        list: &[S<String>],
        known: &BTreeMap<String, TrustRequirement>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for name in list {
            if !known.contains_key(name.get_ref()) {
                if self.declared_trust.contains(name.get_ref()) {
                    continue;
                }
                self.sink.error_hint(
                    &name.span(),
                    format!("no trust requirement named {:?}", name.get_ref()),
                    "define it in a [[trust_requirement]] table",
                );
            } else if !out.contains(name.get_ref()) {
                out.push(name.get_ref().clone());
            }
        }
        out
    }

    fn active_hours(&mut self, raw: &S<RawActiveHours>) -> Option<ActiveHours> {
        let h = raw.get_ref();
        let mut ok = true;
        let mut days = BTreeSet::new();
        for day in &h.days {
            match Weekday::parse(day.get_ref()) {
                Some(d) => {
                    days.insert(d);
                }
                None => {
                    ok = false;
                    self.sink.error_hint(
                        &day.span(),
                        format!("unknown day {:?}", day.get_ref()),
                        "use mon, tue, wed, thu, fri, sat or sun",
                    );
                }
            }
        }
        if h.days.is_empty() {
            self.sink.warning(
                &raw.span(),
                "active hours name no day: the policy is never active",
            );
        }
        let mut windows = Vec::new();
        for text in &h.hours {
            match parse_window(text.get_ref()) {
                Some(w) => windows.push(w),
                None => {
                    ok = false;
                    self.sink.error_hint(
                        &text.span(),
                        format!("bad hours window {:?}", text.get_ref()),
                        "write HH:MM-HH:MM with the end after the start (up to 24:00); \
                         split a window that crosses midnight in two",
                    );
                }
            }
        }
        if jiff::tz::TimeZoneDatabase::bundled()
            .get(h.zone.get_ref())
            .is_err()
        {
            ok = false;
            self.sink.error_hint(
                &h.zone.span(),
                format!("unknown time zone {:?}", h.zone.get_ref()),
                "use an IANA time zone name such as \"America/Los_Angeles\" or \"UTC\"",
            );
        }
        windows.sort();
        ok.then(|| ActiveHours {
            days,
            windows,
            zone: h.zone.get_ref().clone(),
        })
    }
}

/// The IANA time zone names that active hours may name: those of the bundled database the
/// validator checks `zone` against, sorted.
pub fn time_zones() -> Vec<String> {
    let mut zones: Vec<String> = jiff::tz::TimeZoneDatabase::bundled()
        .available()
        .map(|name| name.as_str().to_owned())
        .collect();
    zones.sort();
    zones
}

fn parse_window(text: &str) -> Option<HoursWindow> {
    let (a, b) = text.split_once('-')?;
    let minutes = |t: &str| -> Option<u16> {
        let (h, m) = t.trim().split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
    };
    let (start, end) = (minutes(a)?, minutes(b)?);
    (start < end).then_some(HoursWindow { start, end })
}

/// Systems carrying at least one of `tags`.
pub(crate) fn carriers<'n>(
    systems: &'n BTreeMap<String, System>,
    tags: &'n BTreeSet<String>,
) -> impl Iterator<Item = &'n System> + 'n {
    systems
        .values()
        .filter(move |s| s.enabled && !s.tags.is_disjoint(tags))
}
