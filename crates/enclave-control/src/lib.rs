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
//! - [`tls`] and [`client`]: the server's certificate (self-signed on first start, pinned by
//!   its SHA-256 fingerprint) and the administration CLI's client.
//!
//! Architecture invariant: `model`, `core` and `definition` do no I/O, read no clock and use
//! no randomness; time and secrets' hashes are passed in.

pub mod api;
pub mod client;
pub mod core;
pub mod definition;
pub mod limit;
pub mod model;
pub mod secret;
pub mod server;
pub mod service;
pub mod store;
pub mod suite;
pub mod tls;
