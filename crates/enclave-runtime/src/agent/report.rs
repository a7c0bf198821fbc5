//! Builds the [`Status`] that `enclave-agent status` shows from the view and the counters.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use enclave_filter::{AddrEntry, AllowRule, Protocol};
use enclave_policy::{Direction, Evaluation, Exclusion, GrantOutcome, View};
use ipnet::Ipv4Net;

use crate::desired::CONTROL_LABEL;
use crate::failover::{Reason, Selector};
use crate::status::{GatewayFor, PeerStatus, RouteStatus, Status};

/// A peer is `Up` while its last handshake is younger than this (REJECT_AFTER_TIME, 180 s).
const UP_WITHIN: Duration = Duration::from_secs(180);

/// What the data plane reports of one peer.
#[derive(Debug, Clone, Default)]
pub struct PeerCounters {
    /// The endpoint it is reached at now.
    pub endpoint: Option<String>,
    /// The endpoint that completed a handshake (ours only), see [`super::trust`].
    pub proven_endpoint: Option<std::net::SocketAddr>,
    /// The last handshake.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// When bytes from it last arrived (seen by the agent).
    pub last_rx: Option<Instant>,
    /// Drops on its account, by reason.
    pub drops: BTreeMap<String, u64>,
}

/// Everything status is built from.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// The view in force.
    pub view: &'a View,
    /// The interface.
    pub interface: &'a str,
    /// Counters by peer name.
    pub counters: &'a BTreeMap<String, PeerCounters>,
    /// The gateway selector (senders).
    pub selector: &'a Selector,
    /// The trust evaluation in force.
    pub evaluation: &'a Evaluation,
    /// Subnets this system serves as a gateway now.
    pub served: Vec<Ipv4Net>,
    /// Warnings to show.
    pub warnings: Vec<String>,
    /// How many definitions were put in force.
    pub definition_generation: u64,
    /// The time now.
    pub now: Instant,
    /// The wall-clock time now.
    pub wall: SystemTime,
}

/// Builds the status.
pub fn build(inputs: &Inputs<'_>) -> Status {
    let view = inputs.view;
    let routes = inputs.selector.subnets();
    let gateways = inputs.selector.gateways();
    let mut peers = Vec::new();
    for (name, peer) in &view.peers {
        let counters = inputs.counters.get(name).cloned().unwrap_or_default();
        let up = counters
            .last_handshake
            .and_then(|t| inputs.wall.duration_since(t).ok())
            .is_some_and(|age| age < UP_WITHIN);
        let mut acls: Vec<String> = Vec::new();
        for (grants, from_peer, direction) in [
            (&peer.inbound, true, Direction::Inbound),
            (&peer.outbound, false, Direction::Outbound),
        ] {
            for (policy, grant) in grants {
                let suspended = match inputs.evaluation.outcome(name, direction, policy) {
                    Some(GrantOutcome::Suspended { reason }) => Some(reason.to_string()),
                    _ => None,
                };
                // A default route's grant means the Internet: its destinations are 0.0.0.0/0
                // minus the gateway's exclusions, written short. On a sender the gateway is the
                // peer (its exclusions as the definition gives them); on a gateway it is us
                // (with our own interface addresses added).
                let internet = grant.default_route.then_some(match &view.gateway {
                    Some(gateway) if from_peer => Internet {
                        excludes: &gateway.default_route_excludes,
                        gateway: "this gateway",
                    },
                    _ => Internet {
                        excludes: &peer.default_route_excludes,
                        gateway: name.as_str(),
                    },
                });
                for rule in grant
                    .rules
                    .iter()
                    .filter(|r| r.label.as_deref() != Some(CONTROL_LABEL))
                {
                    let text = describe(
                        rule,
                        from_peer,
                        view.address,
                        peer.address,
                        internet.as_ref(),
                    );
                    acls.push(match &suspended {
                        Some(reason) => format!("{text} (suspended: {reason})"),
                        None => text,
                    });
                }
            }
        }
        acls.dedup();
        peers.push(PeerStatus {
            name: name.clone(),
            state: if up { "Up" } else { "Down" }.to_owned(),
            public_key: peer.public_key.clone(),
            endpoint: counters.endpoint.clone(),
            last_activity_secs: counters
                .last_rx
                .map(|t| inputs.now.saturating_duration_since(t).as_secs_f64()),
            rx_bytes: counters.rx_bytes,
            tx_bytes: counters.tx_bytes,
            rtt_ms: gateways
                .get(name)
                .and_then(|g| g.rtt)
                .map(|d| d.as_secs_f64() * 1000.0),
            virtual_network: view.overlay.to_string(),
            virtual_address: peer.address.to_string(),
            gateway_for: peer
                .gateway_for
                .iter()
                .map(|subnet| GatewayFor {
                    subnet: *subnet,
                    active: routes
                        .get(subnet)
                        .and_then(|r| r.active.as_deref())
                        .is_some_and(|a| a == name),
                })
                .collect(),
            acls,
            drops: counters.drops.clone(),
            default_route_excludes: excluded(&peer.default_route_excludes),
        });
    }
    let routes = routes
        .into_iter()
        .map(|(subnet, state)| RouteStatus {
            subnet,
            gateway: state.active.clone(),
            reason: match &state.reason {
                Reason::NoGateway if subnet.prefix_len() == 0 => format!(
                    "no gateway up that advertises it (candidates: {}); the kill switch holds \
                     its traffic back, none goes out in clear",
                    state.candidates.join(", ")
                ),
                Reason::NoGateway => format!(
                    "no gateway up that advertises it (candidates: {})",
                    state.candidates.join(", ")
                ),
                Reason::FirstConnected => "first gateway connected".to_owned(),
                Reason::FailedOver { from, at } => match at {
                    Some(at) => format!(
                        "failed over from {from} {:.1} s ago",
                        inputs.now.saturating_duration_since(*at).as_secs_f64()
                    ),
                    None => format!("failed over from {from}"),
                },
                Reason::Priority { from } => format!("higher priority than {from}"),
            },
        })
        .collect();
    Status {
        system: view.system.clone(),
        interface: inputs.interface.to_owned(),
        address: view.address.to_string(),
        gateway_for: inputs.served.clone(),
        peers,
        routes,
        warnings: inputs.warnings.clone(),
        definition_generation: inputs.definition_generation,
        default_route_excludes: view
            .gateway
            .as_ref()
            .filter(|_| inputs.served.iter().any(|net| net.prefix_len() == 0))
            .map(|gateway| excluded(&gateway.default_route_excludes))
            .unwrap_or_default(),
    }
}

/// Exclusions of a default route, each with its reason in words, for `status --json`.
fn excluded(excludes: &BTreeMap<Ipv4Net, Exclusion>) -> BTreeMap<Ipv4Net, String> {
    excludes
        .iter()
        .map(|(net, why)| (*net, why.describe(*net)))
        .collect()
}

/// What a default route's grant leaves out, for [`describe`].
#[derive(Debug, Clone, Copy)]
pub struct Internet<'a> {
    /// The exclusions (see [`enclave_policy::GatewayView::default_route_excludes`]).
    pub excludes: &'a BTreeMap<Ipv4Net, Exclusion>,
    /// The gateway, as the text names it ("this gateway", or the peer's name).
    pub gateway: &'a str,
}

impl Internet<'_> {
    /// `0.0.0.0/0, the Internet only (not: the overlay; private, link-local and other
    /// special-use ranges; this gateway's own addresses)`: the kinds of exclusion present,
    /// never the dozens of CIDRs they leave (`status --json` lists the exclusions whole).
    fn summary(&self) -> String {
        let has = |f: fn(&Exclusion) -> bool| self.excludes.values().any(f);
        let mut not = Vec::new();
        if has(|e| matches!(e, Exclusion::Overlay)) {
            not.push("the overlay".to_owned());
        }
        if has(|e| matches!(e, Exclusion::NotTheInternet { .. })) {
            not.push("private, link-local and other special-use ranges".to_owned());
        }
        let subnets = has(|e| {
            matches!(
                e,
                Exclusion::GatewaySubnet { .. } | Exclusion::RemovedSubnet { .. }
            )
        });
        let addresses = has(|e| matches!(e, Exclusion::GatewayAddress { .. }));
        let gateway = self.gateway;
        match (subnets, addresses) {
            (true, true) => not.push(format!("{gateway}'s other subnets and own addresses")),
            (true, false) => not.push(format!("{gateway}'s other subnets")),
            (false, true) => not.push(format!("{gateway}'s own addresses")),
            (false, false) => {}
        }
        format!("0.0.0.0/0, the Internet only (not: {})", not.join("; "))
    }
}

/// One allow rule in the guide's words: `allow [icmp] from peer -> local`. `internet` is given
/// for a rule of a default route's grant: destinations that are the whole Internet (0.0.0.0/0
/// minus its exclusions) are written short, with what the policy grants besides.
pub fn describe(
    rule: &AllowRule,
    from_peer: bool,
    local: Ipv4Addr,
    peer: Ipv4Addr,
    internet: Option<&Internet<'_>>,
) -> String {
    let mut what = match rule.protocol {
        Protocol::Any => "any".to_owned(),
        Protocol::Icmp => "icmp".to_owned(),
        Protocol::Tcp => "tcp".to_owned(),
        Protocol::Udp => "udp".to_owned(),
    };
    if let Some(ports) = rule.ports {
        if ports.first == ports.last {
            what.push_str(&format!("/{}", ports.first));
        } else {
            what.push_str(&format!("/{}-{}", ports.first, ports.last));
        }
    }
    if let Some(label) = &rule.label {
        what.push_str(&format!(" {label}"));
    }
    let list = |entries: &[AddrEntry]| -> String {
        entries
            .iter()
            .map(|e| match e {
                AddrEntry::Net(net) if net.prefix_len() == 32 => net.addr().to_string(),
                AddrEntry::Net(net) => net.to_string(),
                AddrEntry::Range { first, last } => format!("{first}-{last}"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let side = |entries: &[AddrEntry], me: Ipv4Addr, name: &str| -> String {
        if entries == [AddrEntry::Net(Ipv4Net::from(me))] {
            return name.to_owned();
        }
        let rest = internet.and_then(|i| {
            enclave_policy::default_route_rest(entries, i.excludes).map(|rest| (i, rest))
        });
        match rest {
            Some((internet, rest)) if rest.is_empty() => internet.summary(),
            Some((internet, rest)) => format!("{} and {}", internet.summary(), list(&rest)),
            None => list(entries),
        }
    };
    let (from, to) = if from_peer {
        (
            side(&rule.sources, peer, "peer"),
            side(&rule.destinations, local, "local"),
        )
    } else {
        (
            side(&rule.sources, local, "local"),
            side(&rule.destinations, peer, "peer"),
        )
    };
    format!("allow [{what}] from {from} -> {to}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use enclave_filter::PortRange;

    fn net(s: &str) -> AddrEntry {
        AddrEntry::Net(s.parse().unwrap())
    }

    #[test]
    fn rules_read_as_the_guide_writes_them() {
        let local: Ipv4Addr = "100.64.0.11".parse().unwrap();
        let peer: Ipv4Addr = "100.64.0.2".parse().unwrap();
        let icmp = AllowRule {
            protocol: Protocol::Icmp,
            ports: None,
            sources: vec![net("100.64.0.2/32")],
            destinations: vec![net("100.64.0.11/32")],
            label: None,
        };
        assert_eq!(
            describe(&icmp, true, local, peer, None),
            "allow [icmp] from peer -> local"
        );
        let smb = AllowRule {
            protocol: Protocol::Tcp,
            ports: Some(PortRange::single(445)),
            sources: vec![net("100.64.0.11/32")],
            destinations: vec![AddrEntry::Range {
                first: "192.168.77.20".parse().unwrap(),
                last: "192.168.77.21".parse().unwrap(),
            }],
            label: Some("SMB".into()),
        };
        assert_eq!(
            describe(&smb, false, local, peer, None),
            "allow [tcp/445 SMB] from local -> 192.168.77.20-192.168.77.21"
        );
    }

    /// The example's laptop and egress-gw: the "users to the Internet" grant, as compiled.
    #[test]
    fn a_default_routes_grant_reads_as_the_internet() {
        const EXAMPLE: &str = include_str!("../../../../docs/examples/network.toml");
        const POLICY: &str = "users to the Internet";
        let network = enclave_policy::load("network.toml", EXAMPLE)
            .unwrap()
            .network;
        let laptop: Ipv4Addr = "100.64.0.11".parse().unwrap();
        let egress: Ipv4Addr = "100.64.0.4".parse().unwrap();

        // On the gateway, with its own addresses left out as its agent does.
        let compiled = std::sync::Arc::new(enclave_policy::compile(&network, "egress-gw").unwrap());
        let addresses = BTreeMap::from([
            ("203.0.113.4".parse().unwrap(), "eth0".to_owned()),
            ("127.0.0.1".parse().unwrap(), "lo".to_owned()),
        ]);
        let view = crate::desired::with_own_addresses(&compiled, &addresses);
        let gateway = view.gateway.as_ref().unwrap();
        let rule = &view.peers["laptop"].inbound[POLICY].rules[0];
        let internet = Internet {
            excludes: &gateway.default_route_excludes,
            gateway: "this gateway",
        };
        assert_eq!(
            describe(rule, true, egress, laptop, Some(&internet)),
            "allow [any] from peer -> 0.0.0.0/0, the Internet only (not: the overlay; private, \
             link-local and other special-use ranges; this gateway's own addresses)"
        );
        // As compiled, without the gateway's own addresses, it is a list of CIDRs that is not
        // the Internet as the exclusions now say: never called the Internet.
        let as_compiled = &compiled.peers["laptop"].inbound[POLICY].rules[0];
        let text = describe(as_compiled, true, egress, laptop, Some(&internet));
        assert!(
            !text.contains("Internet") && text.contains("200.0.0.0/5"),
            "{text}"
        );

        // On the laptop: the gateway's other subnets (none here) and the ranges; the gateway's
        // own addresses are the gateway's to leave out.
        let view = enclave_policy::compile(&network, "laptop").unwrap();
        let peer = &view.peers["egress-gw"];
        let rule = &peer.outbound[POLICY].rules[0];
        let internet = Internet {
            excludes: &peer.default_route_excludes,
            gateway: "egress-gw",
        };
        assert_eq!(
            describe(rule, false, laptop, egress, Some(&internet)),
            "allow [any] from local -> 0.0.0.0/0, the Internet only (not: the overlay; private, \
             link-local and other special-use ranges)"
        );
        // Without the exclusions (not a default route's grant) the CIDRs are listed.
        let text = describe(rule, false, laptop, egress, None);
        assert!(text.contains("128.0.0.0/3"), "{text}");
    }
}
