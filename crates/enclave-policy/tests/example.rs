//! The documented example must stay valid, and warn only about what its default route leaves
//! out (a default route means the Internet).
use expect_test::expect;

mod common;

#[test]
fn documented_example_is_valid_and_warns_only_about_its_default_route() {
    let loaded = enclave_policy::load("network.toml", common::EXAMPLE).expect("example is valid");
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    expect![[r#"
        network.toml:120:12: warning: the default route 0.0.0.0/0 of policy "users to the Internet" means the Internet: it does not reach this-network range 0.0.0.0/8, private range 10.0.0.0/8, the overlay network 100.64.0.0/10, loopback range 127.0.0.0/8, link-local range 169.254.0.0/16, private range 172.16.0.0/12, private range 192.168.0.0/16, multicast range 224.0.0.0/4, reserved range 240.0.0.0/4
          hint: a default route means the Internet (docs/network-definition.md says why each of these is left out); to reach one, name it (or a subnet inside it) in the `subnets` of a policy and of the gateway's [system.gateway] table: that policy's filter and ACL apply"#]].assert_eq(&warnings.join("\n"));
}
