//! The rtnetlink shell: lists interfaces, IPv4 addresses, routes and rules, adds and deletes
//! routes and rules, with neli. No decisions here.
//!
//! This is the workspace's one rtnetlink layer: the route manager and discovery both go
//! through [`Rtnl`]. It uses neli's plain blocking socket rather than its `NlRouter`, which
//! keeps a thread per socket that wakes ten times a second: the agent holds its socket for as
//! long as it runs, and an idle agent should not wake at all.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{self, Cursor};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use neli::consts::nl::{NlmF, Nlmsg};
use neli::consts::rtnl::{
    FrAct, Frattr, Frf, Ifa, IfaF, Iff, Ifla, IflaInfo, RtAddrFamily, RtScope, RtTable, Rta,
    RtaType, Rtm, Rtn, Rtprot,
};
use neli::consts::socket::NlFamily;
use neli::err::SocketError;
use neli::nl::{NlPayload, NlmsghdrBuilder};
use neli::rtnl::{
    Fibmsg, FibmsgBuilder, Ifaddrmsg, IfaddrmsgBuilder, Ifinfomsg, IfinfomsgBuilder, Rtattr,
    RtattrBuilder, Rtmsg, RtmsgBuilder,
};
use neli::socket::synchronous::NlSocketHandle;
use neli::types::{Buffer, RtBuffer};
use neli::utils::Groups;
use neli::{FromBytesWithInput, Size, ToBytes};

use crate::plan::{KernelRoute, KernelRule, Route, RuleSpec, PROTOCOL_ENCLAVE};
use crate::{Error, Result};

const RT_TABLE_UNSPEC: u8 = libc::RT_TABLE_UNSPEC;
const RTN_UNICAST: u8 = libc::RTN_UNICAST;
const RTN_BLACKHOLE: u8 = libc::RTN_BLACKHOLE;
const RTN_UNREACHABLE: u8 = libc::RTN_UNREACHABLE;
const RTN_PROHIBIT: u8 = libc::RTN_PROHIBIT;
const RT_SCOPE_UNIVERSE: u8 = libc::RT_SCOPE_UNIVERSE;
const RT_SCOPE_LINK: u8 = libc::RT_SCOPE_LINK;
const RT_SCOPE_NOWHERE: u8 = libc::RT_SCOPE_NOWHERE;

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

/// One network interface, as the kernel lists it (`ip -d link`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// `IFLA_INFO_KIND` (`veth`, `bridge`, `vlan`, `tun`, `wireguard`, ...); none for hardware.
    pub kind: Option<String>,
    /// `ifi_type` (`ARPHRD_*`).
    pub link_type: u16,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
}

/// One IPv4 address of an interface (`ip -4 addr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// The interface's index.
    pub index: u32,
    /// The address (`IFA_LOCAL`).
    pub addr: Ipv4Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// `IFA_F_SECONDARY`.
    pub secondary: bool,
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

/// Why one request failed, before it is put into the words of the request.
#[derive(Debug)]
enum Failure {
    /// The socket failed (`what` we did with it).
    Socket(&'static str, io::Error),
    /// The kernel answered with this errno.
    Refused(i32),
    /// An answer could not be decoded, or a request not encoded.
    Malformed(String),
}

impl Failure {
    fn into_error(self, what: String) -> Error {
        match self {
            Failure::Socket(what, source) => Error::Socket { what, source },
            Failure::Refused(errno) => Error::Kernel {
                what,
                source: io::Error::from_raw_os_error(errno),
            },
            Failure::Malformed(detail) => Error::Message { what, detail },
        }
    }
}

fn socket_io(e: SocketError) -> io::Error {
    match e {
        SocketError::Io(e) => e.raw_os_error().map_or_else(
            || io::Error::new(e.kind(), e.to_string()),
            io::Error::from_raw_os_error,
        ),
        other => io::Error::other(other.to_string()),
    }
}

fn malformed(e: impl std::fmt::Display) -> Failure {
    Failure::Malformed(e.to_string())
}

fn attr<T: RtaType>(ty: T, payload: &[u8]) -> std::result::Result<Rtattr<T, Buffer>, Failure> {
    RtattrBuilder::default()
        .rta_type(ty)
        .rta_payload(Buffer::from(payload))
        .build()
        .map_err(malformed)
}

fn attr_bytes<T: RtaType>(attrs: &RtBuffer<T, Buffer>, ty: T) -> Option<&[u8]> {
    attrs
        .iter()
        .find(|a| *a.rta_type() == ty)
        .map(|a| a.rta_payload().as_ref())
}

fn attr_u32<T: RtaType>(attrs: &RtBuffer<T, Buffer>, ty: T) -> Option<u32> {
    attr_bytes(attrs, ty)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_ne_bytes)
}

fn attr_v4<T: RtaType>(attrs: &RtBuffer<T, Buffer>, ty: T) -> Option<Ipv4Addr> {
    attr_bytes(attrs, ty)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(Ipv4Addr::from)
}

/// A NUL-terminated name attribute as a string.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn rtmsg(
    dst_len: u8,
    table: u8,
    protocol: u8,
    scope: u8,
    kind: u8,
    attrs: Vec<Rtattr<Rta, Buffer>>,
) -> std::result::Result<Rtmsg, Failure> {
    RtmsgBuilder::default()
        .rtm_family(RtAddrFamily::Inet)
        .rtm_dst_len(dst_len)
        .rtm_src_len(0)
        .rtm_tos(0)
        .rtm_table(RtTable::from(table))
        .rtm_protocol(Rtprot::from(protocol))
        .rtm_scope(RtScope::from(scope))
        .rtm_type(Rtn::from(kind))
        .rtattrs(attrs.into_iter().collect())
        .build()
        .map_err(malformed)
}

fn fibmsg(
    table: u8,
    action: FrAct,
    flags: Frf,
    attrs: Vec<Rtattr<Frattr, Buffer>>,
) -> std::result::Result<Fibmsg, Failure> {
    FibmsgBuilder::default()
        .fib_family(RtAddrFamily::Inet)
        .fib_dst_len(0)
        .fib_src_len(0)
        .fib_tos(0)
        .fib_table(RtTable::from(table))
        .fib_action(action)
        .fib_flags(flags)
        .rtattrs(attrs.into_iter().collect())
        .build()
        .map_err(malformed)
}

/// Turns a table id into the header's 8-bit field; big ids travel in `RTA_TABLE`.
fn table_byte(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(RT_TABLE_UNSPEC)
}

fn route_from(msg: &Rtmsg) -> Option<KernelRoute> {
    if *msg.rtm_family() != RtAddrFamily::Inet {
        return None;
    }
    let attrs = msg.rtattrs();
    let dst = attr_v4(attrs, Rta::Dst).unwrap_or(Ipv4Addr::UNSPECIFIED);
    let dst = Ipv4Net::new(dst, *msg.rtm_dst_len()).ok()?;
    Some(KernelRoute {
        dst,
        table: attr_u32(attrs, Rta::Table).unwrap_or(u8::from(*msg.rtm_table()).into()),
        metric: attr_u32(attrs, Rta::Priority).unwrap_or(0),
        oif: attr_u32(attrs, Rta::Oif),
        gateway: attr_v4(attrs, Rta::Gateway),
        protocol: (*msg.rtm_protocol()).into(),
        kind: (*msg.rtm_type()).into(),
        scope: (*msg.rtm_scope()).into(),
    })
}

fn rule_from(msg: &Fibmsg) -> Option<KernelRule> {
    if *msg.fib_family() != RtAddrFamily::Inet || *msg.fib_action() != FrAct::FrActToTbl {
        return None;
    }
    let attrs = msg.rtattrs();
    let mask = attr_u32(attrs, Frattr::Fwmask).unwrap_or(u32::MAX);
    let fwmark = attr_u32(attrs, Frattr::Fwmark).filter(|_| mask == u32::MAX);
    let protocol = attr_bytes(attrs, Frattr::Protocol)
        .and_then(|b| b.first().copied())
        .unwrap_or(0);
    let suppress = attr_u32(attrs, Frattr::SuppressPrefixlen).filter(|&v| v != u32::MAX);
    Some(KernelRule {
        spec: RuleSpec {
            priority: attr_u32(attrs, Frattr::Priority).unwrap_or(0),
            table: attr_u32(attrs, Frattr::Table).unwrap_or(u8::from(*msg.fib_table()).into()),
            fwmark,
            invert: msg.fib_flags().contains(Frf::INVERT),
            suppress_prefixlen: suppress,
        },
        protocol,
    })
}

fn interface_from(msg: &Ifinfomsg) -> Option<Interface> {
    let index = u32::try_from(*msg.ifi_index()).ok()?;
    let handle = msg.rtattrs().get_attr_handle();
    let name = c_string(handle.get_attribute(Ifla::Ifname)?.rta_payload().as_ref());
    let kind = handle
        .get_nested_attributes::<IflaInfo>(Ifla::Linkinfo)
        .ok()
        .and_then(|info| {
            info.get_attribute(IflaInfo::Kind)
                .map(|k| c_string(k.rta_payload().as_ref()))
        });
    Some(Interface {
        index,
        name,
        kind,
        link_type: (*msg.ifi_type()).into(),
        up: msg.ifi_flags().contains(Iff::UP),
    })
}

fn address_from(msg: &Ifaddrmsg) -> Option<InterfaceAddress> {
    if *msg.ifa_family() != RtAddrFamily::Inet {
        return None;
    }
    let attrs = msg.rtattrs();
    let addr = attr_v4(attrs, Ifa::Local).or_else(|| attr_v4(attrs, Ifa::Address))?;
    Some(InterfaceAddress {
        index: *msg.ifa_index(),
        addr,
        prefix_len: *msg.ifa_prefixlen(),
        secondary: msg.ifa_flags().contains(IfaF::SECONDARY),
    })
}

impl Rtnl {
    /// Opens a NETLINK_ROUTE socket in the calling thread's namespace.
    pub fn open() -> Result<Self> {
        let sock =
            NlSocketHandle::connect(NlFamily::Route, None, Groups::empty()).map_err(|e| {
                Error::Socket {
                    what: "open a NETLINK_ROUTE socket",
                    source: socket_io(e),
                }
            })?;
        Ok(Rtnl { sock, seq: 0 })
    }

    /// Sends one request and hands every answer's payload to `each`, until the request is
    /// complete: the end of a dump (`NlmF::DUMP`), the acknowledgement (`NlmF::ACK`), or else
    /// the one answer. Answers to earlier requests (a failed dump's rest) are skipped.
    fn exchange<S, R>(
        &mut self,
        ty: Rtm,
        flags: NlmF,
        request: S,
        mut each: impl FnMut(R),
    ) -> std::result::Result<(), Failure>
    where
        S: Size + ToBytes + Debug,
        R: Size + FromBytesWithInput<Input = usize>,
    {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = NlmsghdrBuilder::default()
            .nl_type(ty)
            .nl_flags(flags | NlmF::REQUEST)
            .nl_seq(seq)
            .nl_payload(NlPayload::Payload(request))
            .build()
            .map_err(malformed)?;
        self.sock
            .send(&msg)
            .map_err(|e| Failure::Socket("send a request", socket_io(e)))?;
        let single = !flags.intersects(NlmF::DUMP | NlmF::ACK);
        loop {
            let (answers, _) = self
                .sock
                .recv::<u16, Buffer>()
                .map_err(|e| Failure::Socket("receive an answer", socket_io(e)))?;
            for answer in answers {
                let answer =
                    answer.map_err(|e| Failure::Socket("receive an answer", socket_io(e)))?;
                if *answer.nl_seq() != seq {
                    continue;
                }
                let done = *answer.nl_type() == u16::from(Nlmsg::Done);
                match answer.nl_payload() {
                    NlPayload::Err(e) => return Err(Failure::Refused(-*e.error())),
                    NlPayload::DumpExtAck(e) if *e.error() != 0 => {
                        return Err(Failure::Refused(-*e.error()))
                    }
                    NlPayload::Ack(_) | NlPayload::DumpExtAck(_) => return Ok(()),
                    NlPayload::Payload(_) | NlPayload::Empty if done => return Ok(()),
                    NlPayload::Empty => {}
                    NlPayload::Payload(bytes) => {
                        let mut cursor = Cursor::new(bytes.as_ref());
                        each(
                            R::from_bytes_with_input(&mut cursor, bytes.len())
                                .map_err(malformed)?,
                        );
                        if single {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// Dumps every object of one kind and keeps what `keep` makes of each.
    fn dump<S, R, T>(
        &mut self,
        ty: Rtm,
        request: std::result::Result<S, Failure>,
        what: &str,
        keep: impl Fn(&R) -> Option<T>,
    ) -> Result<Vec<T>>
    where
        S: Size + ToBytes + Debug,
        R: Size + FromBytesWithInput<Input = usize>,
    {
        let mut out = Vec::new();
        request
            .and_then(|request| self.exchange(ty, NlmF::DUMP, request, |r: R| out.extend(keep(&r))))
            .map_err(|f| f.into_error(what.to_string()))?;
        Ok(out)
    }

    /// Sends one change that the kernel acknowledges.
    fn change<S>(
        &mut self,
        ty: Rtm,
        flags: NlmF,
        request: std::result::Result<S, Failure>,
        what: String,
    ) -> Result<()>
    where
        S: Size + ToBytes + Debug,
    {
        request
            .and_then(|request| self.exchange(ty, flags | NlmF::ACK, request, |_: Buffer| {}))
            .map_err(|f| f.into_error(what))
    }

    /// Every interface of the namespace, with its kind and whether it is up.
    pub fn interfaces(&mut self) -> Result<Vec<Interface>> {
        let request = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .build()
            .map_err(malformed);
        self.dump(Rtm::Getlink, request, "list interfaces", interface_from)
    }

    /// Every IPv4 address of every interface, secondary ones included.
    pub fn ipv4_addresses(&mut self) -> Result<Vec<InterfaceAddress>> {
        let request = IfaddrmsgBuilder::default()
            .ifa_family(RtAddrFamily::Inet)
            .ifa_prefixlen(0)
            .ifa_scope(RtScope::Universe)
            .ifa_index(0)
            .build()
            .map_err(malformed);
        self.dump(Rtm::Getaddr, request, "list addresses", address_from)
    }

    /// Interface names by index.
    pub fn links(&mut self) -> Result<BTreeMap<u32, String>> {
        Ok(self
            .interfaces()?
            .into_iter()
            .map(|i| (i.index, i.name))
            .collect())
    }

    /// The index of the interface called `name` when it exists and is up. A down interface
    /// can carry no routes (the kernel flushes them and refuses new ones), so it counts as
    /// absent.
    pub fn usable_link(&mut self, name: &str) -> Result<Option<u32>> {
        Ok(self
            .interfaces()?
            .into_iter()
            .find(|i| i.name == name && i.up)
            .map(|i| i.index))
    }

    /// Every IPv4 route of every table.
    pub fn routes(&mut self) -> Result<Vec<KernelRoute>> {
        let request = rtmsg(0, RT_TABLE_UNSPEC, 0, 0, 0, Vec::new());
        self.dump(Rtm::Getroute, request, "list routes", route_from)
    }

    /// Every IPv4 policy routing rule.
    pub fn rules(&mut self) -> Result<Vec<KernelRule>> {
        let request = fibmsg(RT_TABLE_UNSPEC, FrAct::Unspec, Frf::empty(), Vec::new());
        self.dump(Rtm::Getrule, request, "list routing rules", rule_from)
    }

    fn route_msg(
        route: &Route,
        oif: Option<u32>,
        protocol: u8,
        scope: u8,
        kind: u8,
    ) -> std::result::Result<Rtmsg, Failure> {
        let mut attrs = vec![attr(Rta::Table, &route.table.to_ne_bytes())?];
        if route.dst.prefix_len() > 0 {
            attrs.push(attr(Rta::Dst, &route.dst.network().octets())?);
        }
        if route.metric != 0 {
            attrs.push(attr(Rta::Priority, &route.metric.to_ne_bytes())?);
        }
        if let Some(oif) = oif {
            attrs.push(attr(Rta::Oif, &oif.to_ne_bytes())?);
        }
        rtmsg(
            route.dst.prefix_len(),
            table_byte(route.table),
            protocol,
            scope,
            kind,
            attrs,
        )
    }

    /// Adds `route` through interface `oif`, marked as ours. Fails if it exists already.
    pub fn add_route(&mut self, route: &Route, oif: u32) -> Result<()> {
        self.add(route, Some(oif))
    }

    /// Adds `route` as an `unreachable` route (no interface), marked as ours: what it matches
    /// is refused with "no route to host". Fails if a route with the same destination, table
    /// and metric exists already.
    pub fn add_unreachable(&mut self, route: &Route) -> Result<()> {
        self.add(route, None)
    }

    /// Adds a route of ours: through `oif`, or without one an `unreachable` route.
    fn add(&mut self, route: &Route, oif: Option<u32>) -> Result<()> {
        let (scope, kind, kind_word, via) = match oif {
            Some(oif) => (
                RT_SCOPE_LINK,
                RTN_UNICAST,
                "",
                format!(" via interface {oif}"),
            ),
            None => (
                RT_SCOPE_UNIVERSE,
                RTN_UNREACHABLE,
                "unreachable ",
                String::new(),
            ),
        };
        let msg = Self::route_msg(route, oif, PROTOCOL_ENCLAVE, scope, kind);
        let what = format!(
            "add {kind_word}route {} table {} metric {}{via}",
            route.dst, route.table, route.metric
        );
        self.change(Rtm::Newroute, NlmF::CREATE | NlmF::EXCL, msg, what)
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
        );
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
        self.change(Rtm::Delroute, NlmF::empty(), msg, what)
    }

    /// A FIB rule message (`struct fib_rule_hdr` and its `FRA_*` attributes).
    fn rule_msg(spec: &RuleSpec, protocol: u8) -> std::result::Result<Fibmsg, Failure> {
        let mut attrs = vec![
            attr(Frattr::Priority, &spec.priority.to_ne_bytes())?,
            attr(Frattr::Table, &spec.table.to_ne_bytes())?,
            attr(Frattr::Protocol, &[protocol])?,
        ];
        if let Some(mark) = spec.fwmark {
            attrs.push(attr(Frattr::Fwmark, &mark.to_ne_bytes())?);
            attrs.push(attr(Frattr::Fwmask, &u32::MAX.to_ne_bytes())?);
        }
        if let Some(len) = spec.suppress_prefixlen {
            attrs.push(attr(Frattr::SuppressPrefixlen, &len.to_ne_bytes())?);
        }
        let flags = if spec.invert {
            Frf::INVERT
        } else {
            Frf::empty()
        };
        fibmsg(table_byte(spec.table), FrAct::FrActToTbl, flags, attrs)
    }

    /// Adds a policy routing rule, marked as ours.
    pub fn add_rule(&mut self, spec: &RuleSpec) -> Result<()> {
        let msg = Self::rule_msg(spec, PROTOCOL_ENCLAVE);
        let what = format!("add rule {}", describe_rule(spec));
        self.change(Rtm::Newrule, NlmF::CREATE | NlmF::EXCL, msg, what)
    }

    /// Deletes exactly this rule.
    pub fn delete_rule(&mut self, rule: &KernelRule) -> Result<()> {
        let msg = Self::rule_msg(&rule.spec, rule.protocol);
        let what = format!("delete rule {}", describe_rule(&rule.spec));
        self.change(Rtm::Delrule, NlmF::empty(), msg, what)
    }

    /// Asks the kernel where it would send a packet to `dst` (`ip route get DST`).
    ///
    /// `Ok(None)` when it has no route at all; a blackhole, unreachable or prohibit route comes
    /// back with that `kind` (6, 7, 8) and no interface.
    pub fn route_to(&mut self, dst: Ipv4Addr) -> Result<Option<RouteLookup>> {
        let mut found = None;
        let answer = attr(Rta::Dst, &dst.octets())
            .and_then(|a| rtmsg(32, RT_TABLE_UNSPEC, 0, 0, 0, vec![a]))
            .and_then(|request| {
                self.exchange(Rtm::Getroute, NlmF::empty(), request, |r: Rtmsg| {
                    let attrs = r.rtattrs();
                    found = Some(RouteLookup {
                        kind: (*r.rtm_type()).into(),
                        oif: attr_u32(attrs, Rta::Oif),
                        gateway: attr_v4(attrs, Rta::Gateway),
                    });
                })
            });
        match answer {
            Ok(()) => Ok(found),
            Err(Failure::Refused(libc::ENETUNREACH)) => Ok(None),
            // The kernel answers a lookup that hits a blackhole, unreachable or prohibit route
            // with an error; say which route type it was.
            Err(Failure::Refused(errno @ (libc::EINVAL | libc::EHOSTUNREACH | libc::EACCES))) => {
                let kind = match errno {
                    libc::EINVAL => RTN_BLACKHOLE,
                    libc::EHOSTUNREACH => RTN_UNREACHABLE,
                    _ => RTN_PROHIBIT,
                };
                Ok(Some(RouteLookup {
                    kind,
                    oif: None,
                    gateway: None,
                }))
            }
            Err(f) => Err(f.into_error(format!("look up the route to {dst}"))),
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

    /// The rule header goes out as the kernel's `struct fib_rule_hdr`: family, dst_len, src_len,
    /// tos, table, two reserved bytes, action, then the flags; `FRA_*` attributes follow.
    #[test]
    fn rule_message_has_the_layout_of_fib_rule_hdr() {
        let spec = RuleSpec {
            priority: 32000,
            table: 17731,
            fwmark: Some(0x4543),
            invert: true,
            suppress_prefixlen: None,
        };
        let msg = Rtnl::rule_msg(&spec, PROTOCOL_ENCLAVE).unwrap();
        let mut bytes = Cursor::new(Vec::new());
        msg.to_bytes(&mut bytes).unwrap();
        let bytes = bytes.into_inner();
        let mut header = vec![libc::AF_INET as u8, 0, 0, 0, RT_TABLE_UNSPEC, 0, 0, 1];
        header.extend_from_slice(&2u32.to_ne_bytes()); // FIB_RULE_INVERT
        assert_eq!(&bytes[..12], header.as_slice());
        // The first attribute: FRA_PRIORITY (6), 8 bytes long, the priority.
        let mut priority = 8u16.to_ne_bytes().to_vec();
        priority.extend_from_slice(&6u16.to_ne_bytes());
        priority.extend_from_slice(&32000u32.to_ne_bytes());
        assert_eq!(&bytes[12..20], priority.as_slice());
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
