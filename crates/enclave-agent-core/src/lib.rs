//! The agent's decisions, without I/O: what `enclave-agent run` and `enclave-gw run` decide
//! from a view and what they observed, with time and randomness as arguments.
//!
//! - [`control`]: the datagrams senders and gateways exchange over the tunnel (probes and the
//!   acknowledgements that advertise a gateway's subnets).
//! - [`failover`]: which gateway each routed subnet uses, and when to change it.
//! - [`desired`]: what the host must hold now (peers, routes, NAT policy, what a gateway
//!   advertises), from the compiled view and what was observed.
//! - [`status`]: the status block that `enclave-agent status` shows.
//! - [`report`], [`backoff`], [`gate`]: a managed agent's reports to its server, when to try the
//!   server again, and which views from it to take.
//!
//! It is not the agent: `enclave-runtime` owns the sockets, the clock, the files and the
//! kernel, drives these types and re-exports them under its own paths
//! (`enclave_runtime::failover`, `enclave_runtime::managed::report`, …). This crate's
//! `clippy.toml` forbids clocks, OS randomness, files, sockets, processes and the environment,
//! as in `enclave-wg`, `enclave-filter` and `enclave-policy`.

#![warn(missing_docs)]

pub mod backoff;
pub mod control;
pub mod desired;
pub mod failover;
pub mod gate;
pub mod report;
pub mod status;

/// The origin of the tests' virtual clocks. `Instant` has no constructor, so the tests read the
/// real clock once and add durations to it; the crate itself never reads it (clippy.toml).
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn test_clock_start() -> std::time::Instant {
    std::time::Instant::now()
}
