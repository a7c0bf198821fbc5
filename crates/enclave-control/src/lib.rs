//! The control server: a core with a store and transports around it.
//!
//! - [`model`] and [`core`]: the managed network and the logic over it, plain code over plain
//!   values (enrolment, approval, gateways and subnets, policies, import/export, the audit
//!   entry of each change). Every change is validated by the policy engine's own rules
//!   ([`definition::validate`]): a refused change names the field and why.
//! - [`store`]: one trait and one SQL implementation for SQLite and PostgreSQL (one schema,
//!   versioned migrations, optimistic revisions: concurrent edits never lose one another).
//! - [`service`]: the core over the store.
//! - [`api`]: the HTTP JSON API under `/api/v1/`, which only translates.
//! - [`portal`]: the administrators' web pages on the same port, over the same service.
//! - [`agents`]: the agents' connections (`GET /api/v1/agent`, upgraded to the protocol of
//!   `enclave-control-proto`): who is connected, what each is sent when the network changes,
//!   what each reported.
//! - [`tls`] and [`client`]: the server's certificate (self-signed on first start, pinned by
//!   its SHA-256 fingerprint) and the administration CLI's client.
//!
//! Architecture invariant: `model`, `core` and `definition` do no I/O, read no clock and use
//! no randomness; time and secrets' hashes are passed in.

#![warn(missing_docs)]

pub mod agent_suite;
pub mod agents;
pub mod api;
pub mod app_device;
pub mod client;
pub mod core;
pub mod definition;
pub mod limit;
pub mod model;
pub mod portal;
pub mod secret;
pub mod server;
pub mod service;
pub mod store;
pub mod suite;
#[cfg(test)]
mod testing;
pub mod tls;

#[cfg(test)]
mod tidy {
    /// Architecture invariant, checked: the core reads no clock, makes no randomness and does
    /// no I/O. (Its tests may; they live in `core/tests.rs`, not checked here.)
    #[test]
    fn the_core_does_no_io() {
        let files = [
            ("core/mod.rs", include_str!("core/mod.rs")),
            ("core/command.rs", include_str!("core/command.rs")),
            ("core/app.rs", include_str!("core/app.rs")),
            ("app_device.rs", include_str!("app_device.rs")),
            ("core/input.rs", include_str!("core/input.rs")),
            ("core/subnets.rs", include_str!("core/subnets.rs")),
            ("model.rs", include_str!("model.rs")),
            ("definition.rs", include_str!("definition.rs")),
            ("limit.rs", include_str!("limit.rs")),
        ];
        let banned = [
            "Instant::now",
            "SystemTime",
            "Timestamp::now",
            "OsRng",
            "thread_rng",
            "getrandom",
            "std::fs",
            "std::io",
            "std::net::Tcp",
            "std::net::Udp",
            "tokio",
            "sqlx",
            "axum",
            "hyper",
            "rustls",
            "crate::store",
            "crate::service",
            "crate::secret::generate",
        ];
        let mut found = Vec::new();
        for (file, text) in files {
            for word in banned {
                if text.contains(word) {
                    found.push(format!("{file} uses {word}"));
                }
            }
        }
        assert!(found.is_empty(), "{found:#?}");
    }
}
