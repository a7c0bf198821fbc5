//! The netlink shell: reads links and IPv4 addresses of the calling thread's namespace, and
//! asks the kernel for the route to configured subnets.

use std::collections::BTreeSet;
use std::io;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use neli::consts::nl::{NlmF, NlmFFlags, Nlmsg};
use neli::consts::rtnl::{
    Arphrd, Ifa, IfaF, IfaFFlags, Iff, IffFlags, Ifla, IflaInfo, RtAddrFamily, Rtm,
};
use neli::consts::socket::NlFamily;
use neli::genl::Genlmsghdr;
use neli::nl::{NlPayload, Nlmsghdr};
use neli::rtnl::{Ifaddrmsg, Ifinfomsg};
use neli::socket::NlSocketHandle;
use neli::types::{GenlBuffer, RtBuffer};

use crate::classify::{
    check_reachability, classify, Address, Discovery, Link, Reachability, RouteAnswer,
};
use crate::{Error, Result};

fn netlink_err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Error {
    move |e| Error::Netlink {
        what,
        source: io::Error::other(e.to_string()),
    }
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn dump<P>(sock: &mut NlSocketHandle, ty: Rtm, payload: P, what: &'static str) -> Result<Vec<P>>
where
    P: neli::Size
        + neli::ToBytes
        + std::fmt::Debug
        + for<'a> neli::FromBytesWithInput<'a, Input = usize>,
{
    let msg = Nlmsghdr::new(
        None,
        ty,
        NlmFFlags::new(&[NlmF::Request, NlmF::Dump]),
        None,
        None,
        NlPayload::Payload(payload),
    );
    sock.send(msg).map_err(netlink_err(what))?;
    let mut out = Vec::new();
    for item in sock.iter::<u16, P>(false) {
        let item = item.map_err(netlink_err(what))?;
        if item.nl_type == u16::from(Nlmsg::Done) {
            break;
        }
        if let NlPayload::Payload(p) = item.nl_payload {
            out.push(p);
        }
    }
    Ok(out)
}

/// `NL80211_CMD_GET_INTERFACE` and `NL80211_ATTR_IFINDEX` (linux/nl80211.h).
const NL80211_CMD_GET_INTERFACE: u8 = 5;
const NL80211_ATTR_IFINDEX: u16 = 3;

/// The indexes of the wireless interfaces of the calling thread's namespace, from nl80211.
///
/// A kernel without the nl80211 family (no cfg80211) has no wireless interfaces: that is an
/// empty set, not an error.
fn wireless_indexes() -> Result<BTreeSet<u32>> {
    let mut sock =
        NlSocketHandle::connect(NlFamily::Generic, None, &[]).map_err(|source| Error::Netlink {
            what: "open a NETLINK_GENERIC socket",
            source,
        })?;
    let family = match sock.resolve_genl_family("nl80211") {
        Ok(id) => id,
        Err(e) => {
            tracing::debug!(error = %e, "no nl80211 family: no wireless interfaces");
            return Ok(BTreeSet::new());
        }
    };
    let request = Genlmsghdr::<u8, u16>::new(NL80211_CMD_GET_INTERFACE, 1, GenlBuffer::new());
    let msg = Nlmsghdr::new(
        None,
        family,
        NlmFFlags::new(&[NlmF::Request, NlmF::Dump]),
        None,
        None,
        NlPayload::Payload(request),
    );
    sock.send(msg)
        .map_err(netlink_err("list wireless interfaces"))?;
    let mut out = BTreeSet::new();
    for item in sock.iter::<u16, Genlmsghdr<u8, u16>>(false) {
        let item = item.map_err(netlink_err("list wireless interfaces"))?;
        if item.nl_type == u16::from(Nlmsg::Done) {
            break;
        }
        if let NlPayload::Payload(p) = item.nl_payload {
            let handle = p.get_attr_handle();
            if let Some(index) = handle
                .get_attribute(NL80211_ATTR_IFINDEX)
                .and_then(|a| <[u8; 4]>::try_from(a.nla_payload.as_ref()).ok())
            {
                out.insert(u32::from_ne_bytes(index));
            }
        }
    }
    Ok(out)
}

fn links(sock: &mut NlSocketHandle) -> Result<Vec<Link>> {
    let req = Ifinfomsg::new(
        RtAddrFamily::Unspecified,
        Arphrd::from(0u16),
        0,
        IffFlags::empty(),
        IffFlags::empty(),
        RtBuffer::new(),
    );
    let mut out = Vec::new();
    for msg in dump(sock, Rtm::Getlink, req, "list interfaces")? {
        let Ok(index) = u32::try_from(msg.ifi_index) else {
            continue;
        };
        let handle = msg.rtattrs.get_attr_handle();
        let Some(name) = handle.get_attribute(Ifla::Ifname) else {
            continue;
        };
        let name = c_string(name.rta_payload.as_ref());
        let kind = handle.get_attribute(Ifla::Linkinfo).and_then(|info| {
            let nested = info.get_attr_handle::<IflaInfo>().ok()?;
            let kind = nested.get_attribute(IflaInfo::Kind)?;
            Some(c_string(kind.rta_payload.as_ref()))
        });
        out.push(Link {
            index,
            name,
            kind,
            link_type: msg.ifi_type.into(),
            up: msg.ifi_flags.contains(&Iff::Up),
            wireless: false,
        });
    }
    Ok(out)
}

fn addresses(sock: &mut NlSocketHandle) -> Result<Vec<Address>> {
    let req = Ifaddrmsg {
        ifa_family: RtAddrFamily::Inet,
        ifa_prefixlen: 0,
        ifa_flags: IfaFFlags::empty(),
        ifa_scope: 0,
        ifa_index: 0,
        rtattrs: RtBuffer::new(),
    };
    let mut out = Vec::new();
    for msg in dump(sock, Rtm::Getaddr, req, "list addresses")? {
        if msg.ifa_family != RtAddrFamily::Inet {
            continue;
        }
        let Ok(index) = u32::try_from(msg.ifa_index) else {
            continue;
        };
        let handle = msg.rtattrs.get_attr_handle();
        let raw = handle
            .get_attribute(Ifa::Local)
            .or_else(|| handle.get_attribute(Ifa::Address))
            .and_then(|a| <[u8; 4]>::try_from(a.rta_payload.as_ref()).ok());
        let Some(raw) = raw else { continue };
        out.push(Address {
            index,
            addr: Ipv4Addr::from(raw),
            prefix_len: msg.ifa_prefixlen,
            secondary: msg.ifa_flags.contains(&IfaF::Secondary),
        });
    }
    Ok(out)
}

/// Discovers the subnets of the calling thread's network namespace. `tunnel` names our own
/// tunnel interface, which is never offered.
pub fn discover(tunnel: Option<&str>) -> Result<Discovery> {
    let mut sock =
        NlSocketHandle::connect(NlFamily::Route, None, &[]).map_err(|source| Error::Netlink {
            what: "open a NETLINK_ROUTE socket",
            source,
        })?;
    let mut links = links(&mut sock)?;
    let wireless = wireless_indexes()?;
    for link in &mut links {
        link.wireless = wireless.contains(&link.index);
    }
    let addresses = addresses(&mut sock)?;
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
    let mut rtnl = enclave_route::Rtnl::open().map_err(|source| Error::Lookup {
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
