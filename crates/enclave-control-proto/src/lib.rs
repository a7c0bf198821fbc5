//! The protocol between a managed agent and the control server (`docs/agent-protocol.md`).
//!
//! - [`message`]: what travels, as JSON objects tagged by `type`; each side ignores types it
//!   does not know, so later versions add messages without breaking older peers.
//! - [`frame`]: how it travels once the connection is upgraded: a 4-byte big-endian length and
//!   one JSON message, both ways, with a size limit.
//! - [`proof`]: how the agent proves it holds its WireGuard private key (X25519, no signing
//!   key): pure functions, no I/O.
//! - [`tls`]: how the agent (and the administration CLI) trusts the server: the SHA-256
//!   fingerprint of its certificate, pinned, or a CA file.
//! - [`client`]: the agent's side over TCP and TLS: [`client::enrol`] (the one-time
//!   registration) and [`client::connect`] (the long-lived connection, HTTP/1.1 upgraded to
//!   `enclave-agent/1`).
//! - [`redacted`]: [`Redacted`], a field whose `Debug` never shows its value, for the secrets
//!   that the agent, the administration CLI and the server all hold (keys, tokens, hashes).
//!
//! This crate is used by the agent, so it stays small: no database, no web framework.

#![warn(missing_docs)]

pub mod client;
pub mod frame;
pub mod message;
pub mod proof;
pub mod redacted;
pub mod tls;

pub use client::{connect, enrol, Enrolled, Error, Reader, Result, Session, Writer};
pub use message::{AgentMessage, ServerMessage};
pub use redacted::Redacted;
pub use tls::Trust;

/// The path of the agents' connection on the API's port.
pub const AGENT_PATH: &str = "/api/v1/agent";

/// The path of enrolment on the API's port.
pub const ENROL_PATH: &str = "/api/v1/enrol";

/// The HTTP `Upgrade` token of the framed transport. Its number changes only with the
/// framing itself; the messages are versioned by [`PROTOCOL_VERSIONS`] in the hello.
pub const UPGRADE: &str = "enclave-agent/1";

/// The message protocol versions this crate speaks, oldest first.
pub const PROTOCOL_VERSIONS: &[u32] = &[1];

/// The highest version in both lists, if any.
pub fn negotiate(ours: &[u32], theirs: &[u32]) -> Option<u32> {
    ours.iter().copied().filter(|v| theirs.contains(v)).max()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Architecture invariant, checked: the agent links this crate, so it stays free of the
    /// server's heavy dependencies.
    #[test]
    fn no_database_or_web_framework() {
        let manifest = include_str!("../Cargo.toml");
        for banned in ["sqlx", "axum", "tower", "rcgen", "enclave-control."] {
            assert!(!manifest.contains(banned), "Cargo.toml depends on {banned}");
        }
    }

    #[test]
    fn negotiation_takes_the_highest_common_version() {
        assert_eq!(negotiate(&[1, 2, 3], &[2, 3, 4]), Some(3));
        assert_eq!(negotiate(&[1], &[2]), None);
        assert_eq!(negotiate(PROTOCOL_VERSIONS, &[1, 7]), Some(1));
    }
}
