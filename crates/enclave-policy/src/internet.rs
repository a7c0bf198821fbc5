//! What a default route means: the Internet, not everything.
//!
//! A gateway that serves `0.0.0.0/0` carries its senders' Internet traffic. Taken literally the
//! prefix would also reach the gateway's own LANs and addresses, link-local services (a cloud
//! instance's metadata service at 169.254.169.254) and every private network behind it, and so
//! bypass the subnet filters and ACLs of the other policies on the same gateway. So a default
//! route grants `0.0.0.0/0` minus its [exclusions](default_route_excludes): the overlay, the
//! ranges of [`NOT_THE_INTERNET`], and the gateway's other subnets. A policy that names one of
//! them in its `subnets` grants it explicitly, with its own filter and ACL; the default route
//! never widens that.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use enclave_filter::AddrEntry;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::{entry_within, GatewayPolicy, Network, System};

/// A range of IPv4 addresses that is not the Internet, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialRange {
    /// The first address of the range.
    pub address: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// What it is, as messages name it ("private range").
    pub name: &'static str,
    /// Why a default route must not reach it.
    pub why: &'static str,
}

impl SpecialRange {
    /// The range as a CIDR.
    pub fn net(&self) -> Ipv4Net {
        // Every entry of NOT_THE_INTERNET has a valid prefix (a unit test checks it); were one
        // wrong, 0.0.0.0/0 would be excluded, which fails closed.
        Ipv4Net::new(self.address, self.prefix).unwrap_or_default()
    }
}

/// The ranges a default route does not cover, in address order (RFC 6890 lists them all).
/// A policy reaches them only by naming them, or a subnet inside them, in its `subnets`.
pub const NOT_THE_INTERNET: [SpecialRange; 9] = [
    SpecialRange {
        address: Ipv4Addr::new(0, 0, 0, 0),
        prefix: 8,
        name: "this-network range",
        why: "\"this host on this network\" (RFC 791, RFC 1122): a source address while a host \
              learns its own, never a destination; Linux delivers 0.0.0.0 to the gateway itself",
    },
    SpecialRange {
        address: Ipv4Addr::new(10, 0, 0, 0),
        prefix: 8,
        name: "private range",
        why:
            "private networks (RFC 1918): the gateway's and its neighbours' LANs, not the Internet",
    },
    SpecialRange {
        address: Ipv4Addr::new(100, 64, 0, 0),
        prefix: 10,
        name: "shared address range",
        why: "carrier-grade NAT space (RFC 6598): the provider's network behind the gateway, and \
              the default overlay",
    },
    SpecialRange {
        address: Ipv4Addr::new(127, 0, 0, 0),
        prefix: 8,
        name: "loopback range",
        why: "the gateway host itself (RFC 1122): its local services must not open to senders",
    },
    SpecialRange {
        address: Ipv4Addr::new(169, 254, 0, 0),
        prefix: 16,
        name: "link-local range",
        why: "link-local addresses (RFC 3927): cloud instance metadata services \
              (169.254.169.254) that hand out credentials, and the gateway's own links",
    },
    SpecialRange {
        address: Ipv4Addr::new(172, 16, 0, 0),
        prefix: 12,
        name: "private range",
        why:
            "private networks (RFC 1918): the gateway's and its neighbours' LANs, not the Internet",
    },
    SpecialRange {
        address: Ipv4Addr::new(192, 168, 0, 0),
        prefix: 16,
        name: "private range",
        why:
            "private networks (RFC 1918): the gateway's and its neighbours' LANs, not the Internet",
    },
    SpecialRange {
        address: Ipv4Addr::new(224, 0, 0, 0),
        prefix: 4,
        name: "multicast range",
        why: "multicast (RFC 5771): reaches groups on the gateway's links, never one host across \
              the Internet",
    },
    SpecialRange {
        address: Ipv4Addr::new(240, 0, 0, 0),
        prefix: 4,
        name: "reserved range",
        why: "reserved for future use (RFC 1112) and the limited broadcast 255.255.255.255: not \
              routed on the Internet",
    },
];

/// Why a range is left out of a default route.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Exclusion {
    /// The overlay network: overlay addresses are reached directly, never through a gateway.
    Overlay,
    /// A range of [`NOT_THE_INTERNET`], by its name.
    NotTheInternet {
        /// The range's name ("private range").
        range: String,
    },
    /// A subnet that the gateway serves besides the default route: one of its own networks,
    /// which policies that name it grant with their own filters and ACLs.
    GatewaySubnet {
        /// The gateway.
        gateway: String,
    },
    /// A subnet removed by hand from the gateway: never served, not through a default route
    /// either.
    RemovedSubnet {
        /// The gateway.
        gateway: String,
    },
    /// An address of the gateway itself. Only the gateway knows its interfaces' addresses: its
    /// agent adds them with [`crate::View::exclude_from_default_route`].
    GatewayAddress {
        /// The interface that holds it.
        interface: String,
    },
}

impl Exclusion {
    /// The excluded `net` in words: `private range 10.0.0.0/8`.
    pub fn describe(&self, net: Ipv4Net) -> String {
        match self {
            Self::Overlay => format!("the overlay network {net}"),
            Self::NotTheInternet { range } => format!("{range} {net}"),
            Self::GatewaySubnet { gateway } => format!("subnet {net} of gateway {gateway:?}"),
            Self::RemovedSubnet { gateway } => {
                format!("subnet {net} removed from gateway {gateway:?}")
            }
            Self::GatewayAddress { interface } if net.prefix_len() == 32 => {
                format!("the gateway's own address {} on {interface}", net.addr())
            }
            Self::GatewayAddress { interface } => {
                format!("the gateway's own addresses {net} on {interface}")
            }
        }
    }
}

/// The subnets `gateway` serves or would serve besides a default route, as the definition
/// writes them: added by hand (not removed), or named by a policy of the gateway and expected
/// from discovery.
pub(crate) fn gateway_subnets(net: &Network, gateway: &System) -> BTreeMap<Ipv4Net, Exclusion> {
    let mut out = BTreeMap::new();
    let Some(settings) = &gateway.gateway else {
        return out;
    };
    let served = settings.subnets.iter().copied().chain(
        net.gateway_policies
            .values()
            .filter(|p| p.gateways.contains(&gateway.name))
            .flat_map(|p| p.subnets.iter().copied()),
    );
    for subnet in served {
        if subnet.prefix_len() > 0 && settings.would_offer(subnet).is_some() {
            out.insert(
                subnet,
                Exclusion::GatewaySubnet {
                    gateway: gateway.name.clone(),
                },
            );
        }
    }
    for subnet in settings.removed.iter().filter(|s| s.prefix_len() > 0) {
        out.entry(*subnet)
            .or_insert_with(|| Exclusion::RemovedSubnet {
                gateway: gateway.name.clone(),
            });
    }
    out
}

/// What a default route through `gateway` leaves out: the overlay, [`NOT_THE_INTERNET`] and
/// the gateway's other subnets, each with its reason (the first reason wins for a range listed
/// twice).
pub fn default_route_excludes(net: &Network, gateway: &System) -> BTreeMap<Ipv4Net, Exclusion> {
    let mut out = BTreeMap::new();
    out.insert(net.overlay, Exclusion::Overlay);
    for range in &NOT_THE_INTERNET {
        out.entry(range.net())
            .or_insert_with(|| Exclusion::NotTheInternet {
                range: range.name.to_owned(),
            });
    }
    for (subnet, why) in gateway_subnets(net, gateway) {
        out.entry(subnet).or_insert(why);
    }
    out
}

/// The exclusions that contain `addr`, in address order.
pub(crate) fn excluding(
    excludes: &BTreeMap<Ipv4Net, Exclusion>,
    addr: Ipv4Addr,
) -> Vec<(Ipv4Net, &Exclusion)> {
    excludes
        .iter()
        .filter(|(net, _)| net.contains(&addr))
        .map(|(net, why)| (*net, why))
        .collect()
}

/// The destinations `policy` grants through a default route with these exclusions: the whole
/// of `0.0.0.0/0` minus them, or its filter entries minus them.
pub(crate) fn default_route_destinations(
    policy: &GatewayPolicy,
    excludes: &BTreeMap<Ipv4Net, Exclusion>,
) -> Vec<AddrEntry> {
    let holes: Vec<Ipv4Net> = excludes.keys().copied().collect();
    if policy.filter.is_empty() {
        return minus(&[AddrEntry::Net(Ipv4Net::default())], &holes);
    }
    minus(&policy.filter, &holes)
}

/// For display: when `entries` hold the whole of `0.0.0.0/0` minus `excludes` (a default route
/// without a filter), the other entries (those granted explicitly, such as the gateway's own
/// virtual address), so that a caller can write `0.0.0.0/0 except …` instead of dozens of
/// CIDRs; `None` when they do not.
pub fn default_route_rest(
    entries: &[AddrEntry],
    excludes: &BTreeMap<Ipv4Net, Exclusion>,
) -> Option<Vec<AddrEntry>> {
    if excludes.is_empty() {
        return None;
    }
    let holes: Vec<Ipv4Net> = excludes.keys().copied().collect();
    let internet = minus(&[AddrEntry::Net(Ipv4Net::default())], &holes);
    if !internet.iter().all(|e| entries.contains(e)) {
        return None;
    }
    Some(
        entries
            .iter()
            .filter(|e| !internet.contains(e))
            .copied()
            .collect(),
    )
}

/// `entries` minus `holes`: CIDRs stay CIDRs (split as needed), ranges stay ranges.
pub(crate) fn minus(entries: &[AddrEntry], holes: &[Ipv4Net]) -> Vec<AddrEntry> {
    let mut out = Vec::new();
    for entry in entries {
        match *entry {
            AddrEntry::Net(net) => {
                let mut nets = Vec::new();
                net_minus(net, holes, &mut nets);
                out.extend(nets.into_iter().map(AddrEntry::Net));
            }
            AddrEntry::Range { first, last } => {
                let mut pieces = vec![(u32::from(first), u32::from(last))];
                for hole in holes {
                    let (a, b) = (u32::from(hole.network()), u32::from(hole.broadcast()));
                    pieces = pieces
                        .into_iter()
                        .flat_map(|(x, y)| {
                            let mut keep = Vec::new();
                            if b < x || y < a {
                                keep.push((x, y));
                            } else {
                                if x < a {
                                    keep.push((x, a - 1));
                                }
                                if b < y {
                                    keep.push((b + 1, y));
                                }
                            }
                            keep
                        })
                        .collect();
                }
                out.extend(pieces.into_iter().map(|(x, y)| {
                    if x == y {
                        AddrEntry::Net(Ipv4Net::from(Ipv4Addr::from(x)))
                    } else {
                        AddrEntry::Range {
                            first: Ipv4Addr::from(x),
                            last: Ipv4Addr::from(y),
                        }
                    }
                }));
            }
        }
    }
    out
}

/// `net` minus `holes`, as CIDRs in address order. Two CIDRs either nest or are disjoint, so a
/// net that no hole covers and none lies in is kept whole, and any other splits in two.
fn net_minus(net: Ipv4Net, holes: &[Ipv4Net], out: &mut Vec<Ipv4Net>) {
    if holes.iter().any(|h| h.contains(&net)) {
        return;
    }
    if !holes.iter().any(|h| net.contains(h)) {
        out.push(net);
        return;
    }
    if let Ok(halves) = net.subnets(net.prefix_len() + 1) {
        for half in halves {
            net_minus(half, holes, out);
        }
    }
}

/// Adds `extra` exclusions to entries of a default-route grant that already leave out `old`:
/// an entry inside an old exclusion was granted explicitly (a subnet the policy names) and
/// stays; any other came from the default route and loses the new holes.
pub(crate) fn narrow(entries: &[AddrEntry], old: &[Ipv4Net], extra: &[Ipv4Net]) -> Vec<AddrEntry> {
    entries
        .iter()
        .flat_map(|entry| {
            if old.iter().any(|o| entry_within(entry, *o)) {
                vec![*entry]
            } else {
                minus(&[*entry], extra)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_range_is_a_valid_cidr_in_address_order() {
        let nets: Vec<Ipv4Net> = NOT_THE_INTERNET.iter().map(SpecialRange::net).collect();
        for (range, net) in NOT_THE_INTERNET.iter().zip(&nets) {
            assert_eq!(net.prefix_len(), range.prefix);
            assert_eq!(net.trunc(), *net, "{net} has host bits set");
        }
        assert!(nets.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn minus_keeps_kinds_and_covers_exactly_the_rest() {
        let holes: Vec<Ipv4Net> = vec!["10.0.0.0/8".parse().unwrap()];
        let range = AddrEntry::Range {
            first: "9.255.255.250".parse().unwrap(),
            last: "10.0.0.5".parse().unwrap(),
        };
        assert_eq!(
            minus(&[range], &holes),
            vec![AddrEntry::Range {
                first: "9.255.255.250".parse().unwrap(),
                last: "9.255.255.255".parse().unwrap(),
            }]
        );
        let all = minus(&[AddrEntry::Net(Ipv4Net::default())], &holes);
        let size: u64 = all
            .iter()
            .map(|e| match e {
                AddrEntry::Net(n) => 1u64 << (32 - u32::from(n.prefix_len())),
                AddrEntry::Range { .. } => unreachable!("CIDRs stay CIDRs"),
            })
            .sum();
        assert_eq!(size, (1u64 << 32) - (1u64 << 24));
        assert!(all.iter().all(|e| !e.contains("10.1.2.3".parse().unwrap())));
    }
}
