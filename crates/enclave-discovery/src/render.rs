//! What `enclave-gw discover` prints: one entry per address of an interface, per interface
//! without an address, and per configured subnet, as a table or as JSON. Pure.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::classify::{Choice, Discovery, Reachability};

/// Where an entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// An interface of the gateway (discovered).
    Interface,
    /// A subnet the gateway is configured to offer (`--subnet`), checked for reachability.
    Configured,
}

/// One line of output: an address of an interface, an interface without an address, or a
/// configured subnet. As JSON, an object with these fields as keys, in this (alphabetical)
/// order, the order the output has always had; a test pins it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The interface's own address in the subnet.
    pub address: Option<Ipv4Addr>,
    /// The interface; for a configured subnet, the one it is reached through, if any.
    pub interface: Option<String>,
    /// Why.
    pub reason: String,
    /// A secondary address.
    pub secondary: bool,
    /// Discovered or configured.
    pub source: Source,
    /// The subnet; none for an interface without an IPv4 address.
    pub subnet: Option<Ipv4Net>,
    /// Offered (an interface's subnet) or reachable (a configured subnet).
    pub taken: bool,
}

impl Entry {
    /// The STATE column: `taken`/`left` for a discovered subnet, `ok`/`UNREACHABLE` for a
    /// configured one.
    pub fn state(&self) -> &'static str {
        match (self.source, self.taken) {
            (Source::Configured, true) => "ok",
            (Source::Configured, false) => "UNREACHABLE",
            (Source::Interface, true) => "taken",
            (Source::Interface, false) => "left",
        }
    }
}

/// The entries, interfaces first (in the discovery's order), then the configured subnets.
pub fn entries(discovery: &Discovery, checks: &[Reachability]) -> Vec<Entry> {
    let mut out = Vec::new();
    for iface in &discovery.interfaces {
        if iface.addresses.is_empty() {
            out.push(Entry {
                subnet: None,
                interface: Some(iface.interface.clone()),
                address: None,
                secondary: false,
                source: Source::Interface,
                taken: false,
                reason: iface.reason.clone(),
            });
        }
        for a in &iface.addresses {
            let taken = a.choice == Choice::Taken;
            out.push(Entry {
                subnet: Some(a.subnet),
                interface: Some(iface.interface.clone()),
                address: Some(a.address),
                secondary: a.secondary,
                source: Source::Interface,
                taken,
                reason: if taken {
                    format!("{}: {}", iface.reason, a.reason)
                } else {
                    a.reason.clone()
                },
            });
        }
    }
    out.extend(checks.iter().map(|c| Entry {
        subnet: Some(c.subnet),
        interface: c.interface.clone(),
        address: None,
        secondary: false,
        source: Source::Configured,
        taken: c.reachable,
        reason: c.reason.clone(),
    }));
    out
}

/// The table `enclave-gw discover` prints: a header line and one line per entry, each ending
/// in a newline.
pub fn table(discovery: &Discovery, checks: &[Reachability]) -> String {
    let mut out = format!(
        "{:<18} {:<12} {:<11} REASON\n",
        "SUBNET", "INTERFACE", "STATE"
    );
    for e in entries(discovery, checks) {
        let subnet = e.subnet.map_or_else(|| "-".to_string(), |s| s.to_string());
        let interface = e.interface.as_deref().unwrap_or("-");
        out.push_str(&format!(
            "{subnet:<18} {interface:<12} {:<11} {}\n",
            e.state(),
            e.reason
        ));
    }
    out
}

/// The JSON `enclave-gw discover --json` prints: a pretty-printed list of the entries, with a
/// final newline.
pub fn json(discovery: &Discovery, checks: &[Reachability]) -> serde_json::Result<String> {
    let mut text = serde_json::to_string_pretty(&entries(discovery, checks))?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::tests::{addr, link};
    use crate::classify::{check_reachability, classify, RouteAnswer};

    /// A gateway with an ethernet device (a primary and a link-local address), a TUN device
    /// and an address-less veth, and two configured subnets: one routed, one not.
    fn example() -> (Discovery, Vec<Reachability>) {
        let links = [
            link(2, "eth0", None, 1, true),
            link(3, "tun9", Some("tun"), 65534, true),
            link(4, "vdown", Some("veth"), 1, false),
        ];
        let addresses = [
            addr(2, "192.168.77.1/24", false),
            addr(2, "192.168.77.2/24", true),
            addr(2, "169.254.7.7/16", false),
            addr(3, "10.200.0.1/24", false),
        ];
        let discovery = classify(&links, &addresses, Some("enclave0"));
        let checks = vec![
            check_reachability(
                "10.99.0.0/16".parse().unwrap(),
                false,
                &RouteAnswer::Via {
                    interface: "eth0".into(),
                    gateway: Some("192.168.77.254".parse().unwrap()),
                },
            ),
            check_reachability(
                "10.98.0.0/16".parse().unwrap(),
                false,
                &RouteAnswer::Unreachable,
            ),
        ];
        (discovery, checks)
    }

    #[test]
    fn the_table_has_a_line_per_address_interface_and_configured_subnet() {
        let (discovery, checks) = example();
        assert_eq!(
            table(&discovery, &checks),
            "\
SUBNET             INTERFACE    STATE       REASON
192.168.77.0/24    eth0         taken       ethernet device, up: unicast address
192.168.77.0/24    eth0         taken       ethernet device, up: secondary unicast address
169.254.0.0/16     eth0         left        link-local 169.254.0.0/16 (auto-configured)
10.200.0.0/24      tun9         left        interface left: TUN/TAP device
-                  vdown        left        veth (ethernet pair), but down
10.99.0.0/16       eth0         ok          routed via 192.168.77.254 on eth0
10.98.0.0/16       -            UNREACHABLE the gateway has no route to it
"
        );
    }

    #[test]
    fn an_empty_discovery_prints_only_the_header() {
        assert_eq!(
            table(&Discovery::default(), &[]),
            "SUBNET             INTERFACE    STATE       REASON\n"
        );
        assert_eq!(json(&Discovery::default(), &[]).unwrap(), "[]\n");
    }

    #[test]
    fn the_json_has_every_field_in_a_fixed_order() {
        let (discovery, checks) = example();
        let text = json(&discovery, &checks).unwrap();
        let first = "\
[
  {
    \"address\": \"192.168.77.1\",
    \"interface\": \"eth0\",
    \"reason\": \"ethernet device, up: unicast address\",
    \"secondary\": false,
    \"source\": \"interface\",
    \"subnet\": \"192.168.77.0/24\",
    \"taken\": true
  },
";
        assert!(text.starts_with(first), "{text}");
        let interfaceless = "  {
    \"address\": null,
    \"interface\": \"vdown\",
    \"reason\": \"veth (ethernet pair), but down\",
    \"secondary\": false,
    \"source\": \"interface\",
    \"subnet\": null,
    \"taken\": false
  },
";
        assert!(text.contains(interfaceless), "{text}");
        let last = "  {
    \"address\": null,
    \"interface\": null,
    \"reason\": \"the gateway has no route to it\",
    \"secondary\": false,
    \"source\": \"configured\",
    \"subnet\": \"10.98.0.0/16\",
    \"taken\": false
  }
]
";
        assert!(text.ends_with(last), "{text}");
        let list: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(list.as_array().map(Vec::len), Some(7));
    }
}
