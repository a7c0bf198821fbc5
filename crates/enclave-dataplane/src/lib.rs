//! The overlay data plane's I/O shell (Linux): a TUN device and a UDP socket around the
//! sans-IO protocol core [`enclave_wg`], with the per-peer stateful filter of
//! [`enclave_filter`] in the data path, and the WireGuard cross-platform UAPI served on a
//! unix socket so that `wg show`, `wg set` and `wg showconf` work.
//!
//! One [`Tunnel`] runs one thread, or with `ENCLAVE_DATAPLANE_THREADS=2` two, one per
//! direction (TUN device to socket, socket to TUN device), so that every flow keeps its order;
//! two share the protocol core and the filters under one lock taken once per packet read,
//! never across a system call. UDP is read and
//! written in batches (recvmmsg/sendmmsg). Control requests reach the inbound thread over a
//! channel.

#![warn(missing_docs)]

mod engine;
mod error;
pub mod offload;
mod routes;
mod sys;
mod tunnel;
pub mod uapi;
mod uapi_server;
mod udp;

pub use error::{Error, Result};
/// Interface configuration the agent needs besides the tunnel itself (also for an external
/// WireGuard interface): an IPv4 address, and the interface up.
pub mod iface {
    pub use crate::sys::{set_ipv4_address, set_up};
}
pub use tunnel::{
    PeerSpec, PeerStats, Tunnel, TunnelConfig, TunnelStats, DEFAULT_MTU, DEFAULT_UAPI_DIR,
    OFFLOAD_ENV, THREADS_ENV,
};
