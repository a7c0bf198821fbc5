//! Builds the [`Status`] that `enclave-agent status` shows from the view and the counters.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use enclave_filter::{AddrEntry, AllowRule, Protocol};
use enclave_policy::{Evaluation, GrantOutcome, View};
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
        for (grants, from_peer) in [(&peer.inbound, true), (&peer.outbound, false)] {
            for (policy, grant) in grants {
                let suspended = inputs.evaluation.grants.iter().find_map(|g| {
                    let same = &g.peer == name && &g.policy == policy;
                    match &g.outcome {
                        GrantOutcome::Suspended { reason } if same => Some(reason.to_string()),
                        _ => None,
                    }
                });
                for rule in grant
                    .rules
                    .iter()
                    .filter(|r| r.label.as_deref() != Some(CONTROL_LABEL))
                {
                    let text = describe(rule, from_peer, view.address, peer.address, view.overlay);
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
        });
    }
    let routes = routes
        .into_iter()
        .map(|(subnet, state)| RouteStatus {
            subnet,
            gateway: state.active.clone(),
            reason: match &state.reason {
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
    }
}

/// One allow rule in the guide's words: `allow [icmp] from peer -> local`.
pub fn describe(
    rule: &AllowRule,
    from_peer: bool,
    local: Ipv4Addr,
    peer: Ipv4Addr,
    overlay: Ipv4Net,
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
    let side = |entries: &[AddrEntry], me: Ipv4Addr, name: &str| -> String {
        if entries == [AddrEntry::Net(Ipv4Net::from(me))] {
            return name.to_owned();
        }
        if is_all_but(entries, overlay) {
            // A default route's grant: everything but the overlay, as many CIDRs.
            return format!("0.0.0.0/0 except {overlay}");
        }
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

/// Whether `entries` are CIDRs that together cover every IPv4 address outside `overlay` and
/// none inside it.
fn is_all_but(entries: &[AddrEntry], overlay: Ipv4Net) -> bool {
    let mut covered: u64 = 0;
    for entry in entries {
        let AddrEntry::Net(net) = entry else {
            return false;
        };
        if net.contains(&overlay.network()) || overlay.contains(&net.network()) {
            return false;
        }
        covered += 1u64 << (32 - u32::from(net.prefix_len()));
    }
    covered == (1u64 << 32) - (1u64 << (32 - u32::from(overlay.prefix_len())))
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
        let overlay: Ipv4Net = "100.64.0.0/10".parse().unwrap();
        let icmp = AllowRule {
            protocol: Protocol::Icmp,
            ports: None,
            sources: vec![net("100.64.0.2/32")],
            destinations: vec![net("100.64.0.11/32")],
            label: None,
        };
        assert_eq!(
            describe(&icmp, true, local, peer, overlay),
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
            describe(&smb, false, local, peer, overlay),
            "allow [tcp/445 SMB] from local -> 192.168.77.20-192.168.77.21"
        );
        // The default route's grant: 0.0.0.0/0 without the overlay, in CIDRs.
        let outside = [
            "0.0.0.0/2",
            "64.0.0.0/3",
            "96.0.0.0/6",
            "100.0.0.0/10",
            "100.128.0.0/9",
            "101.0.0.0/8",
            "102.0.0.0/7",
            "104.0.0.0/5",
            "112.0.0.0/4",
            "128.0.0.0/1",
        ];
        let any = AllowRule {
            protocol: Protocol::Any,
            ports: None,
            sources: vec![net("100.64.0.11/32")],
            destinations: outside.iter().map(|n| net(n)).collect(),
            label: None,
        };
        assert_eq!(
            describe(&any, false, local, peer, overlay),
            "allow [any] from local -> 0.0.0.0/0 except 100.64.0.0/10"
        );
        let mut short = any.clone();
        short.destinations.pop();
        assert!(describe(&short, false, local, peer, overlay).contains("112.0.0.0/4"));
    }
}
