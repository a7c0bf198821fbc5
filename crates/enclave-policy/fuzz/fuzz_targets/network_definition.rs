//! Fuzz the network definition: any text must be refused with diagnostics or accepted, never
//! panic; an accepted one must compile for every system and answer explain queries.
//!
//! Corpus (`corpus/network_definition/`): docs/examples/network.toml, a two-system direct
//! policy, a default-route gateway with trust requirements and active hours, and two refused
//! definitions (semantic errors; an unknown field and a wrong type).
//!
//! Run: `cargo xtask fuzz network_definition`, or
//! `cargo +nightly fuzz run --fuzz-dir crates/enclave-policy/fuzz network_definition`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(loaded) = enclave_policy::load("fuzz.toml", text) else {
        return;
    };
    let net = &loaded.network;
    let now = enclave_policy::Timestamp::UNIX_EPOCH;
    for name in net.systems.keys() {
        let view = enclave_policy::compile(net, name).expect("a defined system compiles");
        let _ = enclave_policy::evaluate(&view, &enclave_policy::Facts::default(), now);
        for target in net.systems.values().map(|s| s.address).take(4) {
            let query = enclave_policy::Query {
                from: name.clone(),
                to: target,
                protocol: None,
                port: None,
                public_ip: None,
                at: now,
            };
            let _ = enclave_policy::explain(net, &query).expect("a defined sender is explained");
        }
    }
});
