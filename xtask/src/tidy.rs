//! Checks of the repository itself that no compiler makes: run by `cargo test --workspace`.

/// The sans-IO crates: each has the same `clippy.toml`, which forbids clocks, OS randomness,
/// files, sockets, processes and the environment (docs/ARCHITECTURE.md, "Architecture
/// invariants").
const SANS_IO: [&str; 4] = [
    "enclave-wg",
    "enclave-filter",
    "enclave-policy",
    "enclave-agent-core",
];

/// Clippy reads a crate's own `clippy.toml`, so each sans-IO crate carries a copy; a copy that
/// drifts would quietly allow in one core what the others forbid.
#[test]
fn the_sans_io_crates_forbid_the_same_calls() {
    let read = |name: &str| {
        let path = crate::root().join("crates").join(name).join("clippy.toml");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let first = read(SANS_IO[0]);
    assert!(
        first.contains("std::time::Instant::now") && first.contains("std::net::UdpSocket"),
        "{}'s clippy.toml no longer forbids the clock and sockets",
        SANS_IO[0]
    );
    for name in &SANS_IO[1..] {
        assert!(
            read(name) == first,
            "crates/{name}/clippy.toml differs from crates/{}/clippy.toml",
            SANS_IO[0]
        );
    }
}
