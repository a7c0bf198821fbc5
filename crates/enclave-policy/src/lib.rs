//! The network definition and its compilation into one system's view.
//!
//! The administrator writes one network definition (TOML, see `docs/network-definition.md`);
//! every agent reads the same file. This crate:
//!
//! - parses and validates it ([`load`]), reporting every error at once with its line and column;
//! - compiles one system's [`View`] ([`compile`]): its peers, the filter rules per peer in each
//!   direction, its routes, and on a gateway its forwarding and SNAT rules;
//! - evaluates trust requirements and active hours ([`evaluate`]), a pure function of the view,
//!   observed facts and the time;
//! - explains a decision ([`explain`]).
//!
//! Architecture invariant: this crate does no I/O and never reads the clock; callers pass the
//! file's text and the time (`clippy.toml` enforces it). Deny by default: nothing is allowed
//! that no policy grants.
//!
//! # What it is for
//!
//! Turning the one network definition into plain values that the layers below apply: an agent
//! (or a control server, or a test) loads the text, compiles the [`View`] of one system, and
//! hands its peers to the data plane, its filter rules to the per-peer filter
//! (`enclave-filter`), its routes to the route manager and, on a gateway, its forwarding and
//! SNAT rules to the NAT manager. The same values answer an administrator's "why (not)?"
//! ([`explain`]) and print as the guide's status text (`View` implements `Display`).
//!
//! # What it is not for
//!
//! - I/O: reading the file, watching it for changes, reading the clock, observing a system's
//!   public address, or reading pre-shared key files (a view names the file; the agent reads it).
//! - Applying anything: it installs no route, no WireGuard peer, no nftables rule; it does not
//!   know how (the route and NAT managers do not know what a policy is, either).
//! - Enforcing per packet: the data plane does that with `enclave-filter`; this crate only
//!   writes the rules.
//! - Editing a definition or keeping its history: a definition is read whole, and a change is a
//!   new text to [`load`] again.
//!
//! A runnable tour: `cargo run -p enclave-policy --example compile_and_explain` loads
//! `docs/examples/network.toml`, prints one system's view and explains three decisions.
//!
//! ```
//! let text = r#"
//! [[system]]
//! name = "laptop"
//! public_key = "vTN8N6SXl8C/f4BwE2OKOmkFfGsPprd4XoDA5tqbHBM="
//! address = "100.64.0.11"
//! tags = ["users"]
//!
//! [[system]]
//! name = "office-gw"
//! public_key = "eTv6knpgaNhI2DhJE/HE1mmi4BxJ+kC2vh7+G+LkNm4="
//! address = "100.64.0.2"
//!
//! [system.gateway]
//! allowed = true
//! subnets = ["192.168.77.0/24"]
//!
//! [[gateway_policy]]
//! name = "users to the office"
//! senders = ["users"]
//! gateways = ["office-gw"]
//! subnets = ["192.168.77.0/24"]
//! filter = ["192.168.77.20-192.168.77.21"]
//! acl = [{ protocol = "tcp", ports = 445, label = "SMB" }]
//! "#;
//! let network = enclave_policy::load("network.toml", text)?.network;
//!
//! // The sender routes the subnet through the gateway...
//! let laptop = enclave_policy::compile(&network, "laptop")?;
//! let route = &laptop.routes[&"192.168.77.0/24".parse()?];
//! assert_eq!(route.candidates[0].gateway, "office-gw");
//!
//! // ...and the gateway forwards and SNATs it.
//! let gateway = enclave_policy::compile(&network, "office-gw")?;
//! let rules = gateway.gateway.as_ref().map(|g| g.snat.len());
//! assert_eq!(rules, Some(1));
//!
//! // Would the laptop reach a domain controller over SMB?
//! let answer = enclave_policy::explain(
//!     &network,
//!     &enclave_policy::Query {
//!         from: "laptop".into(),
//!         to: "192.168.77.20".parse()?,
//!         protocol: Some(enclave_policy::Protocol::Tcp),
//!         port: Some(445),
//!         public_ip: None,
//!         at: "2026-11-25T18:00:00Z".parse()?,
//!     },
//! )?;
//! assert_eq!(answer.verdict, enclave_policy::Verdict::Allowed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod affected;
mod diag;
mod explain;
mod internet;
mod model;
mod raw;
mod render;
mod schema;
mod trust;
mod validate;
mod view;

pub use affected::{affected, affected_shared, Affected};
pub use diag::{Diagnostic, Severity};
pub use enclave_filter::{AddrEntry, AllowRule, PortRange, Protocol};
pub use explain::{explain, Denial, Explanation, Finding, FindingOutcome, Query, Verdict};
pub use internet::{
    default_route_excludes, default_route_rest, Exclusion, SpecialRange, NOT_THE_INTERNET,
};
pub use jiff::Timestamp;
pub use model::{
    AclEntry, ActiveHours, DirectPolicy, GatewayPolicy, GatewaySettings, HoursWindow, Network,
    PresharedKey, System, Tag, TrustKind, TrustRequirement, Weekday,
};
pub use trust::{evaluate, Evaluation, Facts, GrantEvaluation, GrantOutcome, TrustFailure};
pub use validate::time_zones;
pub use validate::{load, Loaded, DEFAULT_KEEPALIVE, DEFAULT_OVERLAY, DEFAULT_PRIORITY};
pub use view::{
    compile, Compiler, Direction, ForwardRule, GatewayView, Grant, GrantKind, Grants, PeerView,
    Requirements, RouteCandidate, RouteView, SharedCompiler, SnatRule, SubnetSource, ViaTags, View,
    GATEWAY_REACHABILITY,
};

/// Errors of the policy engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The network definition did not pass validation; `diagnostics` lists every problem
    /// (errors and warnings) in file order.
    #[error("the network definition {file} is not valid ({})", count_errors(.diagnostics))]
    Invalid {
        /// The name of the file, as given to [`load`].
        file: String,
        /// Every error and warning found.
        diagnostics: Vec<Diagnostic>,
    },
    /// A system name that the network definition does not define.
    #[error("no system named {name:?} in the network definition")]
    UnknownSystem {
        /// The name asked for.
        name: String,
    },
}

fn count_errors(diagnostics: &[Diagnostic]) -> String {
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    plural(errors, "error")
}

/// `1 error`, `2 errors`.
pub fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("{count} {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;
