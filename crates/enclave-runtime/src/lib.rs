//! The agent runtime: what `enclave-agent run` and `enclave-gw run` do, between the library
//! crates that decide (policy) and act (data plane, routes, NAT, discovery).
//!
//! Its sans-IO parts live in `enclave-agent-core`, whose `clippy.toml` forbids clocks, files,
//! sockets and OS randomness; they are re-exported here under their old paths: the control
//! protocol that gateways and senders speak over the tunnel ([`control`]), the gateway
//! selection with failover ([`failover`]), the desired state ([`desired`]) and the status
//! block ([`status`]).

#![warn(missing_docs)]

pub mod agent;
pub mod config;
mod error;
pub mod file_source;
pub mod logging;
pub mod managed;
pub mod source;
pub mod tunnel;

pub use enclave_agent_core::{control, desired, failover, status};

pub use error::{Error, Result};
