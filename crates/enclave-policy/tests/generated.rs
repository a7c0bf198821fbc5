//! The generated large definition is valid and compiles (the benchmark's input).

#[path = "../benches/support/gen.rs"]
#[allow(dead_code)]
mod gen;

#[test]
fn generated_definition_is_valid_and_every_kind_of_view_compiles() {
    let size = gen::Size {
        systems: 1_000,
        gateways: 20,
        policies: 100,
        tags: 20,
    };
    let text = gen::definition(&size, 7);
    let loaded = enclave_policy::load("generated.toml", &text).expect("valid");
    let gateway = enclave_policy::compile(&loaded.network, "gw-3").expect("gw-3");
    assert!(gateway.gateway.is_some(), "gw-3 acts as a gateway");
    let host = enclave_policy::compile(&loaded.network, "host-500").expect("host-500");
    assert!(host.gateway.is_none());
    assert!(
        loaded
            .network
            .systems
            .keys()
            .filter_map(|name| enclave_policy::compile(&loaded.network, name).ok())
            .any(|view| !view.routes.is_empty()),
        "some system gets routes"
    );
}

/// A control server keeps a `SharedCompiler` beside the network of one revision: every view it
/// compiles must be the view `compile` gives, for every system (senders, gateways, disabled).
#[test]
fn the_shared_compiler_gives_every_system_the_view_compile_gives() {
    let size = gen::Size {
        systems: 600,
        gateways: 12,
        policies: 60,
        tags: 15,
    };
    let text = gen::definition(&size, 11);
    let mut network = enclave_policy::load("generated.toml", &text)
        .expect("valid")
        .network;
    // Some disabled systems too: the index must leave them out as `compile` does.
    let names: Vec<String> = network.systems.keys().step_by(7).cloned().collect();
    for name in names {
        if let Some(system) = network.systems.get_mut(&name) {
            system.enabled = false;
        }
    }
    let network = std::sync::Arc::new(network);
    let shared = enclave_policy::SharedCompiler::new(std::sync::Arc::clone(&network));
    let borrowed = enclave_policy::Compiler::new(&network);
    let mut with_peers = 0;
    for name in network.systems.keys() {
        let alone = enclave_policy::compile(&network, name).expect("compiles");
        assert_eq!(shared.compile(name).expect("compiles"), alone, "{name}");
        assert_eq!(borrowed.compile(name).expect("compiles"), alone, "{name}");
        with_peers += usize::from(!alone.peers.is_empty());
    }
    assert!(with_peers > 100, "only {with_peers} views have peers");
    assert!(shared.compile("no such system").is_err());
}
