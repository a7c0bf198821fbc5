//! Fixtures shared by the integration tests: the guide's example definition, and an oracle of
//! what an allow rule admits that does not go through the filter's own matching.

// Each test binary uses only part of this module.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use enclave_policy::{AllowRule, Network, Protocol};

/// The network definition of the user guide, as shipped.
pub const EXAMPLE: &str = include_str!("../../../../docs/examples/network.toml");

/// The guide's example, loaded.
pub fn example() -> Network {
    load(EXAMPLE)
}

/// The guide's example with `before` replaced by `after` and `more` (further tables) appended.
/// Panics if the example no longer contains `before`, so that an edit of the example cannot
/// quietly turn the test into one about an unchanged definition.
pub fn example_edited(before: &str, after: &str, more: &str) -> Network {
    assert!(
        EXAMPLE.contains(before),
        "the example no longer contains {before:?}"
    );
    load(&(EXAMPLE.replace(before, after) + more))
}

fn load(text: &str) -> Network {
    enclave_policy::load("network.toml", text)
        .expect("valid definition")
        .network
}

/// Whether `rule` lets a flow of `protocol` to `dst:port` from `src` be opened.
pub fn admits(
    rule: &AllowRule,
    protocol: Protocol,
    port: Option<u16>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
) -> bool {
    let protocol_ok = rule.protocol == Protocol::Any || rule.protocol == protocol;
    let port_ok = match (rule.ports, port) {
        (None, _) => true,
        (Some(range), Some(port)) => range.contains(port),
        (Some(_), None) => false,
    };
    protocol_ok
        && port_ok
        && rule.sources.iter().any(|e| e.contains(src))
        && rule.destinations.iter().any(|e| e.contains(dst))
}
