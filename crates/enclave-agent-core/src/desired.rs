//! What the host must hold at one moment (sans-IO): the compiled policy view combined with what
//! the agent has observed — which gateway each subnet uses now, which grants pass their trust
//! requirements, which subnets this gateway can serve and out of which interface.
//!
//! The shell recomputes it after every change and hands the parts to the data plane, the route
//! manager and the NAT manager, which each apply only the difference.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use enclave_filter::{AddrEntry, AllowRule, PortRange, Protocol};
use enclave_policy::{Direction, Evaluation, Exclusion, View};
use ipnet::Ipv4Net;

use crate::control::CONTROL_PORT;

/// The label of the filter rules that carry the control protocol.
pub const CONTROL_LABEL: &str = "enclave control";

/// One peer as the data plane must configure it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPeer {
    /// Its public key, base64.
    pub public_key: String,
    /// Its underlay endpoint, when known from the definition.
    pub endpoint: Option<SocketAddr>,
    /// Its allowed IPs: its virtual address, plus the subnets it is the active gateway for.
    pub allowed_ips: BTreeSet<Ipv4Net>,
    /// Persistent keepalive in seconds.
    pub keepalive: Option<u16>,
    /// The file of the pre-shared key of this pair of systems, when the definition names one.
    pub preshared_key_file: Option<std::path::PathBuf>,
    /// Flows the peer may open towards (or through) us; grants whose requirements fail are
    /// left out.
    pub inbound: Vec<AllowRule>,
    /// Flows we may open towards (or through) the peer.
    pub outbound: Vec<AllowRule>,
}

/// Where a gateway sends a served subnet's traffic: the egress interface and the address SNAT
/// translates to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    /// The interface.
    pub interface: String,
    /// The gateway's own address on it.
    pub address: Ipv4Addr,
}

/// The whole desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The peers, by name.
    pub peers: BTreeMap<String, DesiredPeer>,
    /// Routes through the tunnel (not the default route).
    pub routes: BTreeSet<Ipv4Net>,
    /// Whether a default route through the tunnel is wanted.
    pub default_route: bool,
    /// On a gateway: the NAT and forwarding policy.
    pub nat: Option<enclave_nat::NatPolicy>,
}

/// Combines the view with the observed state.
///
/// - `active`: the gateway each routed subnet uses now (from the failover selector);
/// - `evaluation`: the trust evaluation of the view's grants now;
/// - `served`: on a gateway, the subnets it serves now and their egress.
pub fn desired(
    view: &View,
    interface: &str,
    active: &BTreeMap<Ipv4Net, String>,
    evaluation: &Evaluation,
    served: &BTreeMap<Ipv4Net, Egress>,
) -> Desired {
    let mut peers = BTreeMap::new();
    if view.enabled {
        for (name, peer) in &view.peers {
            let mut allowed_ips = peer.allowed_ips.clone();
            allowed_ips.extend(
                active
                    .iter()
                    .filter(|(_, gw)| *gw == name)
                    .map(|(subnet, _)| *subnet),
            );
            let rules = |direction: Direction| {
                let grants = match direction {
                    Direction::Inbound => &peer.inbound,
                    Direction::Outbound => &peer.outbound,
                };
                let mut rules: Vec<AllowRule> = grants
                    .iter()
                    .filter(|(policy, _)| evaluation.is_active(name, direction, policy))
                    .flat_map(|(_, grant)| grant.rules.iter().cloned())
                    .collect();
                let (from, to) = match direction {
                    Direction::Inbound => (peer.address, view.address),
                    Direction::Outbound => (view.address, peer.address),
                };
                rules.push(control_rule(from, to));
                // Kept for as long as the peers are in force, a thousand of them on a gateway:
                // without the room the collection left.
                rules.shrink_to_fit();
                rules
            };
            peers.insert(
                name.clone(),
                DesiredPeer {
                    public_key: peer.public_key.clone(),
                    endpoint: peer.endpoint,
                    allowed_ips,
                    keepalive: peer.keepalive,
                    preshared_key_file: peer.preshared_key_file.clone(),
                    inbound: rules(Direction::Inbound),
                    outbound: rules(Direction::Outbound),
                },
            );
        }
    }
    let routed: BTreeSet<Ipv4Net> = active.keys().copied().collect();
    let default_route = wants_default_route(view);
    let routes = routed
        .into_iter()
        .filter(|net| net.prefix_len() != 0)
        .collect();
    let nat = view
        .gateway
        .as_ref()
        .filter(|_| view.enabled)
        .map(|gateway| nat_policy(view, gateway, interface, evaluation, served));
    Desired {
        peers,
        routes,
        default_route,
        nat,
    }
}

/// Whether the host wants a default route through the tunnel: whenever the view grants one,
/// whether or not a gateway for it is active now, and whether or not the grant passes its trust
/// requirements now. It fails closed:
///
/// - with no active gateway (at start, before the first acknowledgement, or in a failover gap
///   with no gateway left), the route through the tunnel leads to no peer and the route
///   manager's kill switch stays in place: the traffic is dropped, never sent in clear;
/// - with the grant suspended (outside its active hours, from an address its trust
///   requirements refuse), the gateways acknowledge no default route and the same holds: the
///   sender gets no Internet rather than the Internet in clear, from exactly the places the
///   administrator did not trust. Only a view that no longer grants the default route (the
///   policy edited or removed, the system disabled) lifts it, as a clean stop does.
pub fn wants_default_route(view: &View) -> bool {
    view.enabled && view.routes.keys().any(|net| net.prefix_len() == 0)
}

/// The view a gateway applies: `compiled` with the host's own interface addresses
/// (`addresses`: address → interface, every IPv4 address of every interface, the egress and
/// SNAT ones included) left out of the default routes it serves, each as a /32. Connected
/// subnets stay: a default route reaches the Internet hosts beside the gateway, not the gateway.
///
/// Always built from the view as compiled, never from a previous result: an address that
/// disappears from the host stops being excluded, and a reloaded definition that did not change
/// compares equal to the one in force. When the addresses change nothing (a sender, a gateway
/// that serves no default route, addresses already left out) it is `compiled` itself, shared:
/// the agent then holds one copy of its view, not two.
pub fn with_own_addresses(
    compiled: &Arc<View>,
    addresses: &BTreeMap<Ipv4Addr, String>,
) -> Arc<View> {
    let own = || {
        addresses.iter().map(|(address, interface)| {
            (
                Ipv4Net::from(*address),
                Exclusion::GatewayAddress {
                    interface: interface.clone(),
                },
            )
        })
    };
    let mut view = Arc::clone(compiled);
    if compiled.excludes_more(own().map(|(net, _)| net)) {
        Arc::make_mut(&mut view).exclude_from_default_route(own());
    }
    view
}

/// The control protocol may always flow between peers that policy connects: probes one way,
/// acknowledgements as their replies.
fn control_rule(from: Ipv4Addr, to: Ipv4Addr) -> AllowRule {
    AllowRule {
        protocol: Protocol::Udp,
        ports: Some(PortRange::single(CONTROL_PORT)),
        sources: vec![AddrEntry::Net(Ipv4Net::from(from))],
        destinations: vec![AddrEntry::Net(Ipv4Net::from(to))],
        label: Some(CONTROL_LABEL.to_owned()),
    }
}

fn nat_policy(
    view: &View,
    gateway: &enclave_policy::GatewayView,
    interface: &str,
    evaluation: &Evaluation,
    served: &BTreeMap<Ipv4Net, Egress>,
) -> enclave_nat::NatPolicy {
    use enclave_nat::{AddressEntry, AddressSet, ForwardGrant, SnatRule};

    let mut snat = BTreeSet::new();
    for rule in &gateway.snat {
        if let Some(egress) = served.get(&rule.destination) {
            snat.insert(SnatRule {
                egress_interface: egress.interface.clone(),
                to: egress.address,
                source: rule.source,
            });
        }
    }
    let mut grants = Vec::new();
    for (policy, forward) in &gateway.forward {
        let mut sources = AddressSet::new();
        for (sender, addr) in &forward.senders {
            if evaluation.is_active(sender, Direction::Inbound, policy) {
                sources.insert(AddressEntry::Net(Ipv4Net::from(*addr)));
            }
        }
        let mut destinations = AddressSet::new();
        for entry in &forward.destinations {
            let inside_served = served.keys().any(|net| match entry {
                AddrEntry::Net(n) => net.contains(n),
                AddrEntry::Range { first, last } => net.contains(first) && net.contains(last),
            });
            if inside_served {
                destinations.insert(match *entry {
                    AddrEntry::Net(n) => AddressEntry::Net(n),
                    AddrEntry::Range { first, last } => AddressEntry::Range(first, last),
                });
            }
        }
        if sources.is_empty() || destinations.is_empty() {
            continue;
        }
        for acl in &forward.acl {
            let (protocol, ports) = match acl.protocol {
                Protocol::Any => (None, None),
                Protocol::Icmp => (Some(enclave_nat::Protocol::Icmp), None),
                Protocol::Tcp => (Some(enclave_nat::Protocol::Tcp), acl.ports),
                Protocol::Udp => (Some(enclave_nat::Protocol::Udp), acl.ports),
            };
            grants.push(ForwardGrant {
                sources: sources.clone(),
                destinations: destinations.clone(),
                protocol,
                ports: ports.map(|p| enclave_nat::PortRange {
                    first: p.first,
                    last: p.last,
                }),
                label: match &acl.label {
                    Some(label) => format!("{policy}: {label}"),
                    None => policy.clone(),
                },
            });
        }
    }
    enclave_nat::NatPolicy {
        tunnel_interface: interface.to_owned(),
        overlay: view.overlay,
        snat: snat.into_iter().collect(),
        grants,
        host: None,
    }
}

/// The subnets a gateway acknowledges to `sender`: those it serves now that a grant lets the
/// sender reach through it *and that passes its trust requirements now*. A suspended sender
/// gets none, so it does not take the gateway as active for subnets it could not use.
pub fn advertised(
    view: &View,
    evaluation: &Evaluation,
    served: &BTreeSet<Ipv4Net>,
    sender: &str,
) -> Vec<Ipv4Net> {
    let Some(gateway) = view.gateway.as_ref().filter(|_| view.enabled) else {
        return Vec::new();
    };
    let granted: BTreeSet<Ipv4Net> = gateway
        .forward
        .iter()
        .filter(|(policy, f)| {
            f.senders.contains_key(sender)
                && evaluation.is_active(sender, Direction::Inbound, policy)
        })
        .flat_map(|(_, f)| {
            served.iter().copied().filter(|net| {
                f.destinations.iter().any(|d| match d {
                    AddrEntry::Net(n) => net.contains(n) || n.contains(net),
                    AddrEntry::Range { first, .. } => net.contains(first),
                })
            })
        })
        .collect();
    granted.into_iter().collect()
}

/// The peers' filter rules as the NAT manager's host filter, for an external data plane that
/// does not filter by itself: what peers may open towards this host, and what it may open
/// towards them.
pub fn host_filter(peers: &BTreeMap<String, DesiredPeer>) -> enclave_nat::HostFilter {
    let grants = |rules: &[AllowRule], peer: &str| -> Vec<enclave_nat::ForwardGrant> {
        rules.iter().map(|rule| grant_of(rule, peer)).collect()
    };
    let mut filter = enclave_nat::HostFilter::default();
    for (name, peer) in peers {
        filter.inbound.extend(grants(&peer.inbound, name));
        filter.outbound.extend(grants(&peer.outbound, name));
    }
    filter
}

fn grant_of(rule: &AllowRule, peer: &str) -> enclave_nat::ForwardGrant {
    use enclave_nat::{AddressEntry, AddressSet};
    let set = |entries: &[AddrEntry]| {
        let mut set = AddressSet::new();
        for entry in entries {
            set.insert(match *entry {
                AddrEntry::Net(n) => AddressEntry::Net(n),
                AddrEntry::Range { first, last } => AddressEntry::Range(first, last),
            });
        }
        set
    };
    let protocol = match rule.protocol {
        Protocol::Any => None,
        Protocol::Icmp => Some(enclave_nat::Protocol::Icmp),
        Protocol::Tcp => Some(enclave_nat::Protocol::Tcp),
        Protocol::Udp => Some(enclave_nat::Protocol::Udp),
    };
    enclave_nat::ForwardGrant {
        sources: set(&rule.sources),
        destinations: set(&rule.destinations),
        protocol,
        ports: rule.ports.map(|p| enclave_nat::PortRange {
            first: p.first,
            last: p.last,
        }),
        label: match &rule.label {
            Some(label) => format!("{peer}: {label}"),
            None => peer.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use enclave_policy::{compile, evaluate, load, Facts, Timestamp};

    const EXAMPLE: &str = include_str!("../../../docs/examples/network.toml");
    const LAN: &str = "192.168.77.0/24";

    fn view(system: &str) -> View {
        let loaded = load("network.toml", EXAMPLE).expect("the example is valid");
        compile(&loaded.network, system).unwrap()
    }

    /// The laptop at 198.51.100.50 and the contractor at `contractor_ip`.
    fn facts(contractor_ip: &str) -> Facts {
        let mut facts = Facts::default();
        facts
            .public_ips
            .insert("laptop".to_owned(), "198.51.100.50".parse().unwrap());
        facts
            .public_ips
            .insert("contractor".to_owned(), contractor_ip.parse().unwrap());
        facts
    }

    /// A Wednesday at 10:00 in Menlo Park, inside the policy's active hours.
    fn office_hours() -> Timestamp {
        "2026-11-25T18:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_subnet_is_allowed_only_on_its_active_gateway() {
        let view = view("laptop");
        let eval = evaluate(&view, &Facts::default(), office_hours());
        let lan: Ipv4Net = LAN.parse().unwrap();
        let active = BTreeMap::from([(lan, "menlo-gw-2".to_owned())]);
        let d = desired(&view, "enclave0", &active, &eval, &BTreeMap::new());
        assert!(d.peers["menlo-gw-2"].allowed_ips.contains(&lan));
        assert!(!d.peers["menlo-gw-1"].allowed_ips.contains(&lan));
        assert_eq!(d.routes, BTreeSet::from([lan]));
        assert!(d.nat.is_none(), "a sender has no NAT");
        // The view grants the laptop a default route (through egress-gw): wanted although no
        // gateway for it is active, so the kill switch stays; no peer carries it.
        assert!(d.default_route);
        let internet: Ipv4Net = "0.0.0.0/0".parse().unwrap();
        assert!(d.peers.values().all(|p| !p.allowed_ips.contains(&internet)));

        let none = desired(&view, "enclave0", &BTreeMap::new(), &eval, &BTreeMap::new());
        assert!(none.routes.is_empty(), "no route without an active gateway");
        assert!(none.peers.values().all(|p| !p.allowed_ips.contains(&lan)));
    }

    #[test]
    fn the_default_route_is_wanted_while_the_view_grants_it() {
        let internet: Ipv4Net = "0.0.0.0/0".parse().unwrap();
        let view = view("laptop");
        let eval = evaluate(&view, &Facts::default(), office_hours());
        let active = BTreeMap::from([(internet, "egress-gw".to_owned())]);
        let d = desired(&view, "enclave0", &active, &eval, &BTreeMap::new());
        assert!(d.default_route);
        assert!(d.routes.is_empty());
        assert!(d.peers["egress-gw"].allowed_ips.contains(&internet));

        // At start and in a failover gap (no gateway active): still wanted, carried by no peer.
        let gap = desired(&view, "enclave0", &BTreeMap::new(), &eval, &BTreeMap::new());
        assert!(gap.default_route, "the kill switch was lifted in a gap");
        assert!(gap
            .peers
            .values()
            .all(|p| !p.allowed_ips.contains(&internet)));

        // A suspended grant (outside the policy's active hours) keeps it too: fails closed.
        let hours = EXAMPLE.replace(
            "gateways = [\"egress-gw\"]\n",
            "gateways = [\"egress-gw\"]\nactive_hours = { days = [\"mon\"], hours = [\"07:00-08:00\"], zone = \"UTC\" }\n",
        );
        assert_ne!(hours, EXAMPLE);
        let loaded = load("network.toml", &hours).expect("the edited example is valid");
        let view = compile(&loaded.network, "laptop").unwrap();
        let night = evaluate(&view, &Facts::default(), office_hours());
        assert!(
            !night.is_active("egress-gw", Direction::Outbound, "users to the Internet"),
            "the grant should be suspended at this hour"
        );
        let d = desired(
            &view,
            "enclave0",
            &BTreeMap::new(),
            &night,
            &BTreeMap::new(),
        );
        assert!(d.default_route, "a suspended grant lifted the kill switch");

        // A view without the grant (the policy removed) or a disabled system: not wanted.
        let mut without = view.clone();
        without.routes.remove(&internet);
        assert!(
            !desired(
                &without,
                "enclave0",
                &BTreeMap::new(),
                &night,
                &BTreeMap::new()
            )
            .default_route
        );
        let mut disabled = view;
        disabled.enabled = false;
        assert!(
            !desired(
                &disabled,
                "enclave0",
                &BTreeMap::new(),
                &night,
                &BTreeMap::new()
            )
            .default_route
        );
    }

    #[test]
    fn a_gateways_own_addresses_leave_its_default_route_and_come_back() {
        let compiled = Arc::new(view("egress-gw"));
        let own: Ipv4Addr = "203.0.113.4".parse().unwrap();
        let beside: Ipv4Addr = "203.0.113.9".parse().unwrap();
        let granted = |view: &View, addr: Ipv4Addr| {
            let rules = &view.peers["laptop"].inbound["users to the Internet"].rules;
            let forward = &view.gateway.as_ref().unwrap().forward["users to the Internet"];
            let by_rule = rules
                .iter()
                .any(|r| r.destinations.iter().any(|d| d.contains(addr)));
            let by_forward = forward.destinations.iter().any(|d| d.contains(addr));
            assert_eq!(
                by_rule, by_forward,
                "the filter and the forward rule disagree on {addr}"
            );
            by_rule
        };
        assert!(
            granted(&compiled, own),
            "as compiled the gateway's address is granted"
        );

        let addresses = BTreeMap::from([(own, "eth0".to_owned())]);
        let view = with_own_addresses(&compiled, &addresses);
        assert!(
            !granted(&view, own),
            "the gateway's own address is still granted"
        );
        assert!(
            granted(&view, beside),
            "its connected neighbours must stay granted"
        );
        assert_eq!(
            view.gateway.as_ref().unwrap().default_route_excludes[&Ipv4Net::from(own)],
            Exclusion::GatewayAddress {
                interface: "eth0".into()
            }
        );
        // The same definition reloaded and the same addresses: the same view, nothing to apply.
        assert_eq!(with_own_addresses(&compiled, &addresses), view);
        // The address gone from the host: granted again (the compiled view itself, shared).
        let gone = with_own_addresses(&compiled, &BTreeMap::new());
        assert!(
            Arc::ptr_eq(&gone, &compiled),
            "an unchanged view was copied"
        );
        // On a sender it changes nothing: the compiled view, shared.
        let laptop = Arc::new(self::view("laptop"));
        let sender = with_own_addresses(&laptop, &addresses);
        assert!(Arc::ptr_eq(&sender, &laptop), "a sender's view was copied");
    }

    #[test]
    fn the_gateway_forwards_only_granted_senders_that_pass_their_trust_requirements() {
        let view = view("menlo-gw-1");
        let lan: Ipv4Net = LAN.parse().unwrap();
        let served = BTreeMap::from([(
            lan,
            Egress {
                interface: "lan0".into(),
                address: "192.168.77.1".parse().unwrap(),
            },
        )]);
        let during = evaluate(&view, &facts("198.51.100.7"), office_hours());
        let d = desired(&view, "enclave0", &BTreeMap::new(), &during, &served);
        let nat = d.nat.expect("a gateway has a NAT policy");
        assert_eq!(nat.snat.len(), 1);
        assert_eq!(nat.snat[0].egress_interface, "lan0");
        assert_eq!(nat.snat[0].to, "192.168.77.1".parse::<Ipv4Addr>().unwrap());
        let sources: BTreeSet<String> = nat
            .grants
            .iter()
            .flat_map(|g| g.sources.entries().map(|e| format!("{e:?}")))
            .collect();
        assert!(
            sources.iter().any(|s| s.contains("100.64.0.11")),
            "{sources:?}"
        );
        assert!(
            sources.iter().any(|s| s.contains("100.64.0.12")),
            "{sources:?}"
        );
        // The users' policy gives icmp, SMB and RDP; the contractors' gives SMB to the file server.
        let labels: Vec<&str> = nat.grants.iter().map(|g| g.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "contractors to the file server: SMB",
                "users to Menlo Park Office",
                "users to Menlo Park Office: SMB",
                "users to Menlo Park Office: RDP",
            ],
        );

        // The contractor from elsewhere fails its tag's trust requirement; at night the users'
        // policy (office hours) passes nobody, while the contractors' (no hours) still does.
        let elsewhere = evaluate(&view, &facts("203.0.113.99"), office_hours());
        let d = desired(&view, "enclave0", &BTreeMap::new(), &elsewhere, &served);
        let nat = d.nat.unwrap();
        assert!(nat.grants.iter().all(|g| g
            .sources
            .entries()
            .all(|e| !format!("{e:?}").contains("100.64.0.12"))));
        let night = evaluate(
            &view,
            &facts("198.51.100.7"),
            "2026-11-26T08:00:00Z".parse().unwrap(),
        );
        let d = desired(&view, "enclave0", &BTreeMap::new(), &night, &served);
        let nat = d.nat.unwrap();
        let labels: Vec<&str> = nat.grants.iter().map(|g| g.label.as_str()).collect();
        assert_eq!(labels, ["contractors to the file server: SMB"]);
        assert!(d.peers["laptop"]
            .inbound
            .iter()
            .all(|r| r.label.as_deref() == Some(CONTROL_LABEL)));
    }

    #[test]
    fn acknowledgements_leave_out_subnets_whose_grant_is_suspended() {
        let view = view("menlo-gw-1");
        let lan: Ipv4Net = LAN.parse().unwrap();
        let served = BTreeSet::from([lan]);
        // The contractor passes its public-IP requirement from 198.51.100.0/24 only.
        let trusted = evaluate(&view, &facts("198.51.100.7"), office_hours());
        assert_eq!(advertised(&view, &trusted, &served, "contractor"), [lan]);
        assert_eq!(advertised(&view, &trusted, &served, "laptop"), [lan]);
        let elsewhere = evaluate(&view, &facts("203.0.113.99"), office_hours());
        assert!(
            advertised(&view, &elsewhere, &served, "contractor").is_empty(),
            "a suspended sender was told the gateway serves it"
        );
        assert_eq!(advertised(&view, &elsewhere, &served, "laptop"), [lan]);
        // Unknown public address: suspended too.
        let unknown = evaluate(&view, &Facts::default(), office_hours());
        assert!(advertised(&view, &unknown, &served, "contractor").is_empty());
        // At night only the contractors' policy (no hours) still holds.
        let night = evaluate(
            &view,
            &facts("198.51.100.7"),
            "2026-11-26T08:00:00Z".parse().unwrap(),
        );
        assert!(advertised(&view, &night, &served, "laptop").is_empty());
        assert_eq!(advertised(&view, &night, &served, "contractor"), [lan]);
        // Nothing that is not served now.
        assert!(advertised(&view, &trusted, &BTreeSet::new(), "laptop").is_empty());
    }
}
