//! The documented example must stay valid.
use expect_test::expect;

#[test]
fn documented_example_is_valid_without_warnings() {
    let text = include_str!("../../../docs/examples/network.toml");
    let loaded = enclave_policy::load("network.toml", text).expect("example is valid");
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    expect![[r#"[]"#]].assert_eq(&format!("{warnings:?}"));
}
