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
    /// no I/O. Every file of `core/` is read, so a new one is checked without being listed; the
    /// tests (`core/tests.rs`) may do what they like.
    #[test]
    fn the_core_does_no_io() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files: Vec<std::path::PathBuf> =
            ["model.rs", "definition.rs", "limit.rs", "app_device.rs"]
                .iter()
                .map(|file| src.join(file))
                .collect();
        for entry in std::fs::read_dir(src.join("core")).expect("src/core") {
            let path = entry.expect("src/core").path();
            if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") {
                files.push(path);
            }
        }
        assert!(
            files.iter().any(|f| f.ends_with("core/mod.rs")) && files.len() >= 10,
            "the core's files were not found: {files:?}"
        );
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
        for file in &files {
            let text =
                std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let file = file.strip_prefix(&src).unwrap_or(file).display();
            for word in banned {
                if text.contains(word) {
                    found.push(format!("{file} uses {word}"));
                }
            }
        }
        assert!(found.is_empty(), "{found:#?}");
    }
}
