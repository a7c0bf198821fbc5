//! What the core is asked ([`Command`]), what it answers ([`Outcome`], [`Reply`]) and why it
//! refuses ([`Refusal`]).

use std::collections::{BTreeMap, BTreeSet};

use enclave_policy::Severity;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::definition::{FieldProblem, Imported};
use crate::model::{
    AdminToken, ApprovalMode, AuditEntry, DiscoveredSubnet, EnrolmentKey, ManagedSystem, PolicyDoc,
    PresharedKeyDoc, Settings, State, TagDoc, TrustDoc, UnixTime,
};

/// Who asks, and when.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// For the audit log: `token:NAME`, `key:ID`, `cli`.
    pub actor: String,
    /// The time, passed in.
    pub now: UnixTime,
}

/// Whether an edit of a whole object creates it or replaces a known version of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// It must not exist yet.
    Create,
    /// It must exist at this version (the `version` the client read).
    Update,
}

/// Everything the server can be asked to change.
#[derive(Debug, Clone)]
pub enum Command {
    /// Replace the definition's objects by a file's; keys, tokens and discovered subnets stay.
    Import(Box<Imported>),
    /// A new enrolment key; the shell made the secret, only its hash comes here.
    CreateKey(NewKey),
    /// Revoke an enrolment key.
    RevokeKey {
        /// The key's id.
        id: String,
    },
    /// An agent enrols.
    Enrol {
        /// SHA-256 (hex) of the key it presented.
        key_hash: String,
        /// Its WireGuard public key, base64.
        public_key: String,
        /// The name it asks for (its host name); made unique.
        hostname: Option<String>,
    },
    /// The administrator adds a device that runs an official WireGuard app, not our agent
    /// (approved at once; marked as an app device).
    AddAppDevice {
        /// Its name.
        name: String,
        /// Its WireGuard public key, base64 (the shell made the pair, or it was pasted).
        public_key: String,
        /// Its tags.
        tags: BTreeSet<String>,
        /// Whether the server made the key pair (for the audit log).
        key_made_here: bool,
    },
    /// Approve a pending (or revoked) system.
    Approve {
        /// The system.
        name: String,
    },
    /// Revoke a system: no tunnel to anyone.
    Revoke {
        /// The system.
        name: String,
    },
    /// Delete a system.
    Delete {
        /// The system.
        name: String,
    },
    /// Rename, retag, enable or disable a system, or set its endpoint.
    UpdateSystem {
        /// The system.
        name: String,
        /// Its edit.
        edit: SystemEdit,
    },
    /// "Allow this system to act as a gateway".
    SetGateway {
        /// The system.
        name: String,
        /// On or off.
        allowed: bool,
    },
    /// Add a subnet to a gateway by hand.
    AddSubnet {
        /// The gateway.
        system: String,
        /// The subnet (host bits must be clear).
        subnet: Ipv4Net,
    },
    /// Remove a subnet from a gateway (discovered or added).
    RemoveSubnet {
        /// The gateway.
        system: String,
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// A gateway's agent reports what discovery found (replaces the previous report).
    ReportDiscovered {
        /// The gateway.
        system: String,
        /// What it found.
        subnets: BTreeMap<Ipv4Net, DiscoveredSubnet>,
    },
    /// The agents' side records where agents were observed (each a system's observed
    /// endpoint: its agent's address with the WireGuard port it reported), for the systems
    /// whose endpoint changed; one command for many, so that a crowd of agents connecting at
    /// once makes few commits.
    ObserveEndpoints {
        /// The endpoints, by system name.
        endpoints: BTreeMap<String, std::net::SocketAddr>,
    },
    /// Create or replace a policy.
    PutPolicy {
        /// The policy as written.
        doc: PolicyDoc,
        /// Create, or replace the version the client read.
        write: Write,
    },
    /// Delete a policy.
    DeletePolicy {
        /// Its name.
        name: String,
    },
    /// Create or replace a tag's trust requirements.
    PutTag {
        /// The tag.
        doc: TagDoc,
        /// Create or replace.
        write: Write,
    },
    /// Delete a `[[tag]]` entry.
    DeleteTag {
        /// Its name.
        name: String,
    },
    /// Create or replace a trust requirement.
    PutTrust {
        /// The requirement.
        doc: TrustDoc,
        /// Create or replace.
        write: Write,
    },
    /// Delete a trust requirement.
    DeleteTrust {
        /// Its name.
        name: String,
    },
    /// A new admin token (only its hash comes here).
    CreateToken {
        /// Public id.
        id: String,
        /// Name for the audit log.
        name: String,
        /// SHA-256 (hex) of the token.
        hash: String,
    },
    /// Revoke an admin token: it authenticates nothing from then on.
    RevokeToken {
        /// Its public id.
        id: String,
    },
}

/// A new enrolment key's settings.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Public id.
    pub id: String,
    /// SHA-256 (hex) of the key.
    pub hash: String,
    /// Tags for the systems it enrols.
    pub tags: BTreeSet<String>,
    /// Auto or manual approval.
    pub approval: ApprovalMode,
    /// Use limit.
    pub uses: Option<u32>,
    /// Expiry.
    pub expires_at: Option<UnixTime>,
    /// Ephemeral systems.
    pub ephemeral: bool,
}

/// An edit of a system's administrator-owned fields; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemEdit {
    /// A new name (gateway policies naming it follow).
    #[serde(default)]
    pub name: Option<String>,
    /// New tags (replacing the old).
    #[serde(default)]
    pub tags: Option<BTreeSet<String>>,
    /// The definition's `enabled`.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The underlay endpoint other systems reach it at, `ADDRESS:PORT` (a gateway's, say);
    /// an empty string removes it.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The version the client read; when given, the edit is refused if the system changed since.
    #[serde(default)]
    pub version: Option<i64>,
}

/// One row to write, as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The `[network]` table.
    Settings(Settings),
    /// Insert or replace a system.
    PutSystem(Box<ManagedSystem>),
    /// Delete a system.
    DeleteSystem(String),
    /// Insert or replace a tag.
    PutTag(TagDoc),
    /// Delete a tag.
    DeleteTag(String),
    /// Insert or replace a trust requirement.
    PutTrust(TrustDoc),
    /// Delete a trust requirement.
    DeleteTrust(String),
    /// Insert or replace a policy.
    PutPolicy(Box<PolicyDoc>),
    /// Delete a policy.
    DeletePolicy(String),
    /// Replace every `[[preshared_key]]` table.
    PresharedKeys(Vec<PresharedKeyDoc>),
    /// Insert or replace an enrolment key.
    PutKey(EnrolmentKey),
    /// Insert or replace an admin token.
    PutToken(AdminToken),
}

/// What a command made.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Rows to write, all or nothing, at `revision + 1`.
    pub changes: Vec<Change>,
    /// The audit entry.
    pub audit: AuditEntry,
    /// Warnings of the validation (the change is accepted).
    pub warnings: Vec<FieldProblem>,
    /// The state after the change.
    pub next: std::sync::Arc<State>,
    /// The validated network after the change, when the command changed the definition.
    pub network: Option<std::sync::Arc<enclave_policy::Network>>,
    /// The object the command was about, for the reply.
    pub reply: Reply,
}

/// The object a command was about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// A system.
    System(Box<ManagedSystem>),
    /// A key.
    Key(EnrolmentKey),
    /// A policy.
    Policy(Box<PolicyDoc>),
    /// A tag.
    Tag(TagDoc),
    /// A trust requirement.
    Trust(TrustDoc),
    /// A token.
    Token(AdminToken),
    /// Nothing more to say (deleted, imported).
    Done {
        /// What happened.
        done: String,
    },
}

/// Why the enrolment endpoint refused a key. The reasons a key's holder may learn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// No such key.
    Unknown,
    /// Revoked by the administrator.
    Revoked,
    /// Past its expiry.
    Expired,
    /// Its uses are spent.
    UsedUp,
}

impl std::fmt::Display for KeyRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyRefusal::Unknown => "the enrolment key is not valid",
            KeyRefusal::Revoked => "the enrolment key was revoked",
            KeyRefusal::Expired => "the enrolment key has expired",
            KeyRefusal::UsedUp => "the enrolment key has no uses left",
        })
    }
}

/// Why a command was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The change breaks the network definition's rules (or an input is malformed).
    #[error("the change was refused: {}", summary(.0))]
    Invalid(Vec<FieldProblem>),
    /// The object does not exist.
    #[error("no {what} named {name:?}")]
    NotFound {
        /// `system`, `policy`, …
        what: &'static str,
        /// The name asked for.
        name: String,
    },
    /// The object exists already.
    #[error("a {what} named {name:?} exists already")]
    Exists {
        /// `system`, `policy`, …
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// The object changed since the client read it.
    #[error(
        "{what} {name:?} was changed by someone else (now at version {current}, you sent {sent}): \
         read it again and re-apply your change"
    )]
    Stale {
        /// `system`, `policy`, …
        what: &'static str,
        /// Its name.
        name: String,
        /// Its version now.
        current: i64,
        /// The version the client sent.
        sent: i64,
    },
    /// The enrolment key was refused.
    #[error("{0}")]
    Key(KeyRefusal),
    /// The public key is enrolled already.
    #[error("this WireGuard public key is already enrolled (as {0:?})")]
    KeyTaken(String),
    /// The overlay network has no free address left.
    #[error("the overlay network {0} has no free address left")]
    NoAddress(Ipv4Net),
}

fn summary(problems: &[FieldProblem]) -> String {
    problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

pub(crate) fn problem(field: impl Into<String>, message: impl Into<String>) -> Refusal {
    Refusal::Invalid(vec![FieldProblem {
        severity: Severity::Error,
        field: field.into(),
        message: message.into(),
        hint: None,
    }])
}
