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
