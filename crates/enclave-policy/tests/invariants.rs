//! Property tests of the compiled views' invariants, over random definitions.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use enclave_policy::{
    AddrEntry, AllowRule, FindingOutcome, GrantKind, Network, Protocol, Query, Verdict, View,
};
use ipnet::Ipv4Net;
use proptest::prelude::*;

mod common;
use common::admits;

const TAGS: [&str; 3] = ["a", "b", "c"];
const SUBNETS: [&str; 6] = [
    "10.0.0.0/24",
    "10.0.1.0/24",
    "10.0.0.0/16",
    "0.0.0.0/0",
    "192.168.1.0/24",
    // A public subnet a gateway serves: its own network, not the Internet of its default route.
    "198.51.100.0/24",
];
const FILTERS: [&str; 8] = [
    "10.0.0.5",
    "10.0.0.10-10.0.0.20",
    "10.0.1.0/28",
    "192.168.1.7",
    "10.0.200.1",
    "8.8.8.8",
    "169.254.169.254",
    "198.51.100.0-198.51.100.20",
];
const ACLS: [&str; 5] = [
    "{ protocol = \"any\" }",
    "{ protocol = \"icmp\" }",
    "{ protocol = \"tcp\", ports = 22 }",
    "{ protocol = \"tcp\", ports = \"1000-2000\" }",
    "{ protocol = \"udp\", ports = 53, label = \"dns\" }",
];
const KEYS: [&str; 6] = [
    "vTN8N6SXl8C/f4BwE2OKOmkFfGsPprd4XoDA5tqbHBM=",
    "bcvy1Kcg66j/nNMBY5aOQ/5HCIJ8yWt81xrdP32k1y8=",
    "oTgUhJx0PYq5SoepL0DBE7dTXHDw4nbcDwcaVq8JqyU=",
    "eTv6knpgaNhI2DhJE/HE1mmi4BxJ+kC2vh7+G+LkNm4=",
    "Dpsz5V3gaPJ36lA7rcRsHFcA3u9ZwBxPoYGfZfLalmU=",
    "aKAmxc0wy4g+x3zH5u7zxGRJMi3QcmtyRuDsZhEGhTo=",
];

#[derive(Debug, Clone)]
struct GenGateway {
    allowed: bool,
    subnets: Vec<usize>,
    removed: Vec<usize>,
    auto_discover: bool,
    priority: u32,
}

#[derive(Debug, Clone)]
struct GenSystem {
    tags: Vec<usize>,
    enabled: bool,
    gateway: Option<GenGateway>,
}

#[derive(Debug, Clone)]
struct GenPolicy {
    direct: bool,
    enabled: bool,
    senders: Vec<usize>,
    receivers: Vec<usize>,
    gateways: Vec<usize>,
    subnets: Vec<usize>,
    filter: Vec<usize>,
    acl: Vec<usize>,
}

fn indices(max: usize, len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..max, len)
}

fn gateway() -> impl Strategy<Value = GenGateway> {
    (
        prop::bool::weighted(0.8),
        indices(SUBNETS.len(), 0..4),
        indices(SUBNETS.len(), 0..2),
        any::<bool>(),
        0u32..3,
    )
        .prop_map(
            |(allowed, subnets, removed, auto_discover, priority)| GenGateway {
                allowed,
                subnets,
                removed,
                auto_discover,
                priority,
            },
        )
}

fn system() -> impl Strategy<Value = GenSystem> {
    (
        indices(TAGS.len(), 0..3),
        prop::bool::weighted(0.9),
        prop::option::weighted(0.5, gateway()),
    )
        .prop_map(|(tags, enabled, gateway)| GenSystem {
            tags,
            enabled,
            gateway,
        })
}

fn policy() -> impl Strategy<Value = GenPolicy> {
    (
        any::<bool>(),
        prop::bool::weighted(0.85),
        indices(TAGS.len(), 1..3),
        indices(TAGS.len(), 1..3),
        indices(KEYS.len(), 1..4),
        indices(SUBNETS.len(), 1..3),
        indices(FILTERS.len(), 0..3),
        indices(ACLS.len(), 0..3),
    )
        .prop_map(
            |(direct, enabled, senders, receivers, gateways, subnets, filter, acl)| GenPolicy {
                direct,
                enabled,
                senders,
                receivers,
                gateways,
                subnets,
                filter,
                acl,
            },
        )
}

fn list<T: AsRef<str>>(items: impl IntoIterator<Item = T>) -> String {
    let parts: Vec<String> = items
        .into_iter()
        .map(|s| format!("\"{}\"", s.as_ref()))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Whether `g` would offer `subnet` if allowed: validation accepts a switched-off gateway
/// (with a warning), and compilation must then route nothing through it.
fn offers(g: &GenGateway, subnet: usize) -> bool {
    let net: Ipv4Net = SUBNETS[subnet].parse().expect("pool subnet");
    !g.removed.contains(&subnet)
        && (g.subnets.contains(&subnet) || (g.auto_discover && net.prefix_len() > 0))
}

fn within(entry: &AddrEntry, net: &Ipv4Net) -> bool {
    match entry {
        AddrEntry::Net(inner) => net.contains(inner),
        AddrEntry::Range { first, last } => net.contains(first) && net.contains(last),
    }
}

/// Renders a definition, repairing what validation would refuse (systems without gateway
/// settings named as gateways, subnets no chosen gateway offers, filter entries outside the
/// subnets). `reverse` writes the systems and policies in the opposite order.
fn render(systems: &[GenSystem], policies: &[GenPolicy], reverse: bool) -> String {
    let mut blocks = Vec::new();
    for (i, s) in systems.iter().enumerate() {
        let tags: BTreeSet<&str> = s.tags.iter().map(|t| TAGS[*t]).collect();
        let mut b = format!(
            "[[system]]\nname = \"s{i}\"\npublic_key = \"{}\"\naddress = \"100.64.0.{}\"\ntags = {}\nenabled = {}\n",
            KEYS[i],
            i + 1,
            list(tags),
            s.enabled
        );
        if let Some(g) = &s.gateway {
            let subnets: BTreeSet<&str> = g.subnets.iter().map(|n| SUBNETS[*n]).collect();
            let removed: BTreeSet<&str> = g.removed.iter().map(|n| SUBNETS[*n]).collect();
            let _ = write!(
                b,
                "\n[system.gateway]\nallowed = {}\nsubnets = {}\nremoved = {}\nauto_discover = {}\npriority = {}\n",
                g.allowed,
                list(subnets),
                list(removed),
                g.auto_discover,
                g.priority
            );
        }
        blocks.push(b);
    }
    let mut policy_blocks = Vec::new();
    for (i, p) in policies.iter().enumerate() {
        let senders: BTreeSet<&str> = p.senders.iter().map(|t| TAGS[*t]).collect();
        let acl: Vec<&str> = p.acl.iter().map(|a| ACLS[*a]).collect();
        let acl = format!("[{}]", acl.join(", "));
        if p.direct {
            let receivers: BTreeSet<&str> = p.receivers.iter().map(|t| TAGS[*t]).collect();
            policy_blocks.push(format!(
                "[[direct_policy]]\nname = \"p{i}\"\nenabled = {}\nsenders = {}\nreceivers = {}\nacl = {acl}\n",
                p.enabled,
                list(senders),
                list(receivers)
            ));
            continue;
        }
        let gateways: BTreeSet<usize> = p
            .gateways
            .iter()
            .copied()
            .filter(|g| systems.get(*g).and_then(|s| s.gateway.as_ref()).is_some())
            .collect();
        let subnets: BTreeSet<usize> = p
            .subnets
            .iter()
            .copied()
            .filter(|n| {
                gateways
                    .iter()
                    .any(|g| systems[*g].gateway.as_ref().is_some_and(|g| offers(g, *n)))
            })
            .collect();
        if gateways.is_empty() || subnets.is_empty() {
            continue;
        }
        let nets: Vec<Ipv4Net> = subnets
            .iter()
            .map(|n| SUBNETS[*n].parse().expect("pool"))
            .collect();
        let filter: BTreeSet<&str> = p
            .filter
            .iter()
            .map(|f| FILTERS[*f])
            .filter(|f| {
                let entry = match f.split_once('-') {
                    Some((a, b)) => AddrEntry::Range {
                        first: a.parse().expect("pool"),
                        last: b.parse().expect("pool"),
                    },
                    None => AddrEntry::Net(if f.contains('/') {
                        f.parse().expect("pool")
                    } else {
                        Ipv4Net::from(f.parse::<std::net::Ipv4Addr>().expect("pool"))
                    }),
                };
                nets.iter().any(|n| within(&entry, n))
            })
            .collect();
        let filter = if filter.is_empty() {
            String::new()
        } else {
            format!("filter = {}\n", list(filter))
        };
        policy_blocks.push(format!(
            "[[gateway_policy]]\nname = \"p{i}\"\nenabled = {}\nsenders = {}\ngateways = {}\nsubnets = {}\n{filter}acl = {acl}\n",
            p.enabled,
            list(senders),
            list(gateways.iter().map(|g| format!("s{g}"))),
            list(subnets.iter().map(|n| SUBNETS[*n]))
        ));
    }
    blocks.extend(policy_blocks);
    if reverse {
        blocks.reverse();
    }
    blocks.join("\n")
}

/// Whether address entry `d` lies inside address entry `f`.
fn entry_inside(d: &AddrEntry, f: &AddrEntry) -> bool {
    let (a, b) = bounds(d);
    let (x, y) = bounds(f);
    x <= a && b <= y
}

fn bounds(e: &AddrEntry) -> (std::net::Ipv4Addr, std::net::Ipv4Addr) {
    match e {
        AddrEntry::Net(n) => (n.network(), n.broadcast()),
        AddrEntry::Range { first, last } => (*first, *last),
    }
}

/// A destination that `policy` grants through `gateway` only by its default route must be the
/// Internet: it may not touch what the default route leaves out. Returns the range it touches.
fn default_route_breach(
    net: &Network,
    policy: &enclave_policy::GatewayPolicy,
    gateway: &enclave_policy::System,
    d: &AddrEntry,
) -> Option<Ipv4Net> {
    let settings = gateway.gateway.as_ref()?;
    settings.source_of(Ipv4Net::default())?;
    if !policy.subnets.contains(&Ipv4Net::default()) {
        return None;
    }
    let explicit = policy
        .subnets
        .iter()
        .any(|s| s.prefix_len() > 0 && settings.source_of(*s).is_some() && within(d, s));
    if explicit || *d == AddrEntry::Net(Ipv4Net::from(gateway.address)) {
        return None;
    }
    let (a, b) = bounds(d);
    enclave_policy::default_route_excludes(net, gateway)
        .into_keys()
        .find(|hole| a <= hole.broadcast() && hole.network() <= b)
}

fn rule_matches_acl(rule: &AllowRule, acl: &[enclave_policy::AclEntry]) -> bool {
    acl.iter()
        .any(|e| e.protocol == rule.protocol && e.ports == rule.ports && e.label == rule.label)
}

fn host(addr: std::net::Ipv4Addr) -> Vec<AddrEntry> {
    vec![AddrEntry::Net(Ipv4Net::from(addr))]
}

/// Checks every invariant of one compiled view; returns a description of the first breach.
fn check_view(net: &Network, view: &View) -> Result<(), String> {
    let me = &net.systems[&view.system];
    for (peer_name, peer) in &view.peers {
        let other = &net.systems[peer_name];
        if !me.enabled || !other.enabled {
            return Err(format!("peer {peer_name} with a disabled system"));
        }
        for (outbound, grants) in [(true, &peer.outbound), (false, &peer.inbound)] {
            let (sender, receiver) = if outbound { (me, other) } else { (other, me) };
            for (policy_name, grant) in grants {
                match grant.kind {
                    GrantKind::Direct => {
                        let p = net
                            .direct_policies
                            .get(policy_name)
                            .ok_or("grant of a missing direct policy")?;
                        if !p.enabled
                            || sender.tags.is_disjoint(&p.senders)
                            || receiver.tags.is_disjoint(&p.receivers)
                        {
                            return Err(format!("direct grant {policy_name} not granted"));
                        }
                        for rule in &grant.rules {
                            if rule.sources != host(sender.address)
                                || rule.destinations != host(receiver.address)
                                || !rule_matches_acl(rule, &p.acl)
                            {
                                return Err(format!("direct rule beyond {policy_name}: {rule:?}"));
                            }
                        }
                    }
                    GrantKind::Gateway => {
                        let p = net
                            .gateway_policies
                            .get(policy_name)
                            .ok_or("grant of a missing gateway policy")?;
                        let gateway = receiver;
                        if !p.enabled
                            || sender.tags.is_disjoint(&p.senders)
                            || !p.gateways.contains(&gateway.name)
                            || !gateway.is_gateway()
                        {
                            return Err(format!("gateway grant {policy_name} not granted"));
                        }
                        let settings = gateway.gateway.as_ref().ok_or("no gateway settings")?;
                        for rule in &grant.rules {
                            if rule.sources != host(sender.address) {
                                return Err(format!("rule from a foreign source: {rule:?}"));
                            }
                            if rule.protocol == Protocol::Icmp
                                && rule.destinations == host(gateway.address)
                            {
                                continue;
                            }
                            if !rule_matches_acl(rule, &p.acl) {
                                return Err(format!("rule beyond the ACL of {policy_name}"));
                            }
                            for d in &rule.destinations {
                                let inside = p
                                    .subnets
                                    .iter()
                                    .any(|s| settings.source_of(*s).is_some() && within(d, s));
                                let in_overlay = match d {
                                    AddrEntry::Net(n) => {
                                        n.contains(&net.overlay) || net.overlay.contains(n)
                                    }
                                    AddrEntry::Range { first, last } => {
                                        net.overlay.contains(first) || net.overlay.contains(last)
                                    }
                                };
                                if !inside || in_overlay {
                                    return Err(format!(
                                        "destination {d:?} outside the subnets of {policy_name}"
                                    ));
                                }
                                if !p.filter.is_empty()
                                    && !p.filter.iter().any(|f| entry_inside(d, f))
                                {
                                    return Err(format!("destination {d:?} not in the filter"));
                                }
                                if let Some(hole) = default_route_breach(net, p, gateway, d) {
                                    return Err(format!(
                                        "default route of {policy_name} reaches {d:?} in {hole}"
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    for (subnet, route) in &view.routes {
        let granting: Vec<_> = net
            .gateway_policies
            .values()
            .filter(|p| p.enabled && !me.tags.is_disjoint(&p.senders) && p.subnets.contains(subnet))
            .collect();
        if granting.is_empty() || route.candidates.is_empty() {
            return Err(format!("route {subnet} that no policy grants"));
        }
        let mut last = 0;
        for c in &route.candidates {
            let g = &net.systems[&c.gateway];
            let offered = g
                .gateway
                .as_ref()
                .is_some_and(|s| s.source_of(*subnet).is_some());
            if !g.is_gateway()
                || !offered
                || g.name == me.name
                || !granting.iter().any(|p| p.gateways.contains(&g.name))
            {
                return Err(format!(
                    "route {subnet} through {} that does not offer it",
                    g.name
                ));
            }
            if c.priority < last {
                return Err(format!("route {subnet} candidates out of order"));
            }
            last = c.priority;
        }
    }
    if let Some(gw) = &view.gateway {
        if !me.is_gateway() {
            return Err("gateway rules on a system that is not a gateway".into());
        }
        for (policy_name, fwd) in &gw.forward {
            let p = &net.gateway_policies[policy_name];
            if !p.enabled || !p.gateways.contains(&me.name) || fwd.acl != p.acl {
                return Err(format!("forward rule beyond {policy_name}"));
            }
            for (sender, addr) in &fwd.senders {
                let s = &net.systems[sender];
                if !s.enabled || s.tags.is_disjoint(&p.senders) || s.address != *addr {
                    return Err(format!(
                        "forwarding for {sender} not granted by {policy_name}"
                    ));
                }
            }
            for d in &fwd.destinations {
                if !p.subnets.iter().any(|s| within(d, s)) {
                    return Err(format!("forward destination {d:?} outside {policy_name}"));
                }
                if let Some(hole) = default_route_breach(net, p, me, d) {
                    return Err(format!(
                        "forwarding by the default route of {policy_name} reaches {d:?} in {hole}"
                    ));
                }
            }
        }
        for snat in &gw.snat {
            if !gw.subnets.contains_key(&snat.destination) || gw.removed.contains(&snat.destination)
            {
                return Err(format!("SNAT into {} that is not served", snat.destination));
            }
        }
    }
    Ok(())
}

/// A random definition, before [`render`] repairs and writes it: its systems and policies.
fn definition() -> impl Strategy<Value = (Vec<GenSystem>, Vec<GenPolicy>)> {
    (
        proptest::collection::vec(system(), 2..=KEYS.len()),
        proptest::collection::vec(policy(), 0..6),
    )
}

/// Loads a rendered definition; a refusal fails the case (render repairs what validation
/// would refuse, so a refusal is a bug in one or the other).
fn load_generated(text: &str) -> Result<Network, TestCaseError> {
    enclave_policy::load("gen.toml", text)
        .map(|l| l.network)
        .map_err(|e| TestCaseError::fail(format!("repaired definition refused: {e:?}\n{text}")))
}

/// Compiles the view of a system the definition has; failing to is a failure of the case.
fn compiled(net: &Network, name: &str) -> Result<View, TestCaseError> {
    enclave_policy::compile(net, name)
        .map_err(|e| TestCaseError::fail(format!("no view of {name}: {e}")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn compiled_views_grant_nothing_beyond_the_policies(
        (systems, policies) in definition(),
    ) {
        let text = render(&systems, &policies, false);
        let net = load_generated(&text)?;
        let reversed = load_generated(&render(&systems, &policies, true))?;
        for name in net.systems.keys() {
            let view = compiled(&net, name)?;
            if let Err(breach) = check_view(&net, &view) {
                prop_assert!(false, "{breach}\nview of {name}:\n{view}\n{text}");
            }
            // Deterministic: the same input, and the same input in another order, give
            // byte-identical JSON.
            let json = serde_json::to_string(&view).unwrap_or_default();
            let again = enclave_policy::compile(&net, name).map(|v| serde_json::to_string(&v).unwrap_or_default());
            prop_assert_eq!(Some(&json), again.as_ref().ok());
            let other = enclave_policy::compile(&reversed, name).map(|v| serde_json::to_string(&v).unwrap_or_default());
            prop_assert_eq!(Some(&json), other.as_ref().ok());
        }
    }
}

const DESTINATIONS: [&str; 12] = [
    "10.0.0.5",
    "10.0.0.15",
    "10.0.1.3",
    "10.0.200.1",
    "192.168.1.7",
    "8.8.8.8",
    "100.64.0.2",
    "100.64.0.3",
    "169.254.169.254",
    "198.51.100.9",
    "127.0.0.1",
    "1.1.1.1",
];
const FLOWS: [(Protocol, Option<u16>); 5] = [
    (Protocol::Icmp, None),
    (Protocol::Tcp, Some(22)),
    (Protocol::Tcp, Some(1500)),
    (Protocol::Udp, Some(53)),
    (Protocol::Tcp, Some(80)),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever explain allows, the compiled views carry: an outbound rule on the sender
    /// towards the first gateway (or the receiver), and an inbound rule on that enforcer.
    #[test]
    fn explain_agrees_with_the_compiled_views(
        (systems, policies) in definition(),
    ) {
        let text = render(&systems, &policies, false);
        let net = load_generated(&text)?;
        let at = enclave_policy::Timestamp::UNIX_EPOCH;
        for sender in net.systems.values() {
            for dst in DESTINATIONS {
                let dst: std::net::Ipv4Addr = dst.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
                for (protocol, port) in FLOWS {
                    let query = Query {
                        from: sender.name.clone(),
                        to: dst,
                        protocol: Some(protocol),
                        port,
                        public_ip: None,
                        at,
                    };
                    let answer = enclave_policy::explain(&net, &query);
                    prop_assert!(answer.is_ok());
                    let answer = answer.unwrap_or_else(|_| unreachable!());
                    if answer.verdict == Verdict::Denied {
                        continue;
                    }
                    for finding in &answer.findings {
                        let FindingOutcome::Allowed { gateways, .. } = &finding.outcome else {
                            continue;
                        };
                        let enforcer = match gateways.first() {
                            Some(g) => g.clone(),
                            None => net
                                .systems
                                .values()
                                .find(|s| s.address == dst)
                                .map(|s| s.name.clone())
                                .unwrap_or_default(),
                        };
                        let mine = enclave_policy::compile(&net, &sender.name);
                        let theirs = enclave_policy::compile(&net, &enforcer);
                        prop_assert!(mine.is_ok() && theirs.is_ok());
                        let (mine, theirs) = (
                            mine.unwrap_or_else(|_| unreachable!()),
                            theirs.unwrap_or_else(|_| unreachable!()),
                        );
                        let out = mine
                            .peers
                            .get(&enforcer)
                            .and_then(|p| p.outbound.get(&finding.policy))
                            .is_some_and(|g| {
                                g.rules.iter().any(|r| admits(r, protocol, port, sender.address, dst))
                            });
                        let inb = theirs
                            .peers
                            .get(&sender.name)
                            .and_then(|p| p.inbound.get(&finding.policy))
                            .is_some_and(|g| {
                                g.rules.iter().any(|r| admits(r, protocol, port, sender.address, dst))
                            });
                        prop_assert!(
                            out && inb,
                            "explain allows {} -> {dst} {protocol:?} {port:?} by {:?} via {enforcer} \
                             but the views do not (outbound {out}, inbound {inb})\n{text}",
                            sender.name,
                            finding.policy
                        );
                    }
                }
            }
        }
    }
}

/// Addresses in ranges a default route may leave out: the ranges that are not the Internet,
/// the overlay, and the subnets of the pool (some gateway's own networks).
fn excluded_address() -> impl Strategy<Value = std::net::Ipv4Addr> {
    let mut ranges: Vec<Ipv4Net> = enclave_policy::NOT_THE_INTERNET
        .iter()
        .map(enclave_policy::SpecialRange::net)
        .collect();
    ranges.extend(
        SUBNETS
            .iter()
            .filter_map(|s| s.parse::<Ipv4Net>().ok())
            .filter(|n| n.prefix_len() > 0),
    );
    (0..ranges.len(), any::<u32>()).prop_map(move |(i, offset)| {
        let net = ranges[i];
        let size = 1u64 << (32 - u32::from(net.prefix_len()));
        let first = u64::from(u32::from(net.network()));
        std::net::Ipv4Addr::from(u32::try_from(first + u64::from(offset) % size).unwrap_or(0))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A default route means the Internet: no address it leaves out (a range that is not the
    /// Internet, the overlay, the gateway's other subnets) is allowed through a default-route
    /// grant, on the sender, on the gateway or in its forward rules, unless the same policy
    /// names a subnet that holds it (an explicit grant, with that policy's filter and ACL).
    #[test]
    fn default_routes_reach_only_the_internet(
        systems in proptest::collection::vec(system(), 1..KEYS.len()),
        policies in proptest::collection::vec(policy(), 0..6),
        filter in indices(FILTERS.len(), 0..3),
        addresses in proptest::collection::vec(excluded_address(), 16),
    ) {
        // Every case has a default route: a gateway that serves it beside a private and a
        // public subnet of its own, and a policy for every tag (with or without a filter).
        let (mut systems, mut policies) = (systems, policies);
        systems.push(GenSystem {
            tags: vec![],
            enabled: true,
            gateway: Some(GenGateway {
                allowed: true,
                subnets: vec![3, 4, 5],
                removed: vec![],
                auto_discover: false,
                priority: 0,
            }),
        });
        policies.push(GenPolicy {
            direct: false,
            enabled: true,
            senders: vec![0, 1, 2],
            receivers: vec![],
            gateways: vec![systems.len() - 1],
            subnets: vec![3],
            filter,
            acl: vec![0],
        });
        let text = render(&systems, &policies, false);
        let net = load_generated(&text)?;
        for me in net.systems.values() {
            let view = compiled(&net, &me.name)?;
            for (peer_name, peer) in &view.peers {
                let peer_system = &net.systems[peer_name];
                for (outbound, grants) in [(true, &peer.outbound), (false, &peer.inbound)] {
                    let (sender, gateway) = if outbound { (me, peer_system) } else { (peer_system, me) };
                    for (policy_name, grant) in grants.iter().filter(|(_, g)| g.default_route) {
                        let policy = &net.gateway_policies[policy_name];
                        for addr in &addresses {
                            let entry = AddrEntry::Net(Ipv4Net::from(*addr));
                            if default_route_breach(&net, policy, gateway, &entry).is_none() {
                                continue;
                            }
                            let allowed = grant.rules.iter().any(|r| {
                                r.destinations.iter().any(|d| d.contains(*addr))
                            });
                            prop_assert!(
                                !allowed,
                                "{} reaches {addr} through the default route of {policy_name} \
                                 via {}\n{text}",
                                sender.name,
                                gateway.name
                            );
                        }
                    }
                }
            }
            if let Some(gw) = &view.gateway {
                for (policy_name, fwd) in gw.forward.iter().filter(|(_, f)| f.default_route) {
                    let policy = &net.gateway_policies[policy_name];
                    for addr in &addresses {
                        let entry = AddrEntry::Net(Ipv4Net::from(*addr));
                        if default_route_breach(&net, policy, me, &entry).is_none() {
                            continue;
                        }
                        prop_assert!(
                            !fwd.destinations.iter().any(|d| d.contains(*addr)),
                            "{} forwards to {addr} by the default route of {policy_name}\n{text}",
                            me.name
                        );
                    }
                }
            }
        }
    }
}

/// One change to a network, as an edit through the control server makes it.
#[derive(Debug, Clone)]
enum Change {
    /// A system's tags, `enabled` and gateway settings replaced.
    Replace(usize, GenSystem),
    /// A system's endpoint set.
    Endpoint(usize),
    /// A system's address moved.
    Address(usize),
    /// A system removed.
    Remove(usize),
    /// A system added.
    Add(GenSystem),
    /// A system renamed.
    Rename(usize),
    /// A pre-shared key added between two systems.
    PresharedKey(usize, usize),
    /// A policy switched on or off.
    TogglePolicy(usize),
    /// A tag given a trust requirement.
    TagTrust(usize),
}

fn change() -> impl Strategy<Value = Change> {
    let i = 0..KEYS.len();
    prop_oneof![
        (i.clone(), system()).prop_map(|(i, s)| Change::Replace(i, s)),
        i.clone().prop_map(Change::Endpoint),
        i.clone().prop_map(Change::Address),
        i.clone().prop_map(Change::Remove),
        system().prop_map(Change::Add),
        i.clone().prop_map(Change::Rename),
        (i.clone(), i).prop_map(|(a, b)| Change::PresharedKey(a, b)),
        (0usize..6).prop_map(Change::TogglePolicy),
        (0..TAGS.len()).prop_map(Change::TagTrust),
    ]
}

/// The name of the `i`-th system of `net` (wrapping), if it has any.
fn nth(net: &Network, i: usize) -> Option<String> {
    let len = net.systems.len();
    (len > 0).then(|| net.systems.keys().nth(i % len).cloned())?
}

fn settings_of(g: &GenGateway) -> enclave_policy::GatewaySettings {
    let nets = |list: &[usize]| {
        list.iter()
            .map(|n| SUBNETS[*n].parse().expect("pool"))
            .collect()
    };
    enclave_policy::GatewaySettings {
        allowed: g.allowed,
        subnets: nets(&g.subnets),
        removed: nets(&g.removed),
        auto_discover: g.auto_discover,
        priority: g.priority,
    }
}

fn apply(net: &mut Network, change: &Change) {
    match change {
        Change::Replace(i, with) => {
            if let Some(system) = nth(net, *i).and_then(|n| net.systems.get_mut(&n)) {
                system.tags = with.tags.iter().map(|t| TAGS[*t].to_owned()).collect();
                system.enabled = with.enabled;
                system.gateway = with.gateway.as_ref().map(settings_of);
            }
        }
        Change::Endpoint(i) => {
            if let Some(system) = nth(net, *i).and_then(|n| net.systems.get_mut(&n)) {
                system.endpoint = Some("192.0.2.7:51820".parse().expect("literal"));
            }
        }
        Change::Address(i) => {
            if let Some(system) = nth(net, *i).and_then(|n| net.systems.get_mut(&n)) {
                system.address = std::net::Ipv4Addr::new(100, 64, 1, 200);
            }
        }
        Change::Remove(i) => {
            if let Some(name) = nth(net, *i) {
                net.systems.remove(&name);
            }
        }
        Change::Add(with) => {
            let system = enclave_policy::System {
                name: "added".into(),
                public_key: "Ag3QnIZ2Y6vxvJZh5n8fWl6TqkL1C6dFQn0xV9m7kEw=".into(),
                address: std::net::Ipv4Addr::new(100, 64, 2, 1),
                tags: with.tags.iter().map(|t| TAGS[*t].to_owned()).collect(),
                endpoint: None,
                enabled: with.enabled,
                gateway: with.gateway.as_ref().map(settings_of),
            };
            net.systems.insert(system.name.clone(), system);
        }
        Change::Rename(i) => {
            if let Some(mut system) = nth(net, *i).and_then(|n| net.systems.remove(&n)) {
                system.name = format!("{}-renamed", system.name);
                net.systems.insert(system.name.clone(), system);
            }
        }
        Change::PresharedKey(a, b) => {
            if let (Some(a), Some(b)) = (nth(net, *a), nth(net, *b)) {
                net.preshared_keys.push(enclave_policy::PresharedKey {
                    systems: [a, b],
                    file: "/etc/enclave/psk".into(),
                });
            }
        }
        Change::TogglePolicy(i) => {
            let name = format!("p{i}");
            if let Some(p) = net.gateway_policies.get_mut(&name) {
                p.enabled = !p.enabled;
            } else if let Some(p) = net.direct_policies.get_mut(&name) {
                p.enabled = !p.enabled;
            }
        }
        Change::TagTrust(t) => {
            let tag = TAGS[*t];
            net.tags.insert(
                tag.to_owned(),
                enclave_policy::Tag {
                    name: tag.to_owned(),
                    trust: vec!["somewhere".into()],
                },
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Compiling only the views `affected` names gives what compiling every view gives: every
    /// view that differs after a few changes is in the set.
    #[test]
    fn incremental_views_match_compiling_all(
        (systems, policies) in definition(),
        changes in proptest::collection::vec(change(), 1..4),
    ) {
        let before = load_generated(&render(&systems, &policies, false))?;
        let mut after = before.clone();
        for change in &changes {
            apply(&mut after, change);
        }
        let affected = enclave_policy::affected(&before, &after);
        // The compiler of the network after, its index updated from the one before.
        let shared = enclave_policy::SharedCompiler::new(std::sync::Arc::new(before.clone()))
            .next(std::sync::Arc::new(after.clone()));
        for name in after.systems.keys() {
            let new = compiled(&after, name)?;
            let incremental = shared.compile(name).ok();
            prop_assert_eq!(incremental.as_ref(), Some(&new));
            let old = enclave_policy::compile(&before, name).ok();
            if old.as_ref() != Some(&new) {
                prop_assert!(
                    affected.contains(name),
                    "the view of {name} changed but {affected:?} leaves it out after {changes:?}"
                );
            }
        }
        // Nothing changed, nothing affected.
        prop_assert_eq!(
            enclave_policy::affected(&before, &before.clone()),
            enclave_policy::Affected::Systems(BTreeSet::new())
        );
    }
}
