//! Where the agent's view comes from: the one seam between the agent and its configuration.
//!
//! A source is a network-definition file (file mode) or a control server (managed mode). It
//! hands the agent validated views through a channel of [`SourceEvent`]s; the agent applies
//! them with its reconciliation and never asks where they came from. In the other direction
//! the agent publishes an [`AgentReport`] (its status and, on a gateway, what discovery found)
//! in a `tokio::sync::watch` channel, which a managed source sends to its server and a file
//! source ignores.

use std::sync::Arc;

use enclave_policy::View;

/// A view for the agent to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// This system's compiled view, already validated by the source.
    pub view: View,
    /// Warnings to show in status (a definition's warnings, say).
    pub warnings: Vec<String>,
    /// Where it came from, for logs and status: `file /etc/enclave/network.toml`, or
    /// `server https://control.example.net:8443 serial 42`.
    pub origin: String,
}

/// What a source tells the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    /// Apply this view.
    Update(Box<Update>),
    /// A new view was refused or cannot be had now (a definition that fails validation, a
    /// server that cannot be reached): the last good view stays in force. Shown in status
    /// until [`SourceEvent::Clear`] or the next [`SourceEvent::Update`].
    Problem(String),
    /// The problem reported before is over.
    Clear,
    /// This system may no longer take part (revoked or deleted on the server): the agent
    /// drops every peer, route and NAT rule and waits, with the reason in status.
    Revoked(String),
}

pub use enclave_agent_core::report::AgentReport;

/// The receiving end of the agent's reports.
pub type Reports = tokio::sync::watch::Receiver<Option<Arc<AgentReport>>>;
