//! The rtnetlink shell: dumps, adds and deletes routes and rules with neli. No decisions here.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use neli::consts::nl::{NlmF, NlmFFlags, Nlmsg};
use neli::consts::rtnl::{
    Arphrd, Iff, IffFlags, Ifla, RtAddrFamily, RtScope, RtTable, Rta, Rtm, RtmFFlags, Rtn, Rtprot,
};
use neli::consts::socket::NlFamily;
use neli::err::NlError;
use neli::nl::{NlPayload, Nlmsghdr};
use neli::rtnl::{Ifinfomsg, Rtattr, Rtmsg};
use neli::socket::NlSocketHandle;
use neli::types::{Buffer, RtBuffer};
use neli::ToBytes;

use crate::plan::{KernelRoute, KernelRule, Route, RuleSpec, PROTOCOL_ENCLAVE};
use crate::{Error, Result};

// Attributes of FIB rules (linux/fib_rules.h); neli 0.6 has no names for them.
const FRA_PRIORITY: u16 = 6;
const FRA_FWMARK: u16 = 10;
const FRA_SUPPRESS_PREFIXLEN: u16 = 14;
const FRA_TABLE: u16 = 15;
const FRA_FWMASK: u16 = 16;
const FRA_PROTOCOL: u16 = 21;
/// `FIB_RULE_INVERT`: the rule's `not`.
const FIB_RULE_INVERT: u32 = 0x2;
/// `FR_ACT_TO_TBL`: the rule's action is a table lookup.
const FR_ACT_TO_TBL: u8 = 1;
const RT_TABLE_UNSPEC: u8 = 0;
const RTN_BLACKHOLE: u8 = 6;
const RTN_UNREACHABLE: u8 = 7;
const RTN_PROHIBIT: u8 = 8;
const RTN_UNICAST: u8 = 1;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_NOWHERE: u8 = 255;
const RT_SCOPE_LINK: u8 = 253;

/// Where the kernel would send a packet to one address (`ip route get`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLookup {
    /// `rtm_type` of the matching route (1 unicast, 2 local, ...).
    pub kind: u8,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Next hop, when not directly connected.
    pub gateway: Option<Ipv4Addr>,
}

/// An rtnetlink socket in the calling thread's network namespace.
pub struct Rtnl {
    sock: NlSocketHandle,
    seq: u32,
}

impl std::fmt::Debug for Rtnl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rtnl")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

fn neli_msg<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Error {
    move |e| Error::Message {
        what,
        detail: e.to_string(),
    }
}

fn attr(ty: u16, payload: &[u8]) -> Result<Rtattr<Rta, Buffer>> {
    Rtattr::new(None, Rta::from(ty), Buffer::from(payload)).map_err(neli_msg("build an attribute"))
}

fn attr_u32(attrs: &RtBuffer<Rta, Buffer>, ty: u16) -> Option<u32> {
    attrs
        .iter()
        .find(|a| u16::from(a.rta_type) == ty)
        .and_then(|a| <[u8; 4]>::try_from(a.rta_payload.as_ref()).ok())
        .map(u32::from_ne_bytes)
}

fn attr_v4(attrs: &RtBuffer<Rta, Buffer>, ty: u16) -> Option<Ipv4Addr> {
    attrs
        .iter()
        .find(|a| u16::from(a.rta_type) == ty)
        .and_then(|a| <[u8; 4]>::try_from(a.rta_payload.as_ref()).ok())
        .map(Ipv4Addr::from)
}

fn rtmsg(
    dst_len: u8,
    table: u8,
    protocol: u8,
    scope: u8,
    kind: u8,
    flags: u32,
    attrs: Vec<Rtattr<Rta, Buffer>>,
) -> Rtmsg {
    Rtmsg {
        rtm_family: RtAddrFamily::Inet,
        rtm_dst_len: dst_len,
        rtm_src_len: 0,
        rtm_tos: 0,
        rtm_table: RtTable::from(table),
        rtm_protocol: Rtprot::from(protocol),
        rtm_scope: RtScope::from(scope),
        rtm_type: Rtn::from(kind),
        rtm_flags: RtmFFlags::from_bitmask(flags),
        rtattrs: attrs.into_iter().collect(),
    }
}

/// Turns a table id into the header's 8-bit field; big ids travel in `RTA_TABLE`.
fn table_byte(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(RT_TABLE_UNSPEC)
}

fn route_from(msg: &Rtmsg) -> Option<KernelRoute> {
    if msg.rtm_family != RtAddrFamily::Inet {
        return None;
    }
    let attrs = &msg.rtattrs;
    let dst = attr_v4(attrs, libc::RTA_DST).unwrap_or(Ipv4Addr::UNSPECIFIED);
    let dst = Ipv4Net::new(dst, msg.rtm_dst_len).ok()?;
    Some(KernelRoute {
        dst,
        table: attr_u32(attrs, libc::RTA_TABLE).unwrap_or(u8::from(msg.rtm_table).into()),
        metric: attr_u32(attrs, libc::RTA_PRIORITY).unwrap_or(0),
        oif: attr_u32(attrs, libc::RTA_OIF),
        gateway: attr_v4(attrs, libc::RTA_GATEWAY),
        protocol: msg.rtm_protocol.into(),
        kind: msg.rtm_type.into(),
        scope: msg.rtm_scope.into(),
    })
}

fn rule_from(msg: &Rtmsg) -> Option<KernelRule> {
    if msg.rtm_family != RtAddrFamily::Inet || u8::from(msg.rtm_type) != FR_ACT_TO_TBL {
        return None;
    }
    let attrs = &msg.rtattrs;
    let mask = attr_u32(attrs, FRA_FWMASK).unwrap_or(u32::MAX);
    let fwmark = attr_u32(attrs, FRA_FWMARK).filter(|_| mask == u32::MAX);
    let protocol = attrs
        .iter()
        .find(|a| u16::from(a.rta_type) == FRA_PROTOCOL)
        .and_then(|a| a.rta_payload.as_ref().first().copied())
        .unwrap_or(0);
    let suppress = attr_u32(attrs, FRA_SUPPRESS_PREFIXLEN).filter(|&v| v != u32::MAX);
    Some(KernelRule {
        spec: RuleSpec {
            priority: attr_u32(attrs, FRA_PRIORITY).unwrap_or(0),
            table: attr_u32(attrs, FRA_TABLE).unwrap_or(u8::from(msg.rtm_table).into()),
            fwmark,
            invert: msg
                .rtm_flags
                .contains(&neli::consts::rtnl::RtmF::from(FIB_RULE_INVERT)),
            suppress_prefixlen: suppress,
        },
        protocol,
    })
}

impl Rtnl {
    /// Opens a NETLINK_ROUTE socket in the calling thread's namespace.
    pub fn open() -> Result<Self> {
        let sock = NlSocketHandle::connect(NlFamily::Route, None, &[]).map_err(|source| {
            Error::Socket {
                what: "open a NETLINK_ROUTE socket",
                source,
            }
        })?;
        Ok(Rtnl { sock, seq: 0 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends a dump request and collects every answer.
    fn dump<P>(&mut self, ty: Rtm, payload: P, what: &'static str) -> Result<Vec<P>>
    where
        P: neli::Size
            + ToBytes
            + std::fmt::Debug
            + for<'a> neli::FromBytesWithInput<'a, Input = usize>,
    {
        let seq = self.next_seq();
        let msg = Nlmsghdr::new(
            None,
            ty,
            NlmFFlags::new(&[NlmF::Request, NlmF::Dump]),
            Some(seq),
            None,
            NlPayload::Payload(payload),
        );
        self.sock.send(msg).map_err(neli_msg(what))?;
        let mut out = Vec::new();
        for item in self.sock.iter::<u16, P>(false) {
            let item = item.map_err(|e| nl_error(e, what.to_string()))?;
            if item.nl_type == u16::from(Nlmsg::Done) {
                break;
            }
            if let NlPayload::Payload(p) = item.nl_payload {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Sends one request that wants an ACK and waits for it.
    fn request(&mut self, ty: Rtm, flags: &[NlmF], payload: Rtmsg, what: String) -> Result<()> {
        let seq = self.next_seq();
        let mut all = vec![NlmF::Request, NlmF::Ack];
        all.extend_from_slice(flags);
        let msg = Nlmsghdr::new(
            None,
            ty,
            NlmFFlags::new(&all),
            Some(seq),
            None,
            NlPayload::Payload(payload),
        );
        self.sock.send(msg).map_err(|e| Error::Message {
            what: "send a request",
            detail: e.to_string(),
        })?;
        loop {
            match self.sock.recv::<u16, Rtmsg>() {
                Ok(Some(m)) if m.nl_seq == seq => {
                    if let NlPayload::Ack(_) = m.nl_payload {
                        return Ok(());
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(Error::Kernel {
                        what,
                        source: io::Error::new(io::ErrorKind::UnexpectedEof, "no answer"),
                    })
                }
                Err(e) => return Err(nl_error(e, what)),
            }
        }
    }

    /// Every interface: index, name, administratively up.
    fn link_table(&mut self) -> Result<Vec<(u32, String, bool)>> {
        let req = Ifinfomsg::new(
            RtAddrFamily::Unspecified,
            Arphrd::from(0u16),
            0,
            IffFlags::empty(),
            IffFlags::empty(),
            RtBuffer::new(),
        );
        let mut out = Vec::new();
        for link in self.dump(Rtm::Getlink, req, "list interfaces")? {
            let name = link
                .rtattrs
                .iter()
                .find(|a| a.rta_type == Ifla::Ifname)
                .map(|a| {
                    let b = a.rta_payload.as_ref();
                    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                    String::from_utf8_lossy(&b[..end]).into_owned()
                });
            if let (Ok(index), Some(name)) = (u32::try_from(link.ifi_index), name) {
                out.push((index, name, link.ifi_flags.contains(&Iff::Up)));
            }
        }
        Ok(out)
    }

    /// Interface names by index.
    pub fn links(&mut self) -> Result<BTreeMap<u32, String>> {
        Ok(self
            .link_table()?
            .into_iter()
            .map(|(index, name, _)| (index, name))
            .collect())
    }

    /// The index of the interface called `name` when it exists and is up. A down interface
    /// can carry no routes (the kernel flushes them and refuses new ones), so it counts as
    /// absent.
    pub fn usable_link(&mut self, name: &str) -> Result<Option<u32>> {
        Ok(self
            .link_table()?
            .into_iter()
            .find(|(_, n, up)| n == name && *up)
            .map(|(i, _, _)| i))
    }

    /// Every IPv4 route of every table.
    pub fn routes(&mut self) -> Result<Vec<KernelRoute>> {
        let req = rtmsg(0, RT_TABLE_UNSPEC, 0, 0, 0, 0, Vec::new());
        let msgs = self.dump(Rtm::Getroute, req, "list routes")?;
        Ok(msgs.iter().filter_map(route_from).collect())
    }

    /// Every IPv4 policy routing rule.
    pub fn rules(&mut self) -> Result<Vec<KernelRule>> {
        let req = rtmsg(0, RT_TABLE_UNSPEC, 0, 0, 0, 0, Vec::new());
        let msgs = self.dump(Rtm::Getrule, req, "list routing rules")?;
        Ok(msgs.iter().filter_map(rule_from).collect())
    }

    fn route_msg(
        route: &Route,
        oif: Option<u32>,
        protocol: u8,
        scope: u8,
        kind: u8,
    ) -> Result<Rtmsg> {
        let mut attrs = vec![attr(libc::RTA_TABLE, &route.table.to_ne_bytes())?];
        if route.dst.prefix_len() > 0 {
            attrs.push(attr(libc::RTA_DST, &route.dst.network().octets())?);
        }
        if route.metric != 0 {
            attrs.push(attr(libc::RTA_PRIORITY, &route.metric.to_ne_bytes())?);
        }
        if let Some(oif) = oif {
            attrs.push(attr(libc::RTA_OIF, &oif.to_ne_bytes())?);
        }
        Ok(rtmsg(
            route.dst.prefix_len(),
            table_byte(route.table),
            protocol,
            scope,
            kind,
            0,
            attrs,
        ))
    }

    /// Adds `route` through interface `oif`, marked as ours. Fails if it exists already.
    pub fn add_route(&mut self, route: &Route, oif: u32) -> Result<()> {
        let msg = Self::route_msg(
            route,
            Some(oif),
            PROTOCOL_ENCLAVE,
            RT_SCOPE_LINK,
            RTN_UNICAST,
        )?;
        let what = format!(
            "add route {} table {} metric {} via interface {oif}",
            route.dst, route.table, route.metric
        );
        self.request(Rtm::Newroute, &[NlmF::Create, NlmF::Excl], msg, what)
    }

    /// Adds `route` as an `unreachable` route (no interface), marked as ours: what it matches
    /// is refused with "no route to host". Fails if a route with the same destination, table
    /// and metric exists already.
    pub fn add_unreachable(&mut self, route: &Route) -> Result<()> {
        let msg = Self::route_msg(
            route,
            None,
            PROTOCOL_ENCLAVE,
            RT_SCOPE_UNIVERSE,
            RTN_UNREACHABLE,
        )?;
        let what = format!(
            "add unreachable route {} table {} metric {}",
            route.dst, route.table, route.metric
        );
        self.request(Rtm::Newroute, &[NlmF::Create, NlmF::Excl], msg, what)
    }

    /// Deletes exactly this route (matched by destination, table, metric, interface, protocol
    /// and type).
    pub fn delete_route(&mut self, route: &KernelRoute) -> Result<()> {
        let key = Route {
            dst: route.dst,
            table: route.table,
            metric: route.metric,
        };
        // RT_SCOPE_NOWHERE: match any scope (as `ip route del` does).
        let msg = Self::route_msg(
            &key,
            route.oif,
            route.protocol,
            RT_SCOPE_NOWHERE,
            route.kind,
        )?;
        let what = format!(
            "delete {}route {} table {} metric {}",
            if route.kind == RTN_UNREACHABLE {
                "unreachable "
            } else {
                ""
            },
            route.dst,
            route.table,
            route.metric
        );
        self.request(Rtm::Delroute, &[], msg, what)
    }

    /// A FIB rule message. neli 0.6 has no `fib_rule_hdr`, but it has the layout of `rtmsg`
    /// (family, dst_len, src_len, tos, table, res1, res2, action, flags): `rtm_protocol` and
    /// `rtm_scope` stand for the two reserved bytes (0) and `rtm_type` for the action.
    fn rule_msg(spec: &RuleSpec, protocol: u8) -> Result<Rtmsg> {
        let mut attrs = vec![
            attr(FRA_PRIORITY, &spec.priority.to_ne_bytes())?,
            attr(FRA_TABLE, &spec.table.to_ne_bytes())?,
            attr(FRA_PROTOCOL, &[protocol])?,
        ];
        if let Some(mark) = spec.fwmark {
            attrs.push(attr(FRA_FWMARK, &mark.to_ne_bytes())?);
            attrs.push(attr(FRA_FWMASK, &u32::MAX.to_ne_bytes())?);
        }
        if let Some(len) = spec.suppress_prefixlen {
            attrs.push(attr(FRA_SUPPRESS_PREFIXLEN, &len.to_ne_bytes())?);
        }
        let flags = if spec.invert { FIB_RULE_INVERT } else { 0 };
        Ok(rtmsg(
            0,
            table_byte(spec.table),
            0,
            0,
            FR_ACT_TO_TBL,
            flags,
            attrs,
        ))
    }

    /// Adds a policy routing rule, marked as ours.
    pub fn add_rule(&mut self, spec: &RuleSpec) -> Result<()> {
        let msg = Self::rule_msg(spec, PROTOCOL_ENCLAVE)?;
        let what = format!("add rule {}", describe_rule(spec));
        self.request(Rtm::Newrule, &[NlmF::Create, NlmF::Excl], msg, what)
    }

    /// Deletes exactly this rule.
    pub fn delete_rule(&mut self, rule: &KernelRule) -> Result<()> {
        let msg = Self::rule_msg(&rule.spec, rule.protocol)?;
        let what = format!("delete rule {}", describe_rule(&rule.spec));
        self.request(Rtm::Delrule, &[], msg, what)
    }

    /// Asks the kernel where it would send a packet to `dst` (`ip route get DST`).
    ///
    /// `Ok(None)` when it has no route at all; a blackhole, unreachable or prohibit route comes
    /// back with that `kind` (6, 7, 8) and no interface.
    pub fn route_to(&mut self, dst: Ipv4Addr) -> Result<Option<RouteLookup>> {
        let seq = self.next_seq();
        let req = rtmsg(
            32,
            RT_TABLE_UNSPEC,
            0,
            0,
            0,
            0,
            vec![attr(libc::RTA_DST, &dst.octets())?],
        );
        let msg = Nlmsghdr::new(
            None,
            Rtm::Getroute,
            NlmFFlags::new(&[NlmF::Request]),
            Some(seq),
            None,
            NlPayload::Payload(req),
        );
        self.sock.send(msg).map_err(neli_msg("look up a route"))?;
        loop {
            match self.sock.recv::<u16, Rtmsg>() {
                Ok(Some(m)) if m.nl_seq == seq => {
                    if let NlPayload::Payload(r) = m.nl_payload {
                        let attrs = &r.rtattrs;
                        return Ok(Some(RouteLookup {
                            kind: r.rtm_type.into(),
                            oif: attr_u32(attrs, libc::RTA_OIF),
                            gateway: attr_v4(attrs, libc::RTA_GATEWAY),
                        }));
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return Ok(None),
                // The kernel answers a lookup that hits a blackhole, unreachable or prohibit
                // route with an error; say which route type it was.
                Err(NlError::Nlmsgerr(e)) if -e.error == libc::ENETUNREACH => return Ok(None),
                Err(NlError::Nlmsgerr(e))
                    if matches!(-e.error, libc::EINVAL | libc::EHOSTUNREACH | libc::EACCES) =>
                {
                    let kind = match -e.error {
                        libc::EINVAL => RTN_BLACKHOLE,
                        libc::EHOSTUNREACH => RTN_UNREACHABLE,
                        _ => RTN_PROHIBIT,
                    };
                    return Ok(Some(RouteLookup {
                        kind,
                        oif: None,
                        gateway: None,
                    }));
                }
                Err(e) => return Err(nl_error(e, format!("look up the route to {dst}"))),
            }
        }
    }
}

fn describe_rule(spec: &RuleSpec) -> String {
    let mut s = format!("priority {}", spec.priority);
    if let Some(mark) = spec.fwmark {
        s.push_str(&format!(
            " {}fwmark {mark:#x}",
            if spec.invert { "not " } else { "" }
        ));
    }
    s.push_str(&format!(" lookup {}", spec.table));
    if let Some(len) = spec.suppress_prefixlen {
        s.push_str(&format!(" suppress_prefixlength {len}"));
    }
    s
}

fn nl_error<T: std::fmt::Debug, P: std::fmt::Debug>(e: NlError<T, P>, what: String) -> Error {
    match e {
        NlError::Nlmsgerr(err) => Error::Kernel {
            what,
            source: io::Error::from_raw_os_error(-err.error),
        },
        NlError::Wrapped(w) => Error::Kernel {
            what,
            source: io::Error::other(w.to_string()),
        },
        other => Error::Kernel {
            what,
            source: io::Error::other(format!("{other:?}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_message_round_trips_through_the_parser() {
        let spec = RuleSpec {
            priority: 32001,
            table: 51820,
            fwmark: Some(0xca6c),
            invert: true,
            suppress_prefixlen: None,
        };
        let msg = Rtnl::rule_msg(&spec, PROTOCOL_ENCLAVE).unwrap();
        let rule = rule_from(&msg).unwrap();
        assert_eq!(rule.spec, spec);
        assert_eq!(rule.protocol, PROTOCOL_ENCLAVE);
        assert_eq!(
            describe_rule(&spec),
            "priority 32001 not fwmark 0xca6c lookup 51820"
        );
    }

    #[test]
    fn route_message_round_trips_through_the_parser() {
        let route = Route {
            dst: "10.20.0.0/16".parse().unwrap(),
            table: 1000,
            metric: 7,
        };
        let msg = Rtnl::route_msg(
            &route,
            Some(3),
            PROTOCOL_ENCLAVE,
            RT_SCOPE_LINK,
            RTN_UNICAST,
        )
        .unwrap();
        let k = route_from(&msg).unwrap();
        assert_eq!(
            (k.dst, k.table, k.metric, k.oif),
            (route.dst, 1000, 7, Some(3))
        );
        assert_eq!((k.protocol, k.kind), (PROTOCOL_ENCLAVE, RTN_UNICAST));
    }

    #[test]
    fn unreachable_default_route_message_round_trips_through_the_parser() {
        let route = Route {
            dst: "0.0.0.0/0".parse().unwrap(),
            table: 17731,
            metric: u32::MAX,
        };
        let msg = Rtnl::route_msg(
            &route,
            None,
            PROTOCOL_ENCLAVE,
            RT_SCOPE_UNIVERSE,
            RTN_UNREACHABLE,
        )
        .unwrap();
        let k = route_from(&msg).unwrap();
        assert_eq!(
            (k.dst, k.table, k.metric, k.oif, k.kind, k.protocol),
            (
                route.dst,
                17731,
                u32::MAX,
                None,
                RTN_UNREACHABLE,
                PROTOCOL_ENCLAVE
            )
        );
    }
}
