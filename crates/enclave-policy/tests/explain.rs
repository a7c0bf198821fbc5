//! Explain: a definition and a question in, the answer and its reasons out.

use expect_test::{expect, Expect};

mod common;

/// The one place that calls the API for explanations. `to` is `ADDR[:PORT][/PROTO]`.
fn check(from: &str, to: &str, public_ip: Option<&str>, at: &str, expect: Expect) {
    let network = common::example();
    let (to, protocol) = match to.split_once('/') {
        Some((to, "any")) => (to, Some(enclave_policy::Protocol::Any)),
        Some((to, "icmp")) => (to, Some(enclave_policy::Protocol::Icmp)),
        Some((to, "tcp")) => (to, Some(enclave_policy::Protocol::Tcp)),
        Some((to, "udp")) => (to, Some(enclave_policy::Protocol::Udp)),
        Some((_, other)) => panic!("bad protocol {other}"),
        None => (to, None),
    };
    let (addr, port) = match to.split_once(':') {
        Some((addr, port)) => (addr, Some(port.parse().expect("port"))),
        None => (to, None),
    };
    let query = enclave_policy::Query {
        from: from.to_owned(),
        to: addr.parse().expect("address"),
        protocol,
        port,
        public_ip: public_ip.map(|ip| ip.parse().expect("public ip")),
        at: at.parse().expect("RFC 3339 time"),
    };
    let answer = enclave_policy::explain(&network, &query).expect("sender exists");
    expect.assert_eq(&answer.to_string());
}

// Wednesday 10:00 in Menlo Park.
const WORKDAY: &str = "2026-11-25T18:00:00Z";
// Saturday 10:00 in Menlo Park.
const WEEKEND: &str = "2026-11-28T18:00:00Z";

#[test]
fn domain_controller_smb_is_allowed_through_both_gateways_in_order() {
    check(
        "laptop",
        "192.168.77.20:445/tcp",
        Some("198.51.100.7"),
        WORKDAY,
        expect![[r#"
            allowed: laptop -> 192.168.77.20:445/tcp
              gateway access policy "users to Menlo Park Office": allowed by ACL entry tcp 445 (SMB), through menlo-gw-1, then menlo-gw-2
              gateway access policy "users to the Internet": denied: not covered by the default route of this policy, which means the Internet: private range 192.168.0.0/16; grant it explicitly (name it in a policy's subnets)
        "#]],
    );
}

#[test]
fn address_outside_the_filter_is_denied() {
    check(
        "laptop",
        "192.168.77.30:445/tcp",
        Some("198.51.100.7"),
        WORKDAY,
        expect![[r#"
            denied: laptop -> 192.168.77.30:445/tcp
              gateway access policy "users to Menlo Park Office": denied: the address is outside the policy's subnet filter
              gateway access policy "users to the Internet": denied: not covered by the default route of this policy, which means the Internet: private range 192.168.0.0/16; grant it explicitly (name it in a policy's subnets)
        "#]],
    );
}

#[test]
fn port_not_in_the_acl_is_denied() {
    check(
        "laptop",
        "192.168.77.20:80/tcp",
        Some("198.51.100.7"),
        WORKDAY,
        expect![[r#"
            denied: laptop -> 192.168.77.20:80/tcp
              gateway access policy "users to Menlo Park Office": denied: no ACL entry admits this protocol and port
              gateway access policy "users to the Internet": denied: not covered by the default route of this policy, which means the Internet: private range 192.168.0.0/16; grant it explicitly (name it in a policy's subnets)
        "#]],
    );
}

#[test]
fn outside_active_hours_is_denied() {
    check(
        "laptop",
        "192.168.77.21/icmp",
        Some("198.51.100.7"),
        WEEKEND,
        expect![[r#"
            denied: laptop -> 192.168.77.21/icmp
              gateway access policy "users to Menlo Park Office": denied: outside active hours (it is Sat 10:00 in America/Los_Angeles)
              gateway access policy "users to the Internet": denied: not covered by the default route of this policy, which means the Internet: private range 192.168.0.0/16; grant it explicitly (name it in a policy's subnets)
        "#]],
    );
}

#[test]
fn blocked_public_address_is_denied() {
    check(
        "laptop",
        "192.168.77.21/icmp",
        Some("192.0.2.66"),
        WORKDAY,
        expect![[r#"
            denied: laptop -> 192.168.77.21/icmp
              gateway access policy "users to Menlo Park Office": denied: trust requirement "no-tor-exits" failed: public address 192.0.2.66 is in blocked range 192.0.2.0/24
              gateway access policy "users to the Internet": denied: not covered by the default route of this policy, which means the Internet: private range 192.168.0.0/16; grant it explicitly (name it in a policy's subnets)
        "#]],
    );
}

#[test]
fn unknown_public_address_fails_public_ip_requirements() {
    check(
        "laptop",
        "192.168.77.21/icmp",
        None,
        WORKDAY,
        expect![[r#"
            denied: laptop -> 192.168.77.21/icmp
              gateway access policy "users to Menlo Park Office": denied: trust requirement "no-tor-exits" failed: the sender's public address is unknown
              gateway access policy "users to the Internet": denied: not covered by the default route of this policy, which means the Internet: private range 192.168.0.0/16; grant it explicitly (name it in a policy's subnets)
        "#]],
    );
}

#[test]
fn tag_trust_requirement_gates_the_contractor() {
    // From outside the partner offices' range, then from inside it.
    for (public_ip, expect) in [
        (
            "203.0.113.9",
            expect![[r#"
                denied: contractor -> 192.168.77.30:445/tcp
                  gateway access policy "contractors to the file server": denied: trust requirement "partner-offices" failed: public address 203.0.113.9 is not in an allowed range
            "#]],
        ),
        (
            "198.51.100.9",
            expect![[r#"
                allowed: contractor -> 192.168.77.30:445/tcp
                  gateway access policy "contractors to the file server": allowed by ACL entry tcp 445 (SMB), through menlo-gw-1, then menlo-gw-2
            "#]],
        ),
    ] {
        check(
            "contractor",
            "192.168.77.30:445/tcp",
            Some(public_ip),
            WORKDAY,
            expect,
        );
    }
}

#[test]
fn contractor_reaches_only_the_file_server() {
    check(
        "contractor",
        "192.168.77.21/icmp",
        Some("198.51.100.9"),
        WORKDAY,
        expect![[r#"
            denied: contractor -> 192.168.77.21/icmp
              gateway access policy "contractors to the file server": denied: the address is outside the policy's subnet filter
        "#]],
    );
}

#[test]
fn default_route_carries_the_internet_but_not_the_overlay() {
    check(
        "laptop",
        "1.1.1.1:443/tcp",
        None,
        WORKDAY,
        expect![[r#"
        allowed: laptop -> 1.1.1.1:443/tcp
          gateway access policy "users to the Internet": allowed by ACL entry any, through egress-gw
    "#]],
    );
    check(
        "laptop",
        "100.64.0.12/icmp",
        None,
        WORKDAY,
        expect![[r#"
        denied: laptop -> 100.64.0.12/icmp
          no policy grants the sender access to this address
    "#]],
    );
}

#[test]
fn default_route_leaves_out_what_is_not_the_internet() {
    check(
        "laptop",
        "169.254.169.254:80/tcp",
        None,
        WORKDAY,
        expect![[r#"
            denied: laptop -> 169.254.169.254:80/tcp
              gateway access policy "users to the Internet": denied: not covered by the default route of this policy, which means the Internet: link-local range 169.254.0.0/16; grant it explicitly (name it in a policy's subnets)
        "#]],
    );
    check(
        "laptop",
        "10.1.2.3/icmp",
        None,
        WORKDAY,
        expect![[r#"
            denied: laptop -> 10.1.2.3/icmp
              gateway access policy "users to the Internet": denied: not covered by the default route of this policy, which means the Internet: private range 10.0.0.0/8; grant it explicitly (name it in a policy's subnets)
        "#]],
    );
    check(
        "laptop",
        "224.0.0.251:5353/udp",
        None,
        WORKDAY,
        expect![[r#"
            denied: laptop -> 224.0.0.251:5353/udp
              gateway access policy "users to the Internet": denied: not covered by the default route of this policy, which means the Internet: multicast range 224.0.0.0/4; grant it explicitly (name it in a policy's subnets)
        "#]],
    );
}

#[test]
fn direct_policy_is_one_way() {
    check(
        "laptop",
        "100.64.0.20:22/tcp",
        None,
        WORKDAY,
        expect![[r#"
        allowed: laptop -> 100.64.0.20:22/tcp
          direct access policy "users to servers": allowed by ACL entry tcp 22 (SSH)
    "#]],
    );
    check(
        "build-server",
        "100.64.0.11/icmp",
        None,
        WORKDAY,
        expect![[r#"
        denied: build-server -> 100.64.0.11/icmp
          no policy grants the sender access to this address
    "#]],
    );
}

#[test]
fn gateway_itself_answers_ping() {
    check(
        "laptop",
        "100.64.0.3/icmp",
        Some("198.51.100.7"),
        WORKDAY,
        expect![[r#"
        allowed: laptop -> 100.64.0.3/icmp
          gateway access policy "users to Menlo Park Office": allowed by ACL entry icmp (gateway reachability), through menlo-gw-2
    "#]],
    );
}
