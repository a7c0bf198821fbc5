//! What a gateway serves right now: the subnets of its view that discovery still finds (or, for
//! those added by hand, that it still has a route to), each with its egress interface and the
//! address SNAT translates to. A subnet whose interface goes down disappears from the answer,
//! so the gateway withdraws it from its acknowledgements and senders fail over.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use enclave_discovery::{Choice, Discovery};
use enclave_policy::{GatewayView, SubnetSource};
use ipnet::Ipv4Net;

use crate::desired::Egress;

/// An address a default route's lookup asks about (only the kernel's routing table is asked;
/// nothing is sent).
const DEFAULT_ROUTE_PROBE: Ipv4Addr = Ipv4Addr::new(1, 1, 1, 1);

/// Every IPv4 address of every interface of the host (taken by discovery or not: the egress and
/// SNAT addresses, the underlay, loopback, a dummy interface's service address…), with the
/// interface that holds it. A default route must reach none of them (see
/// [`crate::desired::with_own_addresses`]).
pub fn own_addresses(discovery: &Discovery) -> BTreeMap<Ipv4Addr, String> {
    let mut out = BTreeMap::new();
    for report in &discovery.interfaces {
        for offer in &report.addresses {
            out.entry(offer.address)
                .or_insert_with(|| report.interface.clone());
        }
    }
    out
}

/// The subnets served now, from `discovery`, or why a reachability lookup failed.
pub fn served(
    gateway: &GatewayView,
    discovery: &Discovery,
) -> Result<BTreeMap<Ipv4Net, Egress>, enclave_discovery::Error> {
    let connected = discovery.subnets();
    let mut out = BTreeMap::new();
    for (subnet, source) in &gateway.subnets {
        if gateway.removed.contains(subnet) {
            continue;
        }
        let egress = match source {
            SubnetSource::Discovery => connected
                .get(subnet)
                .and_then(|interface| egress_of(discovery, interface, Some(*subnet))),
            SubnetSource::Manual => {
                let probe = if subnet.prefix_len() == 0 {
                    Ipv4Net::from(DEFAULT_ROUTE_PROBE)
                } else {
                    *subnet
                };
                enclave_discovery::reachability(discovery, &[probe])?
                    .into_iter()
                    .find(|r| r.reachable)
                    .and_then(|r| r.interface)
                    .and_then(|interface| egress_of(discovery, &interface, Some(*subnet)))
            }
        };
        if let Some(egress) = egress {
            out.insert(*subnet, egress);
        }
    }
    Ok(out)
}

/// The egress for `interface`: its address inside `subnet` when it has one, else its first
/// primary address that discovery took.
fn egress_of(discovery: &Discovery, interface: &str, subnet: Option<Ipv4Net>) -> Option<Egress> {
    let report = discovery
        .interfaces
        .iter()
        .find(|i| i.interface == interface)?;
    let inside = subnet.and_then(|net| {
        report
            .addresses
            .iter()
            .find(|a| net.prefix_len() > 0 && net.contains(&a.address))
    });
    let address = inside
        .or_else(|| {
            report
                .addresses
                .iter()
                .find(|a| a.choice == Choice::Taken && !a.secondary)
        })
        .or_else(|| report.addresses.first())?
        .address;
    Some(Egress {
        interface: interface.to_owned(),
        address,
    })
}
