//! The kernel side: links and IPv4 addresses come from the route crate's rtnetlink layer
//! ([`enclave_route::Rtnl`], the workspace's only one), which wireless devices are from
//! nl80211, and the routes to configured subnets from the kernel's route lookup.

use std::collections::BTreeSet;
use std::io;
use std::net::Ipv4Addr;

use enclave_route::Rtnl;
use ipnet::Ipv4Net;
use neli::consts::nl::NlmF;
use neli::consts::nl80211::{Nl80211Attribute, Nl80211Command};
use neli::consts::socket::NlFamily;
use neli::genl::{Genlmsghdr, GenlmsghdrBuilder, NoUserHeader};
use neli::nl::NlPayload;
use neli::router::synchronous::NlRouter;
use neli::utils::Groups;

use crate::classify::{check_reachability, classify, Discovery, Link, Reachability, RouteAnswer};
use crate::{Error, Result};

/// A failure of the route crate's rtnetlink layer, while we were doing `what`.
fn rtnetlink(what: &'static str) -> impl Fn(enclave_route::Error) -> Error {
    move |e| Error::Netlink {
        what,
        source: io::Error::other(e),
    }
}

fn nl80211(what: &'static str) -> impl Fn(String) -> Error {
    move |detail| Error::Netlink {
        what,
        source: io::Error::other(detail),
    }
}

/// `NL80211_ATTR_IFINDEX` (linux/nl80211.h); neli names only a few of nl80211's attributes.
const NL80211_ATTR_IFINDEX: Nl80211Attribute = Nl80211Attribute::UnrecognizedConst(3);

/// The indexes of the wireless interfaces of the calling thread's namespace, from nl80211.
///
/// A kernel without the nl80211 family (no cfg80211) has no wireless interfaces: that is an
/// empty set, not an error. This is generic netlink, not rtnetlink, and the only generic
/// netlink request of the workspace; neli's router keeps a thread while it lives, so it lives
/// only for this call.
fn wireless_indexes() -> Result<BTreeSet<u32>> {
    let what = "list wireless interfaces";
    let (sock, _) = NlRouter::connect(NlFamily::Generic, None, Groups::empty())
        .map_err(|e| nl80211("open a NETLINK_GENERIC socket")(e.to_string()))?;
    let family = match sock.resolve_genl_family("nl80211") {
        Ok(id) => id,
        Err(e) => {
            tracing::debug!(error = %e, "no nl80211 family: no wireless interfaces");
            return Ok(BTreeSet::new());
        }
    };
    let request = GenlmsghdrBuilder::<Nl80211Command, Nl80211Attribute, NoUserHeader>::default()
        .cmd(Nl80211Command::GetInterface)
        .version(1)
        .build()
        .map_err(|e| nl80211(what)(e.to_string()))?;
    let answers = sock
        .send::<_, _, u16, Genlmsghdr<Nl80211Command, Nl80211Attribute>>(
            family,
            NlmF::DUMP,
            NlPayload::Payload(request),
        )
        .map_err(|e| nl80211(what)(e.to_string()))?;
    let mut out = BTreeSet::new();
    for answer in answers {
        let answer = answer.map_err(|e| nl80211(what)(e.to_string()))?;
        if let Some(payload) = answer.get_payload() {
            let attrs = payload.attrs().get_attr_handle();
            if let Ok(index) = attrs.get_attr_payload_as::<u32>(NL80211_ATTR_IFINDEX) {
                out.insert(index);
            }
        }
    }
    Ok(out)
}

/// Discovers the subnets of the calling thread's network namespace. `tunnel` names our own
/// tunnel interface, which is never offered.
pub fn discover(tunnel: Option<&str>) -> Result<Discovery> {
    let mut rtnl = Rtnl::open().map_err(rtnetlink("open a NETLINK_ROUTE socket"))?;
    let interfaces = rtnl.interfaces().map_err(rtnetlink("list interfaces"))?;
    let wireless = wireless_indexes()?;
    let links: Vec<Link> = interfaces
        .into_iter()
        .map(|i| {
            let is_wireless = wireless.contains(&i.index);
            Link::new(i, is_wireless)
        })
        .collect();
    let addresses = rtnl.ipv4_addresses().map_err(rtnetlink("list addresses"))?;
    tracing::debug!(
        links = links.len(),
        addresses = addresses.len(),
        "interfaces read"
    );
    Ok(classify(&links, &addresses, tunnel))
}

/// The address a lookup for `subnet` asks about: its first host (the address itself for /31
/// and /32).
fn probe_address(subnet: &Ipv4Net) -> Ipv4Addr {
    if subnet.prefix_len() >= 31 {
        subnet.network()
    } else {
        Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1))
    }
}

/// For each configured subnet, asks the kernel for its route (`ip route get`) and judges it.
pub fn reachability(discovery: &Discovery, subnets: &[Ipv4Net]) -> Result<Vec<Reachability>> {
    let mut rtnl = Rtnl::open().map_err(|source| Error::Lookup {
        subnet: subnets.first().copied().unwrap_or_default(),
        source,
    })?;
    let names = rtnl.links().map_err(|source| Error::Lookup {
        subnet: subnets.first().copied().unwrap_or_default(),
        source,
    })?;
    let mut out = Vec::new();
    for subnet in subnets {
        let subnet = subnet.trunc();
        let on_link = discovery
            .subnets()
            .into_iter()
            .find(|(s, _)| s.contains(&subnet));
        if let Some((_, interface)) = on_link {
            let answer = RouteAnswer::Via {
                interface,
                gateway: None,
            };
            out.push(check_reachability(subnet, true, &answer));
            continue;
        }
        let lookup = rtnl
            .route_to(probe_address(&subnet))
            .map_err(|source| Error::Lookup { subnet, source })?;
        let answer = match lookup {
            None => RouteAnswer::Unreachable,
            Some(l) if l.kind == 1 => match l.oif.and_then(|i| names.get(&i)) {
                Some(name) => RouteAnswer::Via {
                    interface: name.clone(),
                    gateway: l.gateway,
                },
                None => RouteAnswer::Other { kind: l.kind },
            },
            Some(l) => RouteAnswer::Other { kind: l.kind },
        };
        out.push(check_reachability(subnet, false, &answer));
    }
    Ok(out)
}
