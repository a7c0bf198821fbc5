//! Explain a decision: would this sender reach that address, and why (not)?

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use enclave_filter::Protocol;
use ipnet::Ipv4Net;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::internet::{default_route_excludes, excluding, Exclusion};
use crate::model::{AclEntry, Network, System};
use crate::trust::{check, TrustFailure};
use crate::view::{requirements, GrantKind, Terms, GATEWAY_REACHABILITY};
use crate::{Error, Result};

/// The question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The sending system's name.
    pub from: String,
    /// The destination address.
    pub to: Ipv4Addr,
    /// The protocol; `None` asks whether any traffic at all may flow.
    pub protocol: Option<Protocol>,
    /// The destination port.
    pub port: Option<u16>,
    /// The sender's observed public address; public IP requirements fail without it.
    pub public_ip: Option<Ipv4Addr>,
    /// The time to judge active hours at.
    pub at: Timestamp,
}

/// The answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Some policy allows it.
    Allowed,
    /// Nothing allows it.
    Denied,
}

/// Why a policy does not allow the flow (or why nothing does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "denial")]
pub enum Denial {
    /// The sending system is disabled.
    SenderDisabled,
    /// No policy grants the sender anything towards the destination.
    NoPolicy,
    /// The policy is disabled.
    PolicyDisabled,
    /// The receiving system is disabled.
    ReceiverDisabled {
        /// The receiver.
        system: String,
    },
    /// The destination is a gateway of the policy that is disabled, switched off, or serves
    /// none of the policy's subnets.
    GatewayServesNothing {
        /// The gateway.
        system: String,
    },
    /// The destination is in the policy's subnets but outside its subnet filter.
    OutsideFilter,
    /// The policy reaches the destination only through a default route, and a default route
    /// means the Internet: it leaves out these ranges (those of the preferred gateway).
    NotTheInternet {
        /// The excluded ranges that contain the destination, with the reasons.
        excluded: BTreeMap<Ipv4Net, Exclusion>,
    },
    /// No ACL entry admits the protocol and port.
    NoAclEntry,
    /// No enabled gateway of the policy serves the destination's subnet.
    NoGateway {
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// Traffic to the address takes a more specific route, granted by another policy.
    ShadowedRoute {
        /// The more specific subnet.
        subnet: Ipv4Net,
    },
    /// A trust requirement or the active hours failed.
    Trust {
        /// What failed.
        failure: TrustFailure,
    },
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SenderDisabled => f.write_str("the sending system is disabled"),
            Self::NoPolicy => f.write_str("no policy grants the sender access to this address"),
            Self::PolicyDisabled => f.write_str("the policy is disabled"),
            Self::ReceiverDisabled { system } => write!(f, "system {system:?} is disabled"),
            Self::GatewayServesNothing { system } => write!(
                f,
                "gateway {system:?} is disabled, switched off, or serves none of the policy's subnets"
            ),
            Self::OutsideFilter => f.write_str("the address is outside the policy's subnet filter"),
            Self::NotTheInternet { excluded } => {
                let ranges: Vec<String> = excluded
                    .iter()
                    .map(|(net, why)| why.describe(*net))
                    .collect();
                write!(
                    f,
                    "not covered by the default route of this policy, which means the \
                     Internet: {}; grant it explicitly (name it in a policy's subnets)",
                    ranges.join(", ")
                )
            }
            Self::NoAclEntry => f.write_str("no ACL entry admits this protocol and port"),
            Self::NoGateway { subnet } => {
                write!(f, "no enabled gateway of the policy serves {subnet}")
            }
            Self::ShadowedRoute { subnet } => {
                write!(
                    f,
                    "traffic to this address takes the more specific route to {subnet}"
                )
            }
            Self::Trust { failure } => failure.fmt(f),
        }
    }
}

/// What one policy says about the flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum FindingOutcome {
    /// The policy allows it.
    Allowed {
        /// The admitting ACL entry.
        acl: AclEntry,
        /// For a gateway policy, the gateways in order of preference.
        gateways: Vec<String>,
    },
    /// The policy does not allow it.
    Denied {
        /// Why.
        reason: Denial,
    },
}

/// One policy that concerns the sender and the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The policy.
    pub policy: String,
    /// Its kind.
    pub kind: GrantKind,
    /// What it says.
    pub outcome: FindingOutcome,
}

/// The answer and its reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// Allowed or denied.
    pub verdict: Verdict,
    /// The sender.
    pub from: String,
    /// The destination.
    pub to: Ipv4Addr,
    /// The protocol asked about.
    pub protocol: Option<Protocol>,
    /// The port asked about.
    pub port: Option<u16>,
    /// When nothing concerns the flow at all, why.
    pub denial: Option<Denial>,
    /// What each concerned policy says, direct policies first, by name.
    pub findings: Vec<Finding>,
}

/// Answers `query` against `net`.
///
/// # Errors
/// [`Error::UnknownSystem`] when the sender is not defined.
pub fn explain(net: &Network, query: &Query) -> Result<Explanation> {
    let sender = net
        .systems
        .get(&query.from)
        .ok_or_else(|| Error::UnknownSystem {
            name: query.from.clone(),
        })?;
    let mut out = Explanation {
        verdict: Verdict::Denied,
        from: query.from.clone(),
        to: query.to,
        protocol: query.protocol,
        port: query.port,
        denial: None,
        findings: Vec::new(),
    };
    if !sender.enabled {
        out.denial = Some(Denial::SenderDisabled);
        return Ok(out);
    }
    direct_findings(net, sender, query, &mut out.findings);
    gateway_findings(net, sender, query, &mut out.findings);
    if out
        .findings
        .iter()
        .any(|f| matches!(f.outcome, FindingOutcome::Allowed { .. }))
    {
        out.verdict = Verdict::Allowed;
    } else if out.findings.is_empty() {
        out.denial = Some(Denial::NoPolicy);
    }
    Ok(out)
}

fn first_admitting(acl: &[AclEntry], query: &Query) -> Option<AclEntry> {
    acl.iter()
        .find(|e| e.admits(query.protocol, query.port))
        .cloned()
}

/// Whether the trust requirements and active hours of a policy's `terms` hold for `sender` at
/// the query's time, judged as `enforcer` would (unobserved facts fail).
fn judge_trust(
    net: &Network,
    sender: &System,
    enforcer: &str,
    terms: Terms<'_>,
    query: &Query,
) -> std::result::Result<(), Denial> {
    let reqs = requirements(net, sender, enforcer, terms);
    check(
        &reqs,
        &net.trust_requirements,
        query.public_ip,
        true,
        query.at,
    )
    .map_err(|failure| Denial::Trust { failure })
}

/// What `policy` says: allowed by an ACL entry (through these gateways, in order), or why not.
fn finding(
    policy: &str,
    kind: GrantKind,
    outcome: std::result::Result<(AclEntry, Vec<String>), Denial>,
) -> Finding {
    Finding {
        policy: policy.to_owned(),
        kind,
        outcome: match outcome {
            Ok((acl, gateways)) => FindingOutcome::Allowed { acl, gateways },
            Err(reason) => FindingOutcome::Denied { reason },
        },
    }
}

fn direct_findings(net: &Network, sender: &System, query: &Query, out: &mut Vec<Finding>) {
    let Some(receiver) = net
        .systems
        .values()
        .find(|s| s.address == query.to && s.name != sender.name)
    else {
        return;
    };
    for policy in net.direct_policies.values() {
        if sender.tags.is_disjoint(&policy.senders) || receiver.tags.is_disjoint(&policy.receivers)
        {
            continue;
        }
        let outcome = (|| {
            if !policy.enabled {
                return Err(Denial::PolicyDisabled);
            }
            if !receiver.enabled {
                return Err(Denial::ReceiverDisabled {
                    system: receiver.name.clone(),
                });
            }
            let acl = first_admitting(&policy.acl, query).ok_or(Denial::NoAclEntry)?;
            judge_trust(net, sender, &receiver.name, policy.into(), query)?;
            Ok((acl, Vec::new()))
        })();
        out.push(finding(&policy.name, GrantKind::Direct, outcome));
    }
}

fn gateway_findings(net: &Network, sender: &System, query: &Query, out: &mut Vec<Finding>) {
    let reachability = [AclEntry {
        protocol: Protocol::Icmp,
        ports: None,
        label: Some(GATEWAY_REACHABILITY.to_owned()),
    }];
    // Overlay addresses are reached directly, never through a gateway.
    let routed = !net.overlay.contains(&query.to);
    // The sender's routing table picks the most specific route that some enabled policy with
    // an ACL installs (a route stays installed while its grant is suspended).
    let best_route = net
        .gateway_policies
        .values()
        .filter(|p| {
            p.enabled && !p.acl.is_empty() && routed && !sender.tags.is_disjoint(&p.senders)
        })
        .flat_map(|p| {
            p.subnets.iter().filter(|subnet| {
                subnet.contains(&query.to)
                    && p.gateways.iter().any(|g| {
                        net.systems.get(g).is_some_and(|g| {
                            g.is_gateway()
                                && g.name != sender.name
                                && g.gateway
                                    .as_ref()
                                    .and_then(|s| s.source_of(**subnet))
                                    .is_some()
                        })
                    })
            })
        })
        .map(|subnet| subnet.prefix_len())
        .max();
    for policy in net.gateway_policies.values() {
        if sender.tags.is_disjoint(&policy.senders) {
            continue;
        }
        // The gateway's own virtual address, for the checklist's ping.
        let to_gateway = policy.gateways.iter().find(|g| {
            net.systems
                .get(*g)
                .is_some_and(|s| s.address == query.to && s.name != sender.name)
        });
        let subnet = policy
            .subnets
            .iter()
            .filter(|s| routed && s.contains(&query.to))
            .max_by_key(|s| s.prefix_len())
            .copied();
        if to_gateway.is_none() && subnet.is_none() {
            continue;
        }
        let outcome = (|| {
            if !policy.enabled {
                return Err(Denial::PolicyDisabled);
            }
            let mut candidates: Vec<&System> = policy
                .gateways
                .iter()
                .filter_map(|g| net.systems.get(g))
                .filter(|g| g.is_gateway() && g.name != sender.name)
                .filter(|g| match (to_gateway, subnet) {
                    // As compiled: only a gateway that serves one of the policy's subnets
                    // becomes the sender's peer.
                    (Some(name), _) => {
                        &g.name == name
                            && policy.subnets.iter().any(|subnet| {
                                g.gateway
                                    .as_ref()
                                    .and_then(|s| s.source_of(*subnet))
                                    .is_some()
                            })
                    }
                    (None, Some(subnet)) => g
                        .gateway
                        .as_ref()
                        .and_then(|s| s.source_of(subnet))
                        .is_some(),
                    (None, None) => false,
                })
                .collect();
            candidates.sort_by_key(|g| (g.gateway.as_ref().map_or(0, |s| s.priority), &g.name));
            let acl = match (to_gateway, subnet) {
                (Some(name), _) => {
                    if candidates.is_empty() {
                        return Err(Denial::GatewayServesNothing {
                            system: name.clone(),
                        });
                    }
                    if policy.acl.is_empty() {
                        return Err(Denial::NoAclEntry);
                    }
                    first_admitting(&reachability, query).ok_or(Denial::NoAclEntry)?
                }
                (None, Some(subnet)) => {
                    if subnet.prefix_len() == 0 && !candidates.is_empty() {
                        // The Internet only: each gateway leaves out its own ranges.
                        let excluded = |g: &System| -> BTreeMap<Ipv4Net, Exclusion> {
                            let excludes = default_route_excludes(net, g);
                            excluding(&excludes, query.to)
                                .into_iter()
                                .map(|(net, why)| (net, why.clone()))
                                .collect()
                        };
                        let preferred = excluded(candidates[0]);
                        candidates.retain(|g| excluded(g).is_empty());
                        if candidates.is_empty() {
                            return Err(Denial::NotTheInternet {
                                excluded: preferred,
                            });
                        }
                    }
                    if let Some(best) = best_route.filter(|best| *best > subnet.prefix_len()) {
                        let more_specific = Ipv4Net::new(query.to, best)
                            .map(|n| n.trunc())
                            .unwrap_or(subnet);
                        return Err(Denial::ShadowedRoute {
                            subnet: more_specific,
                        });
                    }
                    let inside = policy
                        .destinations_in(subnet, net.overlay)
                        .iter()
                        .any(|e| e.contains(query.to));
                    if !inside {
                        return Err(Denial::OutsideFilter);
                    }
                    let acl = first_admitting(&policy.acl, query).ok_or(Denial::NoAclEntry)?;
                    if candidates.is_empty() {
                        return Err(Denial::NoGateway { subnet });
                    }
                    acl
                }
                (None, None) => return Err(Denial::NoPolicy),
            };
            let enforcer = candidates.first().map_or("", |g| g.name.as_str());
            judge_trust(net, sender, enforcer, policy.into(), query)?;
            Ok((acl, candidates.iter().map(|g| g.name.clone()).collect()))
        })();
        out.push(finding(&policy.name, GrantKind::Gateway, outcome));
    }
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Any => "any",
        Protocol::Icmp => "icmp",
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

impl fmt::Display for AclEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(protocol_name(self.protocol))?;
        match self.ports {
            Some(p) if p.first == p.last => write!(f, " {}", p.first)?,
            Some(p) => write!(f, " {}-{}", p.first, p.last)?,
            None => {}
        }
        if let Some(label) = &self.label {
            write!(f, " ({label})")?;
        }
        Ok(())
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.verdict {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied",
        };
        write!(f, "{verdict}: {} -> {}", self.from, self.to)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        if let Some(protocol) = self.protocol {
            write!(f, "/{}", protocol_name(protocol))?;
        }
        writeln!(f)?;
        if let Some(denial) = &self.denial {
            writeln!(f, "  {denial}")?;
        }
        for finding in &self.findings {
            let kind = match finding.kind {
                GrantKind::Direct => "direct access policy",
                GrantKind::Gateway => "gateway access policy",
            };
            write!(f, "  {kind} {:?}: ", finding.policy)?;
            match &finding.outcome {
                FindingOutcome::Allowed { acl, gateways } => {
                    write!(f, "allowed by ACL entry {acl}")?;
                    if !gateways.is_empty() {
                        write!(f, ", through {}", gateways.join(", then "))?;
                    }
                    writeln!(f)?;
                }
                FindingOutcome::Denied { reason } => writeln!(f, "denied: {reason}")?,
            }
        }
        Ok(())
    }
}
