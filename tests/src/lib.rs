//! Privileged scenarios: each builds its own network namespaces with [`enclave_netns`], runs real
//! programs in them, and tears everything down, also when it fails.
//!
//! `cargo xtask netns-test [NAME]` builds the binaries and runs `enclave-scenarios run [NAME]`.
//! `cargo xtask bench NAME` runs `enclave-scenarios bench NAME` for the benchmarks that need
//! namespaces.

pub mod agents;
pub mod bench;
pub mod context;
pub mod demo;
pub mod office;
pub mod scenarios;
pub mod support;

pub use context::Ctx;

/// One privileged scenario.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// The name `cargo xtask netns-test NAME` selects it by (kebab-case, unique).
    pub name: &'static str,
    /// One line on what it proves.
    pub about: &'static str,
    /// The scenario itself. It returns an error (or panics) when what it proves does not hold.
    pub run: fn(&Ctx) -> anyhow::Result<()>,
}

/// One benchmark that needs namespaces.
#[derive(Debug, Clone, Copy)]
pub struct Bench {
    /// The name `cargo xtask bench NAME` selects it by.
    pub name: &'static str,
    /// One line on what it measures.
    pub about: &'static str,
    /// Runs the measurement and prints its table.
    pub run: fn(&Ctx) -> anyhow::Result<()>,
}
