//! Validation: the exact text of every diagnostic, for a definition in, diagnostics out.

use expect_test::{expect, Expect};

/// The one place that calls the API: loads `input` and renders every diagnostic.
fn check(input: &str, expect: Expect) {
    let rendered = match enclave_policy::load("net.toml", input) {
        Ok(loaded) => {
            let mut out = String::from("valid\n");
            for w in &loaded.warnings {
                out.push_str(&format!("{w}\n"));
            }
            out
        }
        Err(enclave_policy::Error::Invalid { diagnostics, .. }) => {
            let mut out = String::from("invalid\n");
            for d in &diagnostics {
                out.push_str(&format!("{d}\n"));
            }
            out
        }
        Err(other) => format!("unexpected error: {other}"),
    };
    expect.assert_eq(&rendered);
}

const KEY_A: &str = "vTN8N6SXl8C/f4BwE2OKOmkFfGsPprd4XoDA5tqbHBM=";

#[test]
fn minimal_definition_is_valid() {
    check(
        &format!(
            r#"
[[system]]
name = "a"
public_key = "{KEY_A}"
address = "100.64.0.1"
"#
        ),
        expect![[r#"
            valid
        "#]],
    );
}

#[test]
fn toml_syntax_error_has_position() {
    check(
        "[[system]]\nname = \"a\nx",
        expect![[r#"
            invalid
            net.toml:3:2: error: key with no value, expected `=`
        "#]],
    );
}

#[test]
fn every_unknown_field_is_reported() {
    check(
        &format!(
            r#"
[[system]]
name = "a"
public_key = "{KEY_A}"
address = "100.64.0.1"
colour = "blue"

[system.gateway]
allowed = true
subnet = ["10.0.0.0/8"]

[[gateway_policy]]
name = "p"
senders = ["users"]
gateways = ["a"]
subnets = ["10.0.0.0/8"]
acl = [{{ protocol = "tcp", port = 22 }}]

[gateway_policy.active_hours]
days = ["mon"]
hours = ["09:00-17:00"]
timezone = "UTC"

[extra]
"#
        ),
        expect![[r#"
            invalid
            net.toml:6:1: error: unknown field `colour`, expected one of `name`, `public_key`, `address`, `tags`, `endpoint`, `enabled`, `gateway`
            net.toml:10:1: error: unknown field `subnet`, expected one of `allowed`, `subnets`, `removed`, `auto_discover`, `priority`
              hint: did you mean `subnets`?
            net.toml:17:28: error: unknown field `port`, expected one of `protocol`, `ports`, `label`
              hint: did you mean `ports`?
            net.toml:22:1: error: unknown field `timezone`, expected one of `days`, `hours`, `zone`
            net.toml:24:2: error: unknown field `extra`, expected one of `network`, `system`, `tag`, `trust_requirement`, `direct_policy`, `gateway_policy`, `preshared_key`
        "#]],
    );
}

#[test]
fn every_error_is_reported_at_once() {
    check(
        r#"
[network]
overlay = "100.64.0.0/10"

[[system]]
name = "a"
public_key = "not a key"
address = "10.0.0.1"
tags = ["users"]
endpoint = "somewhere"

[[system]]
name = "a"
public_key = "vTN8N6SXl8C/f4BwE2OKOmkFfGsPprd4XoDA5tqbHBM="
address = "100.64.0.2"

[[system]]
name = "b"
public_key = "vTN8N6SXl8C/f4BwE2OKOmkFfGsPprd4XoDA5tqbHBM="
address = "100.64.0.3"
tags = ["users"]

[[system]]
name = "c"
public_key = "bcvy1Kcg66j/nNMBY5aOQ/5HCIJ8yWt81xrdP32k1y8="
address = "100.64.0.3"

[[system]]
name = "gw"
public_key = "oTgUhJx0PYq5SoepL0DBE7dTXHDw4nbcDwcaVq8JqyU="
address = "100.64.0.4"

[system.gateway]
allowed = true
subnets = ["192.168.77.0/24", "10.1.0.1/16"]
auto_discover = false

[[trust_requirement]]
name = "office"
kind = "password"

[[gateway_policy]]
name = "p"
senders = ["users"]
gateways = ["gw", "c", "nobody"]
subnets = ["192.168.78.0/24", "192.168.77.0/24"]
filter = ["192.168.77.20-192.168.77.10", "192.168.99.1", "not-an-address"]
acl = [
    { protocol = "tcp", ports = "100-50" },
    { protocol = "udp", ports = 0 },
    { protocol = "icmp", ports = 7 },
    { protocol = "sctp" },
]
trust = ["office", "missing"]

[gateway_policy.active_hours]
days = ["mon", "funday"]
hours = ["09:00-17:00", "18:00-08:00"]
zone = "Mars/Olympus_Mons"

[[direct_policy]]
name = "p"
senders = ["users"]
receivers = ["users"]
acl = [{ protocol = "any" }]
"#,
        expect![[r#"
            invalid
            net.toml:7:14: error: public key of system "a" is not a WireGuard key
              hint: a key is 32 bytes in base64 (44 characters), as `enclave-agent keygen` prints
            net.toml:8:11: error: virtual address 10.0.0.1 of system "a" is outside the usable addresses of the overlay network 100.64.0.0/10
            net.toml:10:12: error: endpoint "somewhere" of system "a" is not an address and port
              hint: write it as IP:PORT, for example "203.0.113.10:51820"
            net.toml:13:8: error: duplicate system name "a"
            net.toml:19:14: error: system "b" has the same public key as system "a"
            net.toml:26:11: error: system "c" has the same virtual address 100.64.0.3 as system "b"
            net.toml:35:31: error: subnet 10.1.0.1/16 has host bits set
              hint: did you mean 10.1.0.0/16?
            net.toml:40:8: error: unknown trust requirement kind "password"
              hint: the supported kind is "public_ip"
            net.toml:45:19: error: system "c" is not allowed to act as a gateway
              hint: add a [system.gateway] table with `allowed = true` to "c"
            net.toml:45:24: error: no system named "nobody"
            net.toml:46:12: error: subnet 192.168.78.0/24 is not offered by any gateway of this policy ("gw")
              hint: add it to `subnets` in the [system.gateway] table of a gateway (and out of `removed`)
            net.toml:47:11: error: address range "192.168.77.20-192.168.77.10" ends before it starts
            net.toml:47:42: error: filter entry "192.168.99.1" is not inside the subnets of the policy
            net.toml:47:58: error: filter entry "not-an-address" is not an address, a range or a CIDR
              hint: write 192.168.77.20, 192.168.77.20-192.168.77.21 or 192.168.77.16/28
            net.toml:49:33: error: port range "100-50" ends before it starts
              hint: write a port (445) or a range ("8000-8100") between 1 and 65535
            net.toml:50:33: error: bad port or port range 0
              hint: write a port (445) or a range ("8000-8100") between 1 and 65535
            net.toml:51:34: error: ports make no sense for protocol icmp
            net.toml:52:18: error: unknown protocol "sctp" in ACL
              hint: use any, icmp, tcp or udp
            net.toml:54:20: error: no trust requirement named "missing"
              hint: define it in a [[trust_requirement]] table
            net.toml:57:16: error: unknown day "funday"
              hint: use mon, tue, wed, thu, fri, sat or sun
            net.toml:58:25: error: bad hours window "18:00-08:00"
              hint: write HH:MM-HH:MM with the end after the start (up to 24:00); split a window that crosses midnight in two
            net.toml:59:8: error: unknown time zone "Mars/Olympus_Mons"
              hint: use an IANA time zone name such as "America/Los_Angeles" or "UTC"
            net.toml:62:8: error: duplicate policy name "p"
        "#]],
    );
}

#[test]
fn suspicious_things_are_warnings() {
    check(
        &format!(
            r#"
[[system]]
name = "gw"
public_key = "{KEY_A}"
address = "100.64.0.1"

[system.gateway]
allowed = true
subnets = ["100.64.0.0/16"]

[[tag]]
name = "ghosts"

[[direct_policy]]
name = "nobody to nobody"
senders = ["ghosts"]
receivers = ["gw"]
acl = [{{ protocol = "any" }}]

[[gateway_policy]]
name = "empty acl"
senders = ["ghosts"]
gateways = ["gw"]
subnets = ["100.64.0.0/16"]
acl = []
"#
        ),
        expect![[r#"
            valid
            net.toml:9:12: warning: subnet 100.64.0.0/16 overlaps the overlay network 100.64.0.0/10
            net.toml:12:8: warning: no system carries tag "ghosts"
            net.toml:14:1: warning: policy "nobody to nobody" grants nothing
            net.toml:16:12: warning: no system carries tag "ghosts"
            net.toml:17:14: warning: no system carries tag "gw"
            net.toml:20:1: warning: policy "empty acl" grants nothing
            net.toml:22:12: warning: no system carries tag "ghosts"
            net.toml:24:12: warning: subnet 100.64.0.0/16 overlaps the overlay network 100.64.0.0/10
        "#]],
    );
}

#[test]
fn removed_and_undiscoverable_subnets_are_not_offered() {
    check(
        &format!(
            r#"
[[system]]
name = "gw"
public_key = "{KEY_A}"
address = "100.64.0.1"
tags = ["users"]

[system.gateway]
allowed = true
removed = ["172.17.0.0/16"]

[[gateway_policy]]
name = "p"
senders = ["users"]
gateways = ["gw"]
subnets = ["172.17.0.0/16", "10.9.0.0/16", "0.0.0.0/0"]
acl = [{{ protocol = "any" }}]
"#
        ),
        expect![[r#"
            invalid
            net.toml:16:12: error: subnet 172.17.0.0/16 is not offered by any gateway of this policy ("gw")
              hint: add it to `subnets` in the [system.gateway] table of a gateway (and out of `removed`)
            net.toml:16:44: error: subnet 0.0.0.0/0 is not offered by any gateway of this policy ("gw")
              hint: add it to `subnets` in the [system.gateway] table of a gateway (and out of `removed`)
        "#]],
    );
}

#[test]
fn gateways_must_be_allowed_and_unmarked_ones_route_nothing() {
    check(
        &format!(
            r#"
[[system]]
name = "gw"
public_key = "{KEY_A}"
address = "100.64.0.1"
tags = ["users"]

[system.gateway]
allowed = false
subnets = ["192.168.77.0/24"]

[[system]]
name = "plain"
public_key = "bcvy1Kcg66j/nNMBY5aOQ/5HCIJ8yWt81xrdP32k1y8="
address = "100.64.0.2"

[[gateway_policy]]
name = "p"
senders = ["users"]
gateways = ["gw"]
subnets = ["192.168.77.0/24"]
acl = [{{ protocol = "icmp" }}]

[[gateway_policy]]
name = "q"
senders = ["users"]
gateways = ["plain"]
subnets = ["192.168.77.0/24"]
acl = [{{ protocol = "icmp" }}]
"#
        ),
        expect![[r#"
            invalid
            net.toml:20:13: warning: system "gw" is switched off as a gateway (allowed = false): this policy routes nothing through it
            net.toml:27:13: error: system "plain" is not allowed to act as a gateway
              hint: add a [system.gateway] table with `allowed = true` to "plain"
        "#]],
    );
}

const PSK_SYSTEMS: &str = r#"
[[system]]
name = "laptop"
public_key = "vTN8N6SXl8C/f4BwE2OKOmkFfGsPprd4XoDA5tqbHBM="
address = "100.64.0.11"

[[system]]
name = "gw"
public_key = "bcvy1Kcg66j/nNMBY5aOQ/5HCIJ8yWt81xrdP32k1y8="
address = "100.64.0.2"
"#;

#[test]
fn the_preshared_key_itself_has_no_place_in_the_definition() {
    check(
        &format!(
            r#"{PSK_SYSTEMS}
[[preshared_key]]
systems = ["laptop", "gw"]
file = "/etc/enclave/psk/laptop--gw.key"
key = "c2VjcmV0"
"#
        ),
        expect![[r#"
            invalid
            net.toml:15:1: error: unknown field `key`, expected one of `systems`, `file`
        "#]],
    );
}

#[test]
fn preshared_keys_join_two_known_systems_through_an_absolute_path() {
    check(
        &format!(
            r#"{PSK_SYSTEMS}
[[preshared_key]]
systems = ["laptop", "gw"]
file = "/etc/enclave/psk/laptop--gw.key"

[[preshared_key]]
systems = ["gw", "laptop"]
file = "/etc/enclave/psk/other.key"

[[preshared_key]]
systems = ["laptop", "ghost"]
file = "/etc/enclave/psk/laptop--ghost.key"

[[preshared_key]]
systems = ["laptop", "laptop"]
file = "/etc/enclave/psk/laptop.key"

[[preshared_key]]
systems = ["laptop", "gw", "ghost"]
file = "/etc/enclave/psk/three.key"

[[preshared_key]]
systems = ["gw", "laptop"]
file = "psk/laptop--gw.key"
"#
        ),
        expect![[r#"
            invalid
            net.toml:17:11: error: systems "gw" and "laptop" already have a pre-shared key
              hint: a pair of systems has at most one [[preshared_key]] table; remove one
            net.toml:21:22: error: no system named "ghost"
              hint: a pre-shared key joins two systems defined in [[system]] tables
            net.toml:25:22: error: a pre-shared key joins two different systems, not "laptop" with itself
            net.toml:29:11: error: a pre-shared key joins exactly two systems, this one names 3
              hint: write one [[preshared_key]] table per pair of systems
            net.toml:29:28: error: no system named "ghost"
              hint: a pre-shared key joins two systems defined in [[system]] tables
            net.toml:34:8: error: pre-shared key file "psk/laptop--gw.key" is not an absolute path
              hint: write the full path the key file has on both hosts, for example "/etc/enclave/psk/laptop--office-gw.key"
        "#]],
    );
}

#[test]
fn preshared_key_files_are_one_per_pair() {
    check(
        &format!(
            r#"{PSK_SYSTEMS}
[[system]]
name = "server"
public_key = "oTgUhJx0PYq5SoepL0DBE7dTXHDw4nbcDwcaVq8JqyU="
address = "100.64.0.20"

[[preshared_key]]
systems = ["laptop", "gw"]
file = "/etc/enclave/psk/shared.key"

[[preshared_key]]
systems = ["laptop", "server"]
file = "/etc/enclave/psk/shared.key"
"#
        ),
        expect![[r#"
            valid
            net.toml:23:8: warning: pre-shared key file "/etc/enclave/psk/shared.key" is also the key of systems "gw" and "laptop"
              hint: give each pair a key of its own, so that one leaked file opens one tunnel
        "#]],
    );
}

#[test]
fn a_default_route_says_what_it_leaves_out() {
    check(
        &format!(
            r#"
[[system]]
name = "gw"
public_key = "{KEY_A}"
address = "100.64.0.1"
tags = ["users"]

[system.gateway]
allowed = true
subnets = ["0.0.0.0/0", "192.168.77.0/24", "203.0.113.0/24", "10.20.0.0/16"]
removed = ["172.17.0.0/16"]

[[gateway_policy]]
name = "filtered Internet"
senders = ["users"]
gateways = ["gw"]
subnets = ["0.0.0.0/0"]
filter = ["8.8.8.8", "169.254.169.254", "203.0.113.7", "9.255.255.0-10.0.0.255"]
acl = [{{ protocol = "udp", ports = 53 }}]

[[gateway_policy]]
name = "Internet and a lab"
senders = ["users"]
gateways = ["gw"]
subnets = ["0.0.0.0/0", "10.20.0.0/16"]
acl = [{{ protocol = "any" }}]
"#
        ),
        expect![[r#"
            valid
            net.toml:17:12: warning: the default route 0.0.0.0/0 of policy "filtered Internet" means the Internet: it does not reach this-network range 0.0.0.0/8, private range 10.0.0.0/8, subnet 10.20.0.0/16 of gateway "gw", the overlay network 100.64.0.0/10, loopback range 127.0.0.0/8, link-local range 169.254.0.0/16, private range 172.16.0.0/12, subnet 172.17.0.0/16 removed from gateway "gw", private range 192.168.0.0/16, subnet 192.168.77.0/24 of gateway "gw", subnet 203.0.113.0/24 of gateway "gw", multicast range 224.0.0.0/4, reserved range 240.0.0.0/4
              hint: a default route means the Internet (docs/network-definition.md says why each of these is left out); to reach one, name it (or a subnet inside it) in the `subnets` of a policy and of the gateway's [system.gateway] table: that policy's filter and ACL apply
            net.toml:18:22: warning: filter entry 169.254.169.254 of policy "filtered Internet" is not reached (wholly or in part) through the default route 0.0.0.0/0, which leaves out link-local range 169.254.0.0/16
              hint: add a subnet that contains it to the policy's `subnets` (and to the gateway's), or remove it from the filter
            net.toml:18:41: warning: filter entry 203.0.113.7 of policy "filtered Internet" is not reached (wholly or in part) through the default route 0.0.0.0/0, which leaves out subnet 203.0.113.0/24 of gateway "gw"
              hint: add a subnet that contains it to the policy's `subnets` (and to the gateway's), or remove it from the filter
            net.toml:18:56: warning: filter entry 9.255.255.0-10.0.0.255 of policy "filtered Internet" is not reached (wholly or in part) through the default route 0.0.0.0/0, which leaves out private range 10.0.0.0/8
              hint: add a subnet that contains it to the policy's `subnets` (and to the gateway's), or remove it from the filter
            net.toml:25:12: warning: the default route 0.0.0.0/0 of policy "Internet and a lab" means the Internet: it does not reach this-network range 0.0.0.0/8, private range 10.0.0.0/8, the overlay network 100.64.0.0/10, loopback range 127.0.0.0/8, link-local range 169.254.0.0/16, private range 172.16.0.0/12, subnet 172.17.0.0/16 removed from gateway "gw", private range 192.168.0.0/16, subnet 192.168.77.0/24 of gateway "gw", subnet 203.0.113.0/24 of gateway "gw", multicast range 224.0.0.0/4, reserved range 240.0.0.0/4
              hint: a default route means the Internet (docs/network-definition.md says why each of these is left out); to reach one, name it (or a subnet inside it) in the `subnets` of a policy and of the gateway's [system.gateway] table: that policy's filter and ACL apply
        "#]],
    );
}

#[test]
fn empty_names_are_errors() {
    check(
        r#"
[[system]]
name = " "
public_key = "vTN8N6SXl8C/f4BwE2OKOmkFfGsPprd4XoDA5tqbHBM="
address = "100.64.0.1"

[[tag]]
name = ""

[[trust_requirement]]
name = ""
kind = "public_ip"
"#,
        expect![[r#"
            invalid
            net.toml:3:8: error: system name is empty
            net.toml:8:8: error: tag name is empty
            net.toml:11:8: error: trust requirement name is empty
        "#]],
    );
}
