//! Privileged scenarios: each builds its own network namespaces with [`enclave_netns`], runs real
//! programs in them, and tears everything down, also when it fails.
//!
//! `cargo xtask netns-test [NAME]` builds the binaries and runs `enclave-scenarios run [NAME]`.
//! `cargo xtask bench NAME` runs `enclave-scenarios bench NAME` for the benchmarks that need
//! namespaces.

pub mod agents;
pub mod bench;
pub mod context;
pub mod control_fixture;
pub mod demo;
pub mod forward;
pub mod office;
pub mod portal_fixture;
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

/// What a scenario returns (as its error) when this machine cannot run it, e.g. the WireGuard
/// kernel module path where there is no module. The runner prints it as its own line,
/// `scenario NAME not run: WHY`, never as a pass.
#[derive(Debug, Clone)]
pub struct NotRun(pub String);

impl std::fmt::Display for NotRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not run: {}", self.0)
    }
}

impl std::error::Error for NotRun {}

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
