//! Human-readable text of a view, in the spirit of the seed's `enclave status`.

use std::collections::BTreeMap;
use std::fmt;

use enclave_filter::{AddrEntry, AllowRule, Protocol};
use ipnet::Ipv4Net;

use crate::internet::{default_route_rest, Exclusion};
use crate::view::{Grant, PeerView, View};

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Any => "any",
        Protocol::Icmp => "icmp",
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn addrs(entries: &[AddrEntry]) -> String {
    let parts: Vec<String> = entries
        .iter()
        .map(|e| match e {
            AddrEntry::Net(net) if net.prefix_len() == 32 => net.addr().to_string(),
            AddrEntry::Net(net) => net.to_string(),
            AddrEntry::Range { first, last } => format!("{first}-{last}"),
        })
        .collect();
    parts.join(",")
}

/// Destinations, with a default route's written as `0.0.0.0/0 except …`.
fn destinations(
    entries: &[AddrEntry],
    default_route: bool,
    excludes: &BTreeMap<Ipv4Net, Exclusion>,
) -> String {
    match default_route_rest(entries, excludes).filter(|_| default_route) {
        Some(rest) => {
            let holes: Vec<String> = excludes.keys().map(ToString::to_string).collect();
            let mut text = format!("0.0.0.0/0 except {}", holes.join(","));
            if !rest.is_empty() {
                text.push_str(&format!(" and {}", addrs(&rest)));
            }
            text
        }
        None => addrs(entries),
    }
}

fn what(r: &AllowRule) -> String {
    let mut what = protocol(r.protocol).to_owned();
    if let Some(p) = r.ports {
        if p.first == p.last {
            what.push_str(&format!(" {}", p.first));
        } else {
            what.push_str(&format!(" {}-{}", p.first, p.last));
        }
    }
    if let Some(label) = &r.label {
        what.push_str(&format!(" \"{label}\""));
    }
    what
}

fn grant(
    f: &mut fmt::Formatter<'_>,
    direction: &str,
    policy: &str,
    g: &Grant,
    excludes: &BTreeMap<Ipv4Net, Exclusion>,
) -> fmt::Result {
    let r = &g.requirements;
    writeln!(f, "    {direction} by policy {policy:?}:")?;
    for allow in &g.rules {
        writeln!(
            f,
            "      allow [{}] from {} -> {}",
            what(allow),
            addrs(&allow.sources),
            destinations(&allow.destinations, g.default_route, excludes)
        )?;
    }
    let mut conditions = Vec::new();
    conditions.extend(r.policy_trust.iter().map(|t| format!("trust {t:?}")));
    for (tag, trust) in r.via_tags.iter() {
        if !trust.is_empty() {
            conditions.push(format!("tag {tag:?} while {}", trust.join(" and ")));
        }
    }
    if let Some(hours) = &r.active_hours {
        conditions.push(format!("active hours in {}", hours.zone));
    }
    if !conditions.is_empty() {
        writeln!(
            f,
            "      when {} (judged on {}, enforced by {})",
            conditions.join(", "),
            r.sender,
            r.enforced_by
        )?;
    }
    Ok(())
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "System: {} ({}) in {}{}",
            self.system,
            self.address,
            self.overlay,
            if self.enabled { "" } else { ", disabled" }
        )?;
        for (name, peer) in &self.peers {
            writeln!(f)?;
            writeln!(f, "Peer: {name}")?;
            writeln!(f, "  Public key . . . . : {}", peer.public_key)?;
            let endpoint = peer
                .endpoint
                .map_or_else(|| "(learned)".to_owned(), |e| e.to_string());
            writeln!(f, "  Endpoint . . . . . : {endpoint}")?;
            writeln!(f, "  Virtual address. . : {}", peer.address)?;
            let allowed: Vec<String> = peer.allowed_ips.iter().map(|n| n.to_string()).collect();
            writeln!(f, "  Allowed IPs. . . . : {}", allowed.join(", "))?;
            if !peer.gateway_for.is_empty() {
                let nets: Vec<String> = peer.gateway_for.iter().map(|n| n.to_string()).collect();
                writeln!(f, "  Gateway for. . . . : {}", nets.join(", "))?;
            }
            if let Some(file) = &peer.preshared_key_file {
                writeln!(f, "  Pre-shared key . . : from {}", file.display())?;
            }
            if let Some(k) = peer.keepalive {
                writeln!(f, "  Keepalive. . . . . : {k}s")?;
            }
            writeln!(f, "  Filter:")?;
            let mine = BTreeMap::new();
            let gateway_excludes = self
                .gateway
                .as_ref()
                .map_or(&mine, |g| &g.default_route_excludes);
            for (policy, g) in &peer.inbound {
                grant(f, "inbound (opened by peer)", policy, g, gateway_excludes)?;
            }
            for (policy, g) in &peer.outbound {
                let excludes = &peer.default_route_excludes;
                grant(f, "outbound (opened by us)", policy, g, excludes)?;
            }
        }
        if !self.routes.is_empty() {
            writeln!(f)?;
            writeln!(f, "Routes:")?;
            for (subnet, route) in &self.routes {
                let via: Vec<String> = route
                    .candidates
                    .iter()
                    .map(|c| format!("{} (priority {})", c.gateway, c.priority))
                    .collect();
                let policies: Vec<&str> = route.policies.iter().map(String::as_str).collect();
                writeln!(
                    f,
                    "  {subnet}{} via {} [{}]",
                    if route.default_route {
                        " (default)"
                    } else {
                        ""
                    },
                    via.join(", then "),
                    policies.join("; ")
                )?;
            }
        }
        if let Some(gw) = &self.gateway {
            writeln!(f)?;
            writeln!(
                f,
                "Gateway (auto-discovery {}):",
                if gw.auto_discover { "on" } else { "off" }
            )?;
            for (subnet, source) in &gw.subnets {
                writeln!(f, "  serves {subnet} ({source:?})")?;
            }
            for subnet in &gw.removed {
                writeln!(f, "  never serves {subnet} (removed)")?;
            }
            for rule in &gw.snat {
                writeln!(
                    f,
                    "  snat {} -> {} to the egress address",
                    rule.source, rule.destination
                )?;
            }
            for (policy, fwd) in &gw.forward {
                let senders: Vec<String> = fwd
                    .senders
                    .iter()
                    .map(|(n, a)| format!("{n} ({a})"))
                    .collect();
                let acl: Vec<String> = fwd.acl.iter().map(|a| a.to_string()).collect();
                writeln!(
                    f,
                    "  forward {policy:?}: {} -> {} [{}]",
                    senders.join(", "),
                    destinations(
                        &fwd.destinations,
                        fwd.default_route,
                        &gw.default_route_excludes
                    ),
                    acl.join(", ")
                )?;
            }
            for (range, why) in &gw.default_route_excludes {
                writeln!(f, "  the default route leaves out {}", why.describe(*range))?;
            }
        }
        Ok(())
    }
}

impl PeerView {
    /// The seed's `ACLs` line items for `status`: `allow [icmp] from peer -> local`,
    /// `allow [tcp 445 "SMB"] from local -> peer`, one per rule, inbound first.
    pub fn acl_lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (grants, from, to) in [
            (&self.inbound, "peer", "local"),
            (&self.outbound, "local", "peer"),
        ] {
            for grant in grants.values() {
                for r in &grant.rules {
                    let line = format!("allow [{}] from {from} -> {to}", what(r));
                    if !out.contains(&line) {
                        out.push(line);
                    }
                }
            }
        }
        out
    }
}
