//! The agent runtime: what `enclave-agent run` and `enclave-gw run` do, between the library
//! crates that decide (policy) and act (data plane, routes, NAT, discovery).
//!
//! Its sans-IO parts are here too: the control protocol that gateways and senders speak over
//! the tunnel ([`control`]) and the gateway selection with failover ([`failover`]).

#![warn(missing_docs)]

pub mod agent;
pub mod config;
pub mod control;
pub mod desired;
mod error;
pub mod failover;
pub mod file_source;
pub mod logging;
pub mod managed;
pub mod source;
pub mod status;
pub mod tunnel;

pub use error::{Error, Result};
