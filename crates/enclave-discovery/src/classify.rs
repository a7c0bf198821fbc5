//! The pure part: plain facts about links and addresses in, decisions with reasons out.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use enclave_route::Interface;
use ipnet::Ipv4Net;
use serde::Serialize;

/// `ARPHRD_ETHER`: ethernet, and wireless devices too (they present as ethernet).
pub const ARPHRD_ETHER: u16 = 1;
/// `ARPHRD_LOOPBACK`.
pub const ARPHRD_LOOPBACK: u16 = 772;

/// What the kernel says about one interface: the route crate's [`Interface`] and whether
/// nl80211 knows it as wireless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
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
    /// A wireless device (nl80211 knows it).
    pub wireless: bool,
}

impl Link {
    /// The interface as the route crate's rtnetlink dump lists it, with what nl80211 says.
    pub(crate) fn new(interface: Interface, wireless: bool) -> Self {
        Link {
            index: interface.index,
            name: interface.name,
            kind: interface.kind,
            link_type: interface.link_type,
            up: interface.up,
            wireless,
        }
    }
}

/// One IPv4 address of an interface: the route crate's, as its rtnetlink dump reads it.
pub use enclave_route::InterfaceAddress as Address;

/// Taken or left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Choice {
    /// Offered.
    Taken,
    /// Not offered.
    Left,
}

/// One address of an interface and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Offer {
    /// The subnet the address belongs to.
    pub subnet: Ipv4Net,
    /// The address itself.
    pub address: Ipv4Addr,
    /// A secondary address.
    pub secondary: bool,
    /// Taken or left.
    pub choice: Choice,
    /// Why.
    pub reason: String,
}

/// One interface and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfaceReport {
    /// Its name.
    pub interface: String,
    /// Taken when at least one of its subnets is offered.
    pub choice: Choice,
    /// Why the interface as a whole was taken or left.
    pub reason: String,
    /// Its IPv4 addresses, each with its own verdict.
    pub addresses: Vec<Offer>,
}

/// The result of discovery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Discovery {
    /// Every interface, by index order.
    pub interfaces: Vec<InterfaceReport>,
}

impl Discovery {
    /// The subnets offered, each once, with the interface that carries it.
    pub fn subnets(&self) -> BTreeMap<Ipv4Net, String> {
        let mut out = BTreeMap::new();
        for iface in &self.interfaces {
            for a in iface.addresses.iter().filter(|a| a.choice == Choice::Taken) {
                out.entry(a.subnet)
                    .or_insert_with(|| iface.interface.clone());
            }
        }
        out
    }
}

/// Why an interface kind counts, or `Err(reason)` why it does not.
fn judge_link(link: &Link, tunnel: Option<&str>) -> Result<String, String> {
    if tunnel == Some(link.name.as_str()) {
        return Err("our own tunnel interface".into());
    }
    if link.link_type == ARPHRD_LOOPBACK {
        return Err("loopback".into());
    }
    let kind = link.kind.as_deref();
    match kind {
        Some("tun") => return Err("TUN/TAP device".into()),
        Some("wireguard") => return Err("WireGuard tunnel".into()),
        Some("dummy") => return Err("dummy device (virtual, no network behind it)".into()),
        Some(k @ ("vxlan" | "geneve" | "gretap" | "ip6gretap" | "erspan")) => {
            return Err(format!("{k} tunnel"))
        }
        _ => {}
    }
    if link.link_type != ARPHRD_ETHER {
        return Err(format!(
            "not an ethernet or wireless device (link type {}{})",
            link.link_type,
            kind.map_or_else(String::new, |k| format!(", {k}"))
        ));
    }
    let what = match kind {
        None if link.wireless => "wireless device".to_string(),
        None => "ethernet device".to_string(),
        Some("bridge") => "bridge".to_string(),
        Some("vlan") => "VLAN".to_string(),
        Some("bond") => "bond".to_string(),
        Some("veth") => "veth (ethernet pair)".to_string(),
        Some(k @ ("macvlan" | "macvtap" | "ipvlan" | "team")) => k.to_string(),
        Some(k) => return Err(format!("{k} device: not ethernet or wireless")),
    };
    if !link.up {
        return Err(format!("{what}, but down"));
    }
    Ok(format!("{what}, up"))
}

/// Why an address is offered, or `Err(reason)` why not.
fn judge_address(a: &Address) -> (Ipv4Net, Result<String, String>) {
    let net = Ipv4Net::new(a.addr, a.prefix_len.min(32))
        .unwrap_or_else(|_| Ipv4Net::from(a.addr))
        .trunc();
    let verdict = if a.addr.is_link_local() {
        Err("link-local 169.254.0.0/16 (auto-configured)".to_string())
    } else if a.addr.is_multicast() {
        Err("multicast address".to_string())
    } else if a.addr.is_broadcast() || (net.prefix_len() < 31 && a.addr == net.broadcast()) {
        Err("broadcast address".to_string())
    } else if a.addr.is_loopback() {
        Err("loopback address".to_string())
    } else if a.addr.is_unspecified() {
        Err("unspecified address".to_string())
    } else if a.secondary {
        Ok("secondary unicast address".to_string())
    } else {
        Ok("unicast address".to_string())
    };
    (net, verdict)
}

/// Decides, for every interface and every IPv4 address, whether it is offered and why.
///
/// `tunnel` is the name of our own tunnel interface, which is never offered.
pub fn classify(links: &[Link], addresses: &[Address], tunnel: Option<&str>) -> Discovery {
    let mut links: Vec<&Link> = links.iter().collect();
    links.sort_by_key(|l| l.index);
    let mut out = Discovery::default();
    for link in links {
        let judged = judge_link(link, tunnel);
        let mut offers = Vec::new();
        for a in addresses.iter().filter(|a| a.index == link.index) {
            let (subnet, verdict) = judge_address(a);
            let (choice, reason) = match (&judged, verdict) {
                (Err(why), _) => (Choice::Left, format!("interface left: {why}")),
                (Ok(_), Ok(why)) => (Choice::Taken, why),
                (Ok(_), Err(why)) => (Choice::Left, why),
            };
            offers.push(Offer {
                subnet,
                address: a.addr,
                secondary: a.secondary,
                choice,
                reason,
            });
        }
        let (choice, reason) = match judged {
            Err(why) => (Choice::Left, why),
            Ok(_) if offers.is_empty() => (Choice::Left, "no IPv4 address".to_string()),
            Ok(why) if offers.iter().all(|o| o.choice == Choice::Left) => (
                Choice::Left,
                format!("{why}, but no usable IPv4 unicast address"),
            ),
            Ok(why) => (Choice::Taken, why),
        };
        out.interfaces.push(InterfaceReport {
            interface: link.name.clone(),
            choice,
            reason,
            addresses: offers,
        });
    }
    out
}

/// What a route lookup (`ip route get`) answered for one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAnswer {
    /// A unicast route out of this interface, through this gateway when it has one.
    Via {
        /// The egress interface's name.
        interface: String,
        /// The next hop.
        gateway: Option<Ipv4Addr>,
    },
    /// A route that is not a unicast route out of an interface (local, blackhole, ...).
    Other {
        /// Its `rtm_type`.
        kind: u8,
    },
    /// No route at all.
    Unreachable,
}

/// Whether a configured subnet is reachable from the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reachability {
    /// The configured subnet.
    pub subnet: Ipv4Net,
    /// The egress interface, when reachable.
    pub interface: Option<String>,
    /// Reachable or not.
    pub reachable: bool,
    /// Why.
    pub reason: String,
}

/// Judges a configured subnet from the route lookup for its first usable address.
///
/// `connected` is whether the subnet lies inside a discovered (directly connected) one.
pub fn check_reachability(subnet: Ipv4Net, connected: bool, answer: &RouteAnswer) -> Reachability {
    if subnet.prefix_len() == 0 {
        return Reachability {
            subnet,
            interface: None,
            reachable: true,
            reason: "default route: reachability is the Internet's, not checked".into(),
        };
    }
    match answer {
        RouteAnswer::Via { interface, gateway } => Reachability {
            subnet,
            interface: Some(interface.clone()),
            reachable: true,
            reason: match (connected, gateway) {
                (true, _) => format!("directly connected on {interface}"),
                (false, Some(gw)) => format!("routed via {gw} on {interface}"),
                (false, None) => format!("routed out of {interface}"),
            },
        },
        RouteAnswer::Other { kind } => Reachability {
            subnet,
            interface: None,
            reachable: false,
            reason: format!(
                "the gateway's route to it is not a unicast route out of an interface ({})",
                match kind {
                    2 => "local".to_string(),
                    6 => "blackhole".to_string(),
                    7 => "unreachable".to_string(),
                    8 => "prohibit".to_string(),
                    k => format!("route type {k}"),
                }
            ),
        },
        RouteAnswer::Unreachable => Reachability {
            subnet,
            interface: None,
            reachable: false,
            reason: "the gateway has no route to it".into(),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn link(
        index: u32,
        name: &str,
        kind: Option<&str>,
        link_type: u16,
        up: bool,
    ) -> Link {
        Link {
            index,
            name: name.into(),
            kind: kind.map(Into::into),
            link_type,
            up,
            wireless: false,
        }
    }

    pub(crate) fn addr(index: u32, cidr: &str, secondary: bool) -> Address {
        let net: Ipv4Net = cidr.parse().unwrap();
        Address {
            index,
            addr: net.addr(),
            prefix_len: net.prefix_len(),
            secondary,
        }
    }

    fn render(d: &Discovery) -> String {
        let mut s = String::new();
        for i in &d.interfaces {
            s.push_str(&format!("{} {:?}: {}\n", i.interface, i.choice, i.reason));
            for a in &i.addresses {
                s.push_str(&format!(
                    "  {} ({}) {:?}: {}\n",
                    a.subnet, a.address, a.choice, a.reason
                ));
            }
        }
        s
    }

    #[test]
    fn a_gateway_with_every_kind_of_interface() {
        let links = vec![
            link(1, "lo", None, ARPHRD_LOOPBACK, true),
            link(2, "eth0", None, ARPHRD_ETHER, true),
            link(3, "br0", Some("bridge"), ARPHRD_ETHER, true),
            link(4, "eth0.100", Some("vlan"), ARPHRD_ETHER, true),
            link(5, "tun9", Some("tun"), 65534, true),
            link(6, "wg0", Some("wireguard"), 65534, true),
            link(7, "enc0", None, 65534, true),
            link(8, "veth9", Some("veth"), ARPHRD_ETHER, false),
            link(9, "dummy0", Some("dummy"), ARPHRD_ETHER, true),
            link(10, "eth1", None, ARPHRD_ETHER, true),
            link(11, "gre1", Some("gre"), 778, true),
            Link {
                wireless: true,
                ..link(12, "wlan0", None, ARPHRD_ETHER, true)
            },
        ];
        let addrs = vec![
            addr(1, "127.0.0.1/8", false),
            addr(2, "192.168.77.1/24", false),
            addr(2, "192.168.77.2/24", true),
            addr(2, "10.5.0.1/16", false),
            addr(2, "169.254.7.7/16", false),
            addr(3, "172.20.0.1/24", false),
            addr(4, "10.100.0.1/24", false),
            addr(5, "10.200.0.1/24", false),
            addr(6, "100.64.0.9/10", false),
            addr(7, "100.64.0.1/10", false),
            addr(8, "10.8.0.1/24", false),
            addr(9, "10.9.0.1/24", false),
            addr(11, "10.11.0.1/30", false),
            addr(12, "192.168.1.23/24", false),
        ];
        let d = classify(&links, &addrs, Some("enc0"));
        let expected = "\
lo Left: loopback
  127.0.0.0/8 (127.0.0.1) Left: interface left: loopback
eth0 Taken: ethernet device, up
  192.168.77.0/24 (192.168.77.1) Taken: unicast address
  192.168.77.0/24 (192.168.77.2) Taken: secondary unicast address
  10.5.0.0/16 (10.5.0.1) Taken: unicast address
  169.254.0.0/16 (169.254.7.7) Left: link-local 169.254.0.0/16 (auto-configured)
br0 Taken: bridge, up
  172.20.0.0/24 (172.20.0.1) Taken: unicast address
eth0.100 Taken: VLAN, up
  10.100.0.0/24 (10.100.0.1) Taken: unicast address
tun9 Left: TUN/TAP device
  10.200.0.0/24 (10.200.0.1) Left: interface left: TUN/TAP device
wg0 Left: WireGuard tunnel
  100.64.0.0/10 (100.64.0.9) Left: interface left: WireGuard tunnel
enc0 Left: our own tunnel interface
  100.64.0.0/10 (100.64.0.1) Left: interface left: our own tunnel interface
veth9 Left: veth (ethernet pair), but down
  10.8.0.0/24 (10.8.0.1) Left: interface left: veth (ethernet pair), but down
dummy0 Left: dummy device (virtual, no network behind it)
  10.9.0.0/24 (10.9.0.1) Left: interface left: dummy device (virtual, no network behind it)
eth1 Left: no IPv4 address
gre1 Left: not an ethernet or wireless device (link type 778, gre)
  10.11.0.0/30 (10.11.0.1) Left: interface left: not an ethernet or wireless device (link type 778, gre)
wlan0 Taken: wireless device, up
  192.168.1.0/24 (192.168.1.23) Taken: unicast address
";
        assert_eq!(render(&d), expected);
        let subnets: Vec<String> = d.subnets().keys().map(ToString::to_string).collect();
        assert_eq!(
            subnets,
            [
                "10.5.0.0/16",
                "10.100.0.0/24",
                "172.20.0.0/24",
                "192.168.1.0/24",
                "192.168.77.0/24"
            ]
        );
    }

    #[test]
    fn multicast_and_broadcast_addresses_are_left() {
        let links = vec![link(2, "eth0", None, ARPHRD_ETHER, true)];
        let addrs = vec![
            addr(2, "224.0.0.5/24", false),
            addr(2, "10.0.0.255/24", false),
            addr(2, "10.1.0.1/32", false),
        ];
        let d = classify(&links, &addrs, None);
        let choices: Vec<(Choice, &str)> = d.interfaces[0]
            .addresses
            .iter()
            .map(|a| (a.choice, a.reason.as_str()))
            .collect();
        assert_eq!(
            choices,
            [
                (Choice::Left, "multicast address"),
                (Choice::Left, "broadcast address"),
                (Choice::Taken, "unicast address"),
            ]
        );
    }

    #[test]
    fn an_interface_with_only_link_local_addresses_is_left_and_says_so() {
        let links = vec![link(2, "eth0", None, ARPHRD_ETHER, true)];
        let d = classify(&links, &[addr(2, "169.254.1.1/16", false)], None);
        assert_eq!(d.interfaces[0].choice, Choice::Left);
        assert_eq!(
            d.interfaces[0].reason,
            "ethernet device, up, but no usable IPv4 unicast address"
        );
        assert!(d.subnets().is_empty());
    }

    #[test]
    fn reachability_of_configured_subnets() {
        let net: Ipv4Net = "10.99.0.0/16".parse().unwrap();
        let via = RouteAnswer::Via {
            interface: "eth0".into(),
            gateway: Some("192.168.77.254".parse().unwrap()),
        };
        let r = check_reachability(net, false, &via);
        assert!(r.reachable);
        assert_eq!(r.reason, "routed via 192.168.77.254 on eth0");
        let r = check_reachability(net, false, &RouteAnswer::Unreachable);
        assert!(!r.reachable);
        assert_eq!(r.reason, "the gateway has no route to it");
        let r = check_reachability(net, false, &RouteAnswer::Other { kind: 6 });
        assert!(!r.reachable);
        assert!(r.reason.ends_with("(blackhole)"), "{}", r.reason);
        let r = check_reachability(
            "0.0.0.0/0".parse().unwrap(),
            false,
            &RouteAnswer::Unreachable,
        );
        assert!(r.reachable);
    }
}
