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
//! file's text and the time. Deny by default: nothing is allowed that no policy grants.

mod diag;
mod explain;
mod model;
mod raw;
mod render;
mod schema;
mod trust;
mod validate;
mod view;

pub use diag::{Diagnostic, Severity};
pub use enclave_filter::{AddrEntry, AllowRule, PortRange, Protocol};
pub use explain::{explain, Denial, Explanation, Finding, FindingOutcome, Query, Verdict};
pub use jiff::Timestamp;
pub use model::{
    AclEntry, ActiveHours, DirectPolicy, GatewayPolicy, GatewaySettings, HoursWindow, Network,
    System, Tag, TrustKind, TrustRequirement, Weekday,
};
pub use trust::{evaluate, Evaluation, Facts, GrantEvaluation, GrantOutcome, TrustFailure};
pub use validate::{load, Loaded, DEFAULT_KEEPALIVE, DEFAULT_OVERLAY, DEFAULT_PRIORITY};
pub use view::{
    compile, Direction, ForwardRule, GatewayView, Grant, GrantKind, PeerView, Requirements,
    RouteCandidate, RouteView, SnatRule, SubnetSource, View, GATEWAY_REACHABILITY,
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
