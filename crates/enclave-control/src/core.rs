//! The server's logic: plain code over plain values. [`apply`] takes the state at one revision,
//! a [`Command`] and the time, and returns the [`Change`]s to commit, the audit entry and the
//! reply, or the reason for refusing. No I/O, no clock, no randomness (the shell makes secrets
//! and passes their hashes in).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use base64::Engine as _;
use enclave_policy::Severity;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::definition::{self, FieldProblem, Imported};
use crate::model::{
    AdminToken, Approval, ApprovalMode, AuditEntry, DiscoveredSubnet, EnrolmentKey, GatewayDoc,
    ManagedSystem, PolicyDoc, PolicyKind, Settings, State, TagDoc, TrustDoc, UnixTime,
};

/// Longest name of a system, tag or token.
pub const MAX_NAME: usize = 63;
/// Longest policy or trust requirement name.
pub const MAX_POLICY_NAME: usize = 100;
/// Most elements in one list field (tags, subnets, ACL entries, …).
pub const MAX_LIST: usize = 1024;

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
    /// Rename, retag, enable or disable a system.
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
    pub next: State,
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

fn problem(field: impl Into<String>, message: impl Into<String>) -> Refusal {
    Refusal::Invalid(vec![FieldProblem {
        severity: Severity::Error,
        field: field.into(),
        message: message.into(),
        hint: None,
    }])
}

/// Checks a system, tag or token name: 1–63 of `a-z A-Z 0-9 - _ .`.
pub fn check_name(field: &str, name: &str) -> Result<(), Refusal> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(problem(
            field,
            format!("must be 1 to {MAX_NAME} characters long"),
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(problem(
            field,
            format!("{name:?} may hold only letters, digits, '-', '_' and '.'"),
        ));
    }
    Ok(())
}

/// Checks a policy or trust requirement name: 1–100 printable characters.
pub fn check_label(field: &str, name: &str) -> Result<(), Refusal> {
    if name.trim().is_empty() || name.chars().count() > MAX_POLICY_NAME {
        return Err(problem(
            field,
            format!("must be 1 to {MAX_POLICY_NAME} characters long, not only spaces"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(problem(field, "must not hold control characters"));
    }
    Ok(())
}

fn check_list<T>(field: &str, list: &[T]) -> Result<(), Refusal> {
    if list.len() > MAX_LIST {
        return Err(problem(
            field,
            format!("holds {} entries; at most {MAX_LIST}", list.len()),
        ));
    }
    Ok(())
}

fn check_tags(field: &str, tags: &BTreeSet<String>) -> Result<(), Refusal> {
    check_list(field, &tags.iter().collect::<Vec<_>>())?;
    for (i, tag) in tags.iter().enumerate() {
        check_name(&format!("{field}[{i}]"), tag)?;
    }
    Ok(())
}

/// A subnet given by the administrator: host bits must be clear.
///
/// # Errors
/// The field and the fix (`did you mean 10.1.0.0/16?`).
pub fn parse_subnet(field: &str, text: &str) -> Result<Ipv4Net, Refusal> {
    let net: Ipv4Net = text.trim().parse().map_err(|_| {
        problem(
            field,
            format!("{text:?} is not an IPv4 CIDR such as 192.168.77.0/24"),
        )
    })?;
    if net.trunc() != net {
        return Err(host_bits(field, net));
    }
    Ok(net)
}

/// Whether `text` is a WireGuard public key (base64 of 32 bytes).
pub fn is_public_key(text: &str) -> bool {
    text.len() == 44
        && base64::engine::general_purpose::STANDARD
            .decode(text)
            .is_ok_and(|b| b.len() == 32)
}

/// The lowest free address of the overlay network (not its network or broadcast address).
pub fn allocate(overlay: Ipv4Net, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let first = u32::from(overlay.network()).checked_add(1)?;
    let last = u32::from(overlay.broadcast()).checked_sub(1)?;
    let mut candidate = first;
    for addr in used.range(Ipv4Addr::from(first)..=Ipv4Addr::from(last)) {
        let addr = u32::from(*addr);
        if addr > candidate {
            break;
        }
        candidate = addr.checked_add(1)?;
    }
    (candidate <= last).then(|| Ipv4Addr::from(candidate))
}

/// A host name made into a unique system name: lower case, `a-z 0-9 -`, `-2`, `-3`… on a clash.
pub fn unique_name(hostname: Option<&str>, taken: &BTreeMap<String, ManagedSystem>) -> String {
    let mut base: String = hostname
        .unwrap_or("")
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base = base.trim_matches('-').chars().take(MAX_NAME - 6).collect();
    if base.is_empty() {
        base = "system".to_owned();
    }
    if !taken.contains_key(&base) {
        return base;
    }
    (2u32..)
        .map(|n| format!("{base}-{n}"))
        .find(|name| !taken.contains_key(name))
        .unwrap_or(base)
}

/// What a key would say to an enrolling agent now.
pub fn key_state(key: &EnrolmentKey, now: UnixTime) -> Result<(), KeyRefusal> {
    if key.revoked {
        Err(KeyRefusal::Revoked)
    } else if key.expires_at.is_some_and(|at| now >= at) {
        Err(KeyRefusal::Expired)
    } else if key.uses_allowed.is_some_and(|n| key.uses >= n) {
        Err(KeyRefusal::UsedUp)
    } else {
        Ok(())
    }
}

/// Which objects a command touched; their rows are written.
#[derive(Default)]
struct Touched {
    settings: bool,
    systems: BTreeSet<String>,
    tags: BTreeSet<String>,
    trust: BTreeSet<String>,
    policies: BTreeSet<String>,
    keys: BTreeSet<String>,
    tokens: BTreeSet<String>,
    /// Whether the definition changed and must be validated.
    definition: bool,
}

/// Applies `command` to `state`.
///
/// # Errors
/// [`Refusal`]: nothing is to be written.
pub fn apply(state: &State, command: Command, ctx: &Ctx) -> Result<Outcome, Refusal> {
    let mut next = state.clone();
    next.revision = state.revision + 1;
    let version = next.revision;
    let mut touched = Touched::default();
    let (action, target, detail, reply) = run(&mut next, &mut touched, command, ctx)?;

    let warnings = if touched.definition {
        match definition::validate(&next) {
            Ok(valid) => valid.warnings,
            Err(problems) => return Err(Refusal::Invalid(problems)),
        }
    } else {
        Vec::new()
    };

    let mut changes = Vec::new();
    if touched.settings {
        changes.push(Change::Settings(next.settings.clone()));
    }
    for name in &touched.systems {
        match next.systems.get_mut(name) {
            Some(s) => {
                s.version = version;
                changes.push(Change::PutSystem(Box::new(s.clone())));
            }
            None => changes.push(Change::DeleteSystem(name.clone())),
        }
    }
    for name in &touched.tags {
        match next.tags.get_mut(name) {
            Some(t) => {
                t.version = version;
                changes.push(Change::PutTag(t.clone()));
            }
            None => changes.push(Change::DeleteTag(name.clone())),
        }
    }
    for name in &touched.trust {
        match next.trust_requirements.get_mut(name) {
            Some(t) => {
                t.version = version;
                changes.push(Change::PutTrust(t.clone()));
            }
            None => changes.push(Change::DeleteTrust(name.clone())),
        }
    }
    for name in &touched.policies {
        match next.policies.get_mut(name) {
            Some(p) => {
                p.version = version;
                changes.push(Change::PutPolicy(Box::new(p.clone())));
            }
            None => changes.push(Change::DeletePolicy(name.clone())),
        }
    }
    for id in &touched.keys {
        if let Some(k) = next.keys.get(id) {
            changes.push(Change::PutKey(k.clone()));
        }
    }
    for id in &touched.tokens {
        if let Some(t) = next.tokens.get(id) {
            changes.push(Change::PutToken(t.clone()));
        }
    }
    // The reply shows the object as written (with its new version).
    let reply = match reply {
        Reply::System(s) => next
            .systems
            .get(&s.name)
            .map_or(Reply::System(s), |s| Reply::System(Box::new(s.clone()))),
        Reply::Policy(p) => next
            .policies
            .get(&p.name)
            .map_or(Reply::Policy(p), |p| Reply::Policy(Box::new(p.clone()))),
        Reply::Tag(t) => next
            .tags
            .get(&t.name)
            .map_or(Reply::Tag(t), |t| Reply::Tag(t.clone())),
        Reply::Trust(t) => next
            .trust_requirements
            .get(&t.name)
            .map_or(Reply::Trust(t), |t| Reply::Trust(t.clone())),
        other => other,
    };
    Ok(Outcome {
        changes,
        audit: AuditEntry {
            revision: version,
            at: ctx.now,
            actor: ctx.actor.clone(),
            action: action.to_owned(),
            target,
            detail,
        },
        warnings,
        next,
        reply,
    })
}

type Ran = (&'static str, String, String, Reply);

fn system_mut<'s>(state: &'s mut State, name: &str) -> Result<&'s mut ManagedSystem, Refusal> {
    state
        .systems
        .get_mut(name)
        .ok_or_else(|| Refusal::NotFound {
            what: "system",
            name: name.to_owned(),
        })
}

fn done(text: impl Into<String>) -> Reply {
    Reply::Done { done: text.into() }
}

fn run(next: &mut State, t: &mut Touched, command: Command, ctx: &Ctx) -> Result<Ran, Refusal> {
    match command {
        Command::Import(imported) => import(next, t, *imported),
        Command::CreateKey(key) => create_key(next, t, key, ctx),
        Command::RevokeKey { id } => {
            let key = next.keys.get_mut(&id).ok_or_else(|| Refusal::NotFound {
                what: "enrolment key",
                name: id.clone(),
            })?;
            key.revoked = true;
            t.keys.insert(id.clone());
            Ok(("key.revoke", id, String::new(), Reply::Key(key.clone())))
        }
        Command::Enrol {
            key_hash,
            public_key,
            hostname,
        } => enrol(next, t, &key_hash, public_key, hostname.as_deref(), ctx),
        Command::Approve { name } => {
            let system = system_mut(next, &name)?;
            system.approval = Approval::Approved;
            t.systems.insert(name.clone());
            t.definition = true;
            let reply = Reply::System(Box::new(system.clone()));
            Ok(("system.approve", name, String::new(), reply))
        }
        Command::Revoke { name } => {
            let system = system_mut(next, &name)?;
            system.approval = Approval::Revoked;
            t.systems.insert(name.clone());
            t.definition = true;
            let reply = Reply::System(Box::new(system.clone()));
            Ok(("system.revoke", name, String::new(), reply))
        }
        Command::Delete { name } => {
            system_mut(next, &name)?;
            next.systems.remove(&name);
            t.systems.insert(name.clone());
            t.definition = true;
            Ok(("system.delete", name, String::new(), done("deleted")))
        }
        Command::UpdateSystem { name, edit } => update_system(next, t, name, edit),
        Command::SetGateway { name, allowed } => {
            let system = system_mut(next, &name)?;
            system
                .gateway
                .get_or_insert_with(GatewayDoc::default)
                .allowed = allowed;
            t.systems.insert(name.clone());
            t.definition = true;
            let reply = Reply::System(Box::new(system.clone()));
            let detail = if allowed { "on" } else { "off" };
            Ok(("system.gateway", name, detail.to_owned(), reply))
        }
        Command::AddSubnet { system, subnet } => {
            if subnet.trunc() != subnet {
                return Err(host_bits("subnet", subnet));
            }
            let s = system_mut(next, &system)?;
            let gateway = s.gateway.get_or_insert_with(GatewayDoc::default);
            gateway.removed.remove(&subnet);
            gateway.subnets.insert(subnet);
            t.systems.insert(system.clone());
            t.definition = true;
            let reply = Reply::System(Box::new(s.clone()));
            Ok(("subnet.add", system, subnet.to_string(), reply))
        }
        Command::RemoveSubnet { system, subnet } => {
            let s = system_mut(next, &system)?;
            let discovered = s.discovered.contains_key(&subnet);
            let gateway = s.gateway.get_or_insert_with(GatewayDoc::default);
            let added = gateway.subnets.remove(&subnet);
            let would_discover = gateway.auto_discover && subnet.prefix_len() > 0;
            if !added && !discovered && !would_discover {
                return Err(Refusal::NotFound {
                    what: "subnet",
                    name: format!("{subnet} on {system}"),
                });
            }
            if discovered || would_discover {
                gateway.removed.insert(subnet);
            }
            t.systems.insert(system.clone());
            t.definition = true;
            let reply = Reply::System(Box::new(s.clone()));
            Ok(("subnet.remove", system, subnet.to_string(), reply))
        }
        Command::ReportDiscovered { system, subnets } => {
            let s = system_mut(next, &system)?;
            let detail = subnets
                .keys()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            s.discovered = subnets;
            t.systems.insert(system.clone());
            let reply = Reply::System(Box::new(s.clone()));
            Ok(("subnet.discovered", system, detail, reply))
        }
        Command::PutPolicy { doc, write } => put_policy(next, t, doc, write),
        Command::DeletePolicy { name } => {
            if next.policies.remove(&name).is_none() {
                return Err(Refusal::NotFound {
                    what: "policy",
                    name,
                });
            }
            t.policies.insert(name.clone());
            t.definition = true;
            Ok(("policy.delete", name, String::new(), done("deleted")))
        }
        Command::PutTag { doc, write } => {
            check_name("name", &doc.name)?;
            check_list("trust", &doc.trust)?;
            precondition(
                "tag",
                &doc.name,
                doc.version,
                next.tags.get(&doc.name).map(|t| t.version),
                write,
            )?;
            let name = doc.name.clone();
            next.tags.insert(name.clone(), doc.clone());
            t.tags.insert(name.clone());
            t.definition = true;
            Ok((action("tag", write), name, String::new(), Reply::Tag(doc)))
        }
        Command::DeleteTag { name } => {
            if next.tags.remove(&name).is_none() {
                return Err(Refusal::NotFound { what: "tag", name });
            }
            t.tags.insert(name.clone());
            t.definition = true;
            Ok(("tag.delete", name, String::new(), done("deleted")))
        }
        Command::PutTrust { doc, write } => {
            check_label("name", &doc.name)?;
            check_list("allow", &doc.allow)?;
            check_list("block", &doc.block)?;
            let current = next.trust_requirements.get(&doc.name).map(|t| t.version);
            precondition("trust requirement", &doc.name, doc.version, current, write)?;
            let name = doc.name.clone();
            next.trust_requirements.insert(name.clone(), doc.clone());
            t.trust.insert(name.clone());
            t.definition = true;
            Ok((
                action("trust", write),
                name,
                String::new(),
                Reply::Trust(doc),
            ))
        }
        Command::DeleteTrust { name } => {
            if next.trust_requirements.remove(&name).is_none() {
                return Err(Refusal::NotFound {
                    what: "trust requirement",
                    name,
                });
            }
            t.trust.insert(name.clone());
            t.definition = true;
            Ok(("trust.delete", name, String::new(), done("deleted")))
        }
        Command::CreateToken { id, name, hash } => {
            check_name("name", &name)?;
            let token = AdminToken {
                id: id.clone(),
                name: name.clone(),
                hash,
                created_at: ctx.now,
                revoked: false,
            };
            next.tokens.insert(id.clone(), token.clone());
            t.tokens.insert(id.clone());
            Ok(("token.create", id, name, Reply::Token(token)))
        }
    }
}

fn host_bits(field: &str, net: Ipv4Net) -> Refusal {
    Refusal::Invalid(vec![FieldProblem {
        severity: Severity::Error,
        field: field.to_owned(),
        message: format!("{net} has host bits set"),
        hint: Some(format!("did you mean {}?", net.trunc())),
    }])
}

fn action(what: &str, write: Write) -> &'static str {
    match (what, write) {
        ("tag", Write::Create) => "tag.create",
        ("tag", Write::Update) => "tag.update",
        ("trust", Write::Create) => "trust.create",
        ("trust", Write::Update) => "trust.update",
        (_, Write::Create) => "policy.create",
        (_, Write::Update) => "policy.update",
    }
}

/// Create: must not exist. Update: must exist at the version the client read.
fn precondition(
    what: &'static str,
    name: &str,
    sent: i64,
    current: Option<i64>,
    write: Write,
) -> Result<(), Refusal> {
    match (write, current) {
        (Write::Create, Some(_)) => Err(Refusal::Exists {
            what,
            name: name.to_owned(),
        }),
        (Write::Update, None) => Err(Refusal::NotFound {
            what,
            name: name.to_owned(),
        }),
        (Write::Update, Some(current)) if current != sent => Err(Refusal::Stale {
            what,
            name: name.to_owned(),
            current,
            sent,
        }),
        _ => Ok(()),
    }
}

fn import(next: &mut State, t: &mut Touched, imported: Imported) -> Result<Ran, Refusal> {
    // Systems keep what only the server knows (approval of enrolled ones, discovered subnets,
    // key, last seen) when the file names them with the same public key.
    let mut systems = BTreeMap::new();
    for (name, mut system) in imported.systems {
        if let Some(old) = next
            .systems
            .values()
            .find(|s| s.public_key == system.public_key)
        {
            system.approval = old.approval;
            // An export writes a pending or revoked system as disabled: that `false` is its
            // approval, not the administrator's switch, which keeps its value.
            if old.approval != Approval::Approved && !system.enabled {
                system.enabled = old.enabled;
            }
            system.discovered = old.discovered.clone();
            system.ephemeral = old.ephemeral;
            system.enrolled_with = old.enrolled_with.clone();
            system.created_at = old.created_at;
            system.last_seen = old.last_seen;
            system.connected = old.connected;
        }
        systems.insert(name, system);
    }
    t.systems.extend(next.systems.keys().cloned());
    t.systems.extend(systems.keys().cloned());
    t.tags.extend(next.tags.keys().cloned());
    t.tags.extend(imported.tags.keys().cloned());
    t.trust.extend(next.trust_requirements.keys().cloned());
    t.trust.extend(imported.trust_requirements.keys().cloned());
    t.policies.extend(next.policies.keys().cloned());
    t.policies.extend(imported.policies.keys().cloned());
    t.settings = true;
    t.definition = true;
    let detail = format!(
        "{} systems, {} policies, {} tags, {} trust requirements",
        systems.len(),
        imported.policies.len(),
        imported.tags.len(),
        imported.trust_requirements.len()
    );
    next.settings = imported.settings;
    next.systems = systems;
    next.tags = imported.tags;
    next.trust_requirements = imported.trust_requirements;
    next.policies = imported.policies;
    Ok((
        "definition.import",
        String::new(),
        detail.clone(),
        done(detail),
    ))
}

fn create_key(next: &mut State, t: &mut Touched, key: NewKey, ctx: &Ctx) -> Result<Ran, Refusal> {
    check_tags("tags", &key.tags)?;
    if key.uses == Some(0) {
        return Err(problem(
            "uses",
            "must be at least 1 (leave it out for no limit)",
        ));
    }
    if key.expires_at.is_some_and(|at| at <= ctx.now) {
        return Err(problem("expires", "must lie in the future"));
    }
    let record = EnrolmentKey {
        id: key.id.clone(),
        hash: key.hash,
        tags: key.tags,
        approval: key.approval,
        uses_allowed: key.uses,
        uses: 0,
        expires_at: key.expires_at,
        ephemeral: key.ephemeral,
        revoked: false,
        created_at: ctx.now,
        created_by: ctx.actor.clone(),
    };
    let tags: Vec<&str> = record.tags.iter().map(String::as_str).collect();
    let detail = format!(
        "tags={} approval={} uses={} expires_at={} ephemeral={}",
        tags.join(","),
        match record.approval {
            ApprovalMode::Auto => "auto",
            ApprovalMode::Manual => "manual",
        },
        record
            .uses_allowed
            .map_or("unlimited".to_owned(), |n| n.to_string()),
        record
            .expires_at
            .map_or("never".to_owned(), |t| t.to_string()),
        record.ephemeral
    );
    next.keys.insert(key.id.clone(), record.clone());
    t.keys.insert(key.id.clone());
    Ok(("key.create", key.id, detail, Reply::Key(record)))
}

fn enrol(
    next: &mut State,
    t: &mut Touched,
    key_hash: &str,
    public_key: String,
    hostname: Option<&str>,
    ctx: &Ctx,
) -> Result<Ran, Refusal> {
    let Some(key) = next
        .keys
        .values_mut()
        .find(|k| crate::secret::same(&k.hash, key_hash))
    else {
        return Err(Refusal::Key(KeyRefusal::Unknown));
    };
    key_state(key, ctx.now).map_err(Refusal::Key)?;
    if !is_public_key(&public_key) {
        return Err(problem(
            "public_key",
            "is not a WireGuard public key (base64 of 32 bytes)",
        ));
    }
    if let Some(s) = next.systems.values().find(|s| s.public_key == public_key) {
        return Err(Refusal::KeyTaken(s.name.clone()));
    }
    key.uses += 1;
    let (key_id, tags, approval, ephemeral) = (
        key.id.clone(),
        key.tags.clone(),
        key.approval,
        key.ephemeral,
    );
    let used: BTreeSet<Ipv4Addr> = next.systems.values().map(|s| s.address).collect();
    let overlay = next.settings.overlay;
    let address = allocate(overlay, &used).ok_or(Refusal::NoAddress(overlay))?;
    let name = unique_name(hostname, &next.systems);
    let system = ManagedSystem {
        name: name.clone(),
        public_key,
        address,
        tags,
        endpoint: None,
        enabled: true,
        approval: match approval {
            ApprovalMode::Auto => Approval::Approved,
            ApprovalMode::Manual => Approval::Pending,
        },
        gateway: None,
        discovered: BTreeMap::new(),
        ephemeral,
        enrolled_with: Some(key_id.clone()),
        created_at: ctx.now,
        last_seen: None,
        connected: false,
        version: 0,
    };
    next.systems.insert(name.clone(), system.clone());
    t.systems.insert(name.clone());
    t.keys.insert(key_id.clone());
    t.definition = true;
    let detail = format!(
        "key {key_id}, address {address}, {}",
        system.approval.as_str()
    );
    Ok((
        "system.enrol",
        name,
        detail,
        Reply::System(Box::new(system)),
    ))
}

fn update_system(
    next: &mut State,
    t: &mut Touched,
    name: String,
    edit: SystemEdit,
) -> Result<Ran, Refusal> {
    let current = system_mut(next, &name)?.version;
    if let Some(sent) = edit.version {
        if sent != current {
            return Err(Refusal::Stale {
                what: "system",
                name,
                current,
                sent,
            });
        }
    }
    if let Some(tags) = &edit.tags {
        check_tags("tags", tags)?;
    }
    let mut system = next
        .systems
        .remove(&name)
        .ok_or_else(|| Refusal::NotFound {
            what: "system",
            name: name.clone(),
        })?;
    t.systems.insert(name.clone());
    let mut detail = Vec::new();
    if let Some(new_name) = edit.name.filter(|n| *n != name) {
        check_name("name", &new_name)?;
        if next.systems.contains_key(&new_name) {
            return Err(Refusal::Exists {
                what: "system",
                name: new_name,
            });
        }
        // Gateway policies name gateways by system name: they follow the rename.
        for policy in next.policies.values_mut() {
            if policy.gateways.contains(&name) {
                for g in &mut policy.gateways {
                    if *g == name {
                        g.clone_from(&new_name);
                    }
                }
                t.policies.insert(policy.name.clone());
            }
        }
        detail.push(format!("name {new_name}"));
        system.name.clone_from(&new_name);
    }
    if let Some(tags) = edit.tags {
        detail.push(format!("tags {tags:?}"));
        system.tags = tags;
    }
    if let Some(enabled) = edit.enabled {
        detail.push(format!("enabled {enabled}"));
        system.enabled = enabled;
    }
    t.systems.insert(system.name.clone());
    t.definition = true;
    let reply = Reply::System(Box::new(system.clone()));
    next.systems.insert(system.name.clone(), system);
    Ok(("system.update", name, detail.join(", "), reply))
}

fn put_policy(
    next: &mut State,
    t: &mut Touched,
    doc: PolicyDoc,
    write: Write,
) -> Result<Ran, Refusal> {
    check_label("name", &doc.name)?;
    for (field, list) in [
        ("senders", &doc.senders),
        ("receivers", &doc.receivers),
        ("gateways", &doc.gateways),
        ("subnets", &doc.subnets),
        ("trust", &doc.trust),
    ] {
        check_list(field, list)?;
    }
    check_list("acl", &doc.acl)?;
    if let Some(filter) = &doc.filter {
        check_list("filter", filter)?;
    }
    match doc.kind {
        PolicyKind::Direct => {
            if !doc.gateways.is_empty() || !doc.subnets.is_empty() || doc.filter.is_some() {
                return Err(problem(
                    "kind",
                    "a direct policy has receivers, not gateways, subnets or a filter",
                ));
            }
        }
        PolicyKind::Gateway => {
            if !doc.receivers.is_empty() {
                return Err(problem(
                    "receivers",
                    "a gateway policy has gateways and subnets, not receivers",
                ));
            }
        }
    }
    let current = next.policies.get(&doc.name).map(|p| p.version);
    precondition("policy", &doc.name, doc.version, current, write)?;
    let name = doc.name.clone();
    next.policies.insert(name.clone(), doc.clone());
    t.policies.insert(name.clone());
    t.definition = true;
    let kind = match doc.kind {
        PolicyKind::Direct => "direct",
        PolicyKind::Gateway => "gateway",
    };
    Ok((
        action("policy", write),
        name,
        kind.to_owned(),
        Reply::Policy(Box::new(doc)),
    ))
}

/// One row of `subnets list`: a gateway's subnet, where it comes from and whether it is served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetRow {
    /// The gateway.
    pub system: String,
    /// The subnet.
    pub subnet: Ipv4Net,
    /// `discovered` or `added`.
    pub source: String,
    /// The interface it was discovered on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Why discovery took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `served`, `removed`, or `gateway off`.
    pub state: String,
}

/// Every gateway's subnets: discovered ones (served or removed) and added ones.
pub fn subnet_rows(state: &State) -> Vec<SubnetRow> {
    let mut rows = Vec::new();
    for system in state.systems.values() {
        let gateway = system.gateway.clone().unwrap_or_default();
        let served = |subnet: &Ipv4Net| {
            if gateway.removed.contains(subnet) {
                "removed"
            } else if !gateway.allowed || !system.effective_enabled() {
                "gateway off"
            } else {
                "served"
            }
        };
        let mut seen = BTreeSet::new();
        for (subnet, found) in &system.discovered {
            seen.insert(*subnet);
            let added = gateway.subnets.contains(subnet);
            let state = if !added && !gateway.auto_discover {
                "not served (auto_discover off)"
            } else {
                served(subnet)
            };
            rows.push(SubnetRow {
                system: system.name.clone(),
                subnet: *subnet,
                source: if added {
                    "discovered, added"
                } else {
                    "discovered"
                }
                .to_owned(),
                interface: Some(found.interface.clone()),
                reason: Some(found.reason.clone()),
                state: state.to_owned(),
            });
        }
        for subnet in gateway.subnets.iter().filter(|s| !seen.contains(s)) {
            rows.push(SubnetRow {
                system: system.name.clone(),
                subnet: *subnet,
                source: "added".to_owned(),
                interface: None,
                reason: None,
                state: served(subnet).to_owned(),
            });
        }
        for subnet in gateway.removed.iter().filter(|s| !seen.contains(s)) {
            rows.push(SubnetRow {
                system: system.name.clone(),
                subnet: *subnet,
                source: "removed by hand".to_owned(),
                interface: None,
                reason: None,
                state: "removed".to_owned(),
            });
        }
    }
    rows
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
