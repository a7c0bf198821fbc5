//! What `enclave-agent status` shows: the seed guide's block per peer, and which gateway each
//! routed subnet uses and why. A plain value, serialised as JSON over the control socket and
//! rendered as text by [`render`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The state of one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// This system's name in the network definition.
    pub system: String,
    /// The tunnel interface.
    pub interface: String,
    /// This system's virtual address.
    pub address: String,
    /// Whether this system acts as a gateway, and for which subnets.
    pub gateway_for: Vec<Ipv4Net>,
    /// The peers, by name.
    pub peers: Vec<PeerStatus>,
    /// The routed subnets and their gateways.
    pub routes: Vec<RouteStatus>,
    /// Warnings of the last reload (a refused definition, a conflicting route…), and of parts
    /// that could not be applied (a gateway whose rules failed says it does not forward).
    pub warnings: Vec<String>,
    /// How many times a network definition was read and put in force since the agent started
    /// (1 after the start). It grows after each edit the agent accepted, once the edit has been
    /// applied, so a tool can wait for it instead of sleeping.
    #[serde(default)]
    pub definition_generation: u64,
    /// On a gateway that serves a default route: what that route leaves out (it means the
    /// Internet), each range with why, this gateway's own interface addresses included. The
    /// text form of `status` says it in short beside the ACLs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub default_route_excludes: BTreeMap<Ipv4Net, String>,
}

/// One peer, as the seed guide's status block shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer system's name.
    pub name: String,
    /// `Up` (a handshake within the last 3 minutes) or `Down`.
    pub state: String,
    /// Its public key, base64.
    pub public_key: String,
    /// Its current underlay endpoint.
    pub endpoint: Option<String>,
    /// Seconds since the last packet received from it.
    pub last_activity_secs: Option<f64>,
    /// Bytes received from it.
    pub rx_bytes: u64,
    /// Bytes sent to it.
    pub tx_bytes: u64,
    /// The round-trip time of the last control probe, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// The overlay network.
    pub virtual_network: String,
    /// Its virtual address.
    pub virtual_address: String,
    /// The subnets it is a gateway for (to us), and whether we use it for them now.
    pub gateway_for: Vec<GatewayFor>,
    /// The ACLs between us, in the guide's words (`allow [icmp] from peer -> local`).
    pub acls: Vec<String>,
    /// Packets dropped on this peer's account, by reason (`wg:replay`, `filter:no-rule`…);
    /// only non-zero reasons.
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
    /// When this peer is a candidate gateway for our default route: what that route leaves out,
    /// each range with why (as the definition says; the gateway also leaves out its own
    /// interface addresses, which only it knows).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub default_route_excludes: BTreeMap<Ipv4Net, String>,
}

/// One subnet a peer is a gateway for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayFor {
    /// The subnet.
    pub subnet: Ipv4Net,
    /// Whether our traffic for it goes through this peer now.
    pub active: bool,
}

/// One routed subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStatus {
    /// The subnet.
    pub subnet: Ipv4Net,
    /// The gateway in use.
    pub gateway: Option<String>,
    /// Why that gateway (or why none).
    pub reason: String,
}

fn line(out: &mut String, label: &str, value: &str) {
    // The guide pads labels with ". " to a fixed width: "Peer state. . . . . : Up".
    let mut padded = label.to_owned();
    while padded.len() < 20 {
        padded.push(if padded.len() % 2 == 0 { '.' } else { ' ' });
    }
    let _ = writeln!(out, "   {padded}: {value}");
}

/// Renders `status` as text, one block per peer as the seed guide shows it.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "System: {} ({} on {})",
        status.system, status.address, status.interface
    );
    if !status.gateway_for.is_empty() {
        let nets: Vec<String> = status.gateway_for.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "Acting as gateway for: {}", nets.join(", "));
    }
    for peer in &status.peers {
        let _ = writeln!(out, "\nPeer: {}\n", peer.name);
        line(&mut out, "Peer state", &peer.state);
        line(&mut out, "Public key", &peer.public_key);
        line(
            &mut out,
            "Endpoint",
            &peer
                .endpoint
                .as_ref()
                .map_or("(unknown)".to_owned(), |e| format!("Udp/{e}")),
        );
        line(
            &mut out,
            "Last activity",
            &peer
                .last_activity_secs
                .map_or("never".to_owned(), |s| format!("{s:.2} seconds ago")),
        );
        let rtt = peer
            .rtt_ms
            .map_or(String::new(), |ms| format!(", link rtt {ms:.2} ms"));
        line(
            &mut out,
            "Transfer",
            &format!(
                "{:.3} KB received, {:.3} KB sent{rtt}",
                peer.rx_bytes as f64 / 1000.0,
                peer.tx_bytes as f64 / 1000.0
            ),
        );
        line(&mut out, "Virtual network", &peer.virtual_network);
        line(&mut out, "Virtual address", &peer.virtual_address);
        // Only a peer that is a gateway for us has the line (the guide shows it under a
        // gateway); a sender seen from its gateway, or a peer of a direct policy, has none.
        if !peer.gateway_for.is_empty() {
            let gateway_for: Vec<String> = peer
                .gateway_for
                .iter()
                .map(|g| {
                    if g.active {
                        format!("{} (active)", g.subnet)
                    } else {
                        format!("{} (standby)", g.subnet)
                    }
                })
                .collect();
            line(&mut out, "Gateway for", &gateway_for.join(", "));
        }
        line(&mut out, "ACLs", &peer.acls.join(", "));
        if !peer.drops.is_empty() {
            let drops: Vec<String> = peer.drops.iter().map(|(r, n)| format!("{r} {n}")).collect();
            line(&mut out, "Drops", &drops.join(", "));
        }
    }
    if !status.routes.is_empty() {
        let _ = writeln!(out, "\nRouted subnets:");
        for route in &status.routes {
            let via = route.gateway.as_deref().unwrap_or("(no gateway)");
            let _ = writeln!(out, "   {} via {via}: {}", route.subnet, route.reason);
        }
    }
    for warning in &status.warnings {
        let _ = writeln!(out, "\nwarning: {warning}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_guides_block() {
        let status = Status {
            system: "laptop".into(),
            interface: "enclave0".into(),
            address: "100.64.0.10".into(),
            gateway_for: vec![],
            peers: vec![PeerStatus {
                name: "menlo-gw-1".into(),
                state: "Up".into(),
                public_key: "AAAA".into(),
                endpoint: Some("10.10.0.1:51820".into()),
                last_activity_secs: Some(0.75),
                rx_bytes: 3462,
                tx_bytes: 4071,
                rtt_ms: Some(0.59),
                virtual_network: "100.64.0.0/10".into(),
                virtual_address: "100.64.0.1".into(),
                gateway_for: vec![GatewayFor {
                    subnet: "192.168.77.0/24".parse().unwrap(),
                    active: true,
                }],
                acls: vec![
                    "allow [icmp] from peer -> local".into(),
                    "allow [any] from local -> peer".into(),
                ],
                drops: [("filter:no-rule".to_owned(), 3)].into(),
                default_route_excludes: BTreeMap::new(),
            }],
            routes: vec![RouteStatus {
                subnet: "192.168.77.0/24".parse().unwrap(),
                gateway: Some("menlo-gw-1".into()),
                reason: "first connected".into(),
            }],
            warnings: vec![],
            definition_generation: 1,
            default_route_excludes: BTreeMap::new(),
        };
        let expected = "\
System: laptop (100.64.0.10 on enclave0)

Peer: menlo-gw-1

   Peer state. . . . . : Up
   Public key. . . . . : AAAA
   Endpoint. . . . . . : Udp/10.10.0.1:51820
   Last activity . . . : 0.75 seconds ago
   Transfer. . . . . . : 3.462 KB received, 4.071 KB sent, link rtt 0.59 ms
   Virtual network . . : 100.64.0.0/10
   Virtual address . . : 100.64.0.1
   Gateway for . . . . : 192.168.77.0/24 (active)
   ACLs. . . . . . . . : allow [icmp] from peer -> local, allow [any] from local -> peer
   Drops . . . . . . . : filter:no-rule 3

Routed subnets:
   192.168.77.0/24 via menlo-gw-1: first connected
";
        assert_eq!(render(&status), expected);
        let json = serde_json::to_string(&status).unwrap();
        let back: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(back, status);
    }

    /// A gateway's status: its sender is a gateway for nothing, so its block has no
    /// `Gateway for` line (not an empty one).
    #[test]
    fn a_peer_that_is_no_gateway_has_no_gateway_for_line() {
        let status = Status {
            system: "menlo-gw-1".into(),
            interface: "enclave0".into(),
            address: "100.64.0.2".into(),
            gateway_for: vec!["192.168.77.0/24".parse().unwrap()],
            peers: vec![PeerStatus {
                name: "laptop".into(),
                state: "Up".into(),
                public_key: "BBBB".into(),
                endpoint: Some("10.0.0.100:51820".into()),
                last_activity_secs: Some(0.1),
                rx_bytes: 1000,
                tx_bytes: 2000,
                rtt_ms: None,
                virtual_network: "100.64.0.0/10".into(),
                virtual_address: "100.64.0.11".into(),
                gateway_for: vec![],
                acls: vec!["allow [icmp] from peer -> 192.168.77.20-192.168.77.21".into()],
                drops: BTreeMap::new(),
                default_route_excludes: BTreeMap::new(),
            }],
            routes: vec![],
            warnings: vec![],
            definition_generation: 1,
            default_route_excludes: BTreeMap::new(),
        };
        let expected = "\
System: menlo-gw-1 (100.64.0.2 on enclave0)
Acting as gateway for: 192.168.77.0/24

Peer: laptop

   Peer state. . . . . : Up
   Public key. . . . . : BBBB
   Endpoint. . . . . . : Udp/10.0.0.100:51820
   Last activity . . . : 0.10 seconds ago
   Transfer. . . . . . : 1.000 KB received, 2.000 KB sent
   Virtual network . . : 100.64.0.0/10
   Virtual address . . : 100.64.0.11
   ACLs. . . . . . . . : allow [icmp] from peer -> 192.168.77.20-192.168.77.21
";
        assert_eq!(render(&status), expected);
    }
}
