//! A default route means the Internet: a `0.0.0.0/0` grant never reaches what another policy's
//! subnet filter keeps out, on the same gateway.

use std::net::Ipv4Addr;

use enclave_policy::{Protocol, View};

mod common;
use common::admits;

/// The subnets of the example's `menlo-gw-1`, and the same with a default route added.
const MENLO_GW_1: &str = "subnets = [\"192.168.77.0/24\"]\nauto_discover = true\npriority = 10\n";
const MENLO_GW_1_WITH_A_DEFAULT_ROUTE: &str =
    "subnets = [\"192.168.77.0/24\", \"0.0.0.0/0\"]\nauto_discover = true\npriority = 10\n";

/// The guide's example, where the office gateway `menlo-gw-1` also carries the users' Internet
/// traffic: a default route beside the office policy whose filter admits only the two domain
/// controllers (192.168.77.20-21), not the printer at 192.168.77.10.
fn office_with_a_default_route() -> enclave_policy::Network {
    common::example_edited(
        MENLO_GW_1,
        MENLO_GW_1_WITH_A_DEFAULT_ROUTE,
        r#"
[[gateway_policy]]
name = "users to the Internet through the office"
senders = ["users"]
gateways = ["menlo-gw-1"]
subnets = ["0.0.0.0/0"]
acl = [{ protocol = "any" }]
"#,
    )
}

/// Which policies let the laptop open `dst:port/tcp` through menlo-gw-1, on each of the three
/// places that enforce it: the laptop's outbound filter towards the gateway, the gateway's
/// inbound filter from the laptop, and the gateway's forward rules.
fn reach(laptop: &View, gateway: &View, dst: &str, port: u16) -> String {
    let dst: Ipv4Addr = dst.parse().expect("address");
    let src = laptop.address;
    let allowing = |grants: &enclave_policy::Grants| {
        grants
            .iter()
            .filter(|(_, g)| {
                g.rules
                    .iter()
                    .any(|r| admits(r, Protocol::Tcp, Some(port), src, dst))
            })
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let outbound = allowing(&laptop.peers["menlo-gw-1"].outbound);
    let inbound = allowing(&gateway.peers["laptop"].inbound);
    let forward = gateway
        .gateway
        .as_ref()
        .map(|g| {
            g.forward
                .iter()
                .filter(|(_, f)| {
                    f.senders.contains_key("laptop")
                        && f.destinations.iter().any(|d| d.contains(dst))
                        && f.acl
                            .iter()
                            .any(|a| a.admits(Some(Protocol::Tcp), Some(port)))
                })
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    format!("{dst}:{port}: laptop out [{outbound}], gateway in [{inbound}], forward [{forward}]")
}

#[test]
fn a_default_route_does_not_reach_what_another_policy_filters_out() {
    let net = office_with_a_default_route();
    let laptop = enclave_policy::compile(&net, "laptop").expect("laptop");
    let gateway = enclave_policy::compile(&net, "menlo-gw-1").expect("gateway");
    // Positive controls: a domain controller through the office policy, the Internet through
    // the new default route. Then the printer, which the office policy's filter keeps out.
    let lines = [
        reach(&laptop, &gateway, "192.168.77.20", 445),
        reach(&laptop, &gateway, "1.1.1.1", 443),
        reach(&laptop, &gateway, "192.168.77.10", 9100),
    ];
    expect_test::expect![[r#"
        192.168.77.20:445: laptop out [users to Menlo Park Office], gateway in [users to Menlo Park Office], forward [users to Menlo Park Office]
        1.1.1.1:443: laptop out [users to the Internet through the office], gateway in [users to the Internet through the office], forward [users to the Internet through the office]
        192.168.77.10:9100: laptop out [], gateway in [], forward []
    "#]]
    .assert_eq(&(lines.join("\n") + "\n"));
}

fn explain(net: &enclave_policy::Network, to: &str, protocol: Protocol, port: u16) -> String {
    let query = enclave_policy::Query {
        from: "laptop".into(),
        to: to.parse().expect("address"),
        protocol: Some(protocol),
        port: Some(port),
        public_ip: Some("198.51.100.7".parse().expect("address")),
        // Wednesday 10:00 in Menlo Park: the office policy is active.
        at: "2026-11-25T18:00:00Z".parse().expect("time"),
    };
    enclave_policy::explain(net, &query)
        .expect("laptop exists")
        .to_string()
}

#[test]
fn explain_says_what_the_default_route_leaves_out() {
    let net = office_with_a_default_route();
    let answers = [
        explain(&net, "192.168.77.10", Protocol::Tcp, 9100),
        explain(&net, "192.168.50.5", Protocol::Tcp, 22),
        explain(&net, "1.1.1.1", Protocol::Tcp, 443),
    ];
    expect_test::expect![[r#"
        denied: laptop -> 192.168.77.10:9100/tcp
          gateway access policy "users to Menlo Park Office": denied: the address is outside the policy's subnet filter
          gateway access policy "users to the Internet": denied: not covered by the default route of this policy, which means the Internet: private range 192.168.0.0/16; grant it explicitly (name it in a policy's subnets)
          gateway access policy "users to the Internet through the office": denied: not covered by the default route of this policy, which means the Internet: private range 192.168.0.0/16, subnet 192.168.77.0/24 of gateway "menlo-gw-1"; grant it explicitly (name it in a policy's subnets)
        denied: laptop -> 192.168.50.5:22/tcp
          gateway access policy "users to the Internet": denied: not covered by the default route of this policy, which means the Internet: private range 192.168.0.0/16; grant it explicitly (name it in a policy's subnets)
          gateway access policy "users to the Internet through the office": denied: not covered by the default route of this policy, which means the Internet: private range 192.168.0.0/16; grant it explicitly (name it in a policy's subnets)
        allowed: laptop -> 1.1.1.1:443/tcp
          gateway access policy "users to the Internet": allowed by ACL entry any, through egress-gw
          gateway access policy "users to the Internet through the office": allowed by ACL entry any, through menlo-gw-1
    "#]]
    .assert_eq(&answers.concat());
}

#[test]
fn the_agent_adds_the_gateways_own_addresses_and_explicit_grants_keep_theirs() {
    // A second policy names the office LAN beside its default route: the LAN is granted
    // explicitly (no filter), the rest is the Internet.
    let net = common::example_edited(
        MENLO_GW_1,
        MENLO_GW_1_WITH_A_DEFAULT_ROUTE,
        r#"
[[gateway_policy]]
name = "servers everywhere"
senders = ["servers"]
gateways = ["menlo-gw-1"]
subnets = ["0.0.0.0/0", "192.168.77.0/24"]
acl = [{ protocol = "any" }]
"#,
    );
    let mut gateway = enclave_policy::compile(&net, "menlo-gw-1").expect("gateway");
    let eth0 = enclave_policy::Exclusion::GatewayAddress {
        interface: "eth0".into(),
    };
    let eth1 = enclave_policy::Exclusion::GatewayAddress {
        interface: "eth1".into(),
    };
    let reaches = |view: &View, dst: &str| -> String {
        let dst: Ipv4Addr = dst.parse().expect("address");
        let server: Ipv4Addr = "100.64.0.20".parse().expect("address");
        let inbound = view.peers["build-server"].inbound["servers everywhere"]
            .rules
            .iter()
            .any(|r| admits(r, Protocol::Tcp, Some(22), server, dst));
        let forward = view.gateway.as_ref().is_some_and(|g| {
            g.forward["servers everywhere"]
                .destinations
                .iter()
                .any(|d| d.contains(dst))
        });
        format!("{dst}: inbound {inbound}, forward {forward}")
    };
    let probes = ["203.0.113.2", "192.168.77.1", "192.168.77.50", "1.1.1.1"];
    let before: Vec<String> = probes.iter().map(|p| reaches(&gateway, p)).collect();
    gateway.exclude_from_default_route([
        ("203.0.113.2/32".parse().expect("net"), eth0),
        ("192.168.77.1/32".parse().expect("net"), eth1),
    ]);
    let after: Vec<String> = probes.iter().map(|p| reaches(&gateway, p)).collect();
    let excludes = &gateway
        .gateway
        .as_ref()
        .expect("gateway")
        .default_route_excludes;
    let added: Vec<String> = excludes
        .iter()
        .filter(|(_, why)| matches!(why, enclave_policy::Exclusion::GatewayAddress { .. }))
        .map(|(net, why)| why.describe(*net))
        .collect();
    expect_test::expect![[r#"
        before: 203.0.113.2: inbound true, forward true; 192.168.77.1: inbound true, forward true; 192.168.77.50: inbound true, forward true; 1.1.1.1: inbound true, forward true
        after:  203.0.113.2: inbound false, forward false; 192.168.77.1: inbound true, forward true; 192.168.77.50: inbound true, forward true; 1.1.1.1: inbound true, forward true
        added:  the gateway's own address 192.168.77.1 on eth1; the gateway's own address 203.0.113.2 on eth0
    "#]]
    .assert_eq(&format!(
        "before: {}\nafter:  {}\nadded:  {}\n",
        before.join("; "),
        after.join("; "),
        added.join("; ")
    ));
}

#[test]
fn a_more_specific_public_route_still_shadows_the_default_route() {
    let net = common::example_edited(
        "subnets = [\"192.168.77.0/24\"]\nremoved = [\"172.17.0.0/16\"]\n",
        "subnets = [\"192.168.77.0/24\", \"198.51.100.0/24\"]\nremoved = [\"172.17.0.0/16\"]\n",
        r#"
[[gateway_policy]]
name = "users to the partner"
senders = ["users"]
gateways = ["menlo-gw-2"]
subnets = ["198.51.100.0/24"]
filter = ["198.51.100.80"]
acl = [{ protocol = "tcp", ports = 443 }]
"#,
    );
    expect_test::expect![[r#"
        denied: laptop -> 198.51.100.9:443/tcp
          gateway access policy "users to the Internet": denied: traffic to this address takes the more specific route to 198.51.100.0/24
          gateway access policy "users to the partner": denied: the address is outside the policy's subnet filter
    "#]]
    .assert_eq(&explain(&net, "198.51.100.9", Protocol::Tcp, 443));
}

#[test]
fn policy_view_writes_a_default_route_as_the_internet_and_why() {
    let net = office_with_a_default_route();
    let gateway = enclave_policy::compile(&net, "menlo-gw-1").expect("gateway");
    let text = gateway.to_string();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("0.0.0.0/0") || l.contains("leaves out"))
        .map(str::trim)
        .collect();
    expect_test::expect![[r#"
        allow [any] from 100.64.0.11 -> 0.0.0.0/0 except 0.0.0.0/8,10.0.0.0/8,100.64.0.0/10,127.0.0.0/8,169.254.0.0/16,172.16.0.0/12,192.168.0.0/16,192.168.77.0/24,224.0.0.0/4,240.0.0.0/4
        serves 0.0.0.0/0 (Manual)
        snat 100.64.0.0/10 -> 0.0.0.0/0 to the egress address
        forward "users to the Internet through the office": laptop (100.64.0.11) -> 0.0.0.0/0 except 0.0.0.0/8,10.0.0.0/8,100.64.0.0/10,127.0.0.0/8,169.254.0.0/16,172.16.0.0/12,192.168.0.0/16,192.168.77.0/24,224.0.0.0/4,240.0.0.0/4 [any]
        the default route leaves out this-network range 0.0.0.0/8
        the default route leaves out private range 10.0.0.0/8
        the default route leaves out the overlay network 100.64.0.0/10
        the default route leaves out loopback range 127.0.0.0/8
        the default route leaves out link-local range 169.254.0.0/16
        the default route leaves out private range 172.16.0.0/12
        the default route leaves out private range 192.168.0.0/16
        the default route leaves out subnet 192.168.77.0/24 of gateway "menlo-gw-1"
        the default route leaves out multicast range 224.0.0.0/4
        the default route leaves out reserved range 240.0.0.0/4
    "#]]
    .assert_eq(&(lines.join("\n") + "\n"));
}
