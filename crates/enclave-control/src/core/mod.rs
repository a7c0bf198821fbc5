//! The server's logic: plain code over plain values. [`apply`] takes the state at one revision,
//! a [`Command`] and the time, and returns the [`Change`]s to commit, the audit entry and the
//! reply, or the reason for refusing. No I/O, no clock, no randomness (the shell makes secrets
//! and passes their hashes in).

mod app;
mod command;
mod document;
mod endpoints;
mod input;
mod subnets;
mod targeted;

pub(crate) use command::problem;
pub use command::{
    Change, Command, Ctx, KeyRefusal, NewKey, Outcome, Refusal, Reply, SystemEdit, Write,
};
pub(crate) use document::Edit;
pub use input::{
    allocate, check_label, check_name, is_public_key, key_state, parse_subnet, unique_name,
    MAX_LIST, MAX_NAME, MAX_POLICY_NAME,
};
use input::{check_list, check_tags, host_bits};
pub use subnets::{subnet_rows, SubnetRow};

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use enclave_policy::Network;

use crate::definition::{self, Imported};
use crate::model::{
    AdminToken, Approval, ApprovalMode, AuditEntry, EnrolmentKey, GatewayDoc, ManagedSystem,
    PolicyDoc, PolicyKind, State, TagDoc, TrustDoc, Versioned,
};

/// Which objects a command touched; their rows are written.
#[derive(Default)]
pub(crate) struct Touched {
    settings: bool,
    preshared_keys: bool,
    systems: BTreeSet<String>,
    tags: BTreeSet<String>,
    trust: BTreeSet<String>,
    policies: BTreeSet<String>,
    keys: BTreeSet<String>,
    tokens: BTreeSet<String>,
    /// Whether the definition changed and must be validated.
    definition: bool,
    /// When the definition changed only as the targeted check covers: how.
    targeted: Option<targeted::Targeted>,
}

/// Applies `command` to `state`.
///
/// # Errors
/// [`Refusal`]: nothing is to be written.
pub fn apply(state: &State, command: Command, ctx: &Ctx) -> Result<Outcome, Refusal> {
    apply_on(state, None, command, ctx)
}

/// Applies `command` to `state`, whose definition validated to `before` (when the caller
/// knows it did): then an enrolment or an approval change is checked only for what it can
/// break (see `targeted`), not by validating the whole definition again.
///
/// # Errors
/// [`Refusal`]: nothing is to be written.
pub fn apply_on(
    state: &State,
    before: Option<&Network>,
    command: Command,
    ctx: &Ctx,
) -> Result<Outcome, Refusal> {
    let mut next = state.clone();
    next.revision = state.revision + 1;
    let version = next.revision;
    let mut touched = Touched::default();
    let (action, target, detail, reply) = run(&mut next, &mut touched, command, ctx)?;

    let (warnings, network) = if touched.definition {
        let quick = before
            .zip(touched.targeted.as_ref())
            .and_then(|(before, change)| targeted::check(before, &next, change));
        match quick {
            Some(network) => (Vec::new(), Some(network)),
            None => match definition::validate(&next) {
                Ok(valid) => (valid.warnings, Some(Arc::new(valid.network))),
                Err(problems) => return Err(Refusal::Invalid(problems)),
            },
        }
    } else {
        (Vec::new(), None)
    };

    let mut changes = Vec::new();
    if touched.settings {
        changes.push(Change::Settings(next.settings.clone()));
    }
    if touched.preshared_keys {
        changes.push(Change::PresharedKeys(next.preshared_keys.clone()));
    }
    let put_system = |s| Change::PutSystem(Box::new(s));
    let put_policy = |p| Change::PutPolicy(Box::new(p));
    stamp(
        &touched.systems,
        &mut next.systems,
        version,
        &mut changes,
        put_system,
        Change::DeleteSystem,
    );
    stamp(
        &touched.tags,
        &mut next.tags,
        version,
        &mut changes,
        Change::PutTag,
        Change::DeleteTag,
    );
    stamp(
        &touched.trust,
        &mut next.trust_requirements,
        version,
        &mut changes,
        Change::PutTrust,
        Change::DeleteTrust,
    );
    stamp(
        &touched.policies,
        &mut next.policies,
        version,
        &mut changes,
        put_policy,
        Change::DeletePolicy,
    );
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
        Reply::Policy(p) => Reply::Policy(Box::new(document::fresh(&next, *p))),
        Reply::Tag(t) => Reply::Tag(document::fresh(&next, t)),
        Reply::Trust(t) => Reply::Trust(document::fresh(&next, t)),
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
        next: Arc::new(next),
        network,
        reply,
    })
}

/// The rows of the touched objects of one kind: each one still there is stamped with the new
/// `version` and written (`put`); each one gone is deleted (`delete`).
fn stamp<T: Versioned>(
    touched: &BTreeSet<String>,
    objects: &mut impl Objects<T>,
    version: i64,
    changes: &mut Vec<Change>,
    put: impl Fn(T) -> Change,
    delete: impl Fn(String) -> Change,
) {
    for name in touched {
        match objects.object_mut(name) {
            Some(object) => {
                object.set_version(version);
                changes.push(put(object.clone()));
            }
            None => changes.push(delete(name.clone())),
        }
    }
}

/// A map of objects by name (a `BTreeMap`, or the systems' persistent map).
trait Objects<T> {
    fn object_mut(&mut self, name: &str) -> Option<&mut T>;
}

impl<T> Objects<T> for BTreeMap<String, T> {
    fn object_mut(&mut self, name: &str) -> Option<&mut T> {
        self.get_mut(name)
    }
}

impl<T: Clone> Objects<T> for imbl::OrdMap<String, T> {
    fn object_mut(&mut self, name: &str) -> Option<&mut T> {
        self.get_mut(name)
    }
}

type Ran = (&'static str, String, String, Reply);

fn system_mut<'s>(state: &'s mut State, name: &str) -> Result<&'s mut ManagedSystem, Refusal> {
    found(&mut state.systems, "system", name)
}

/// The object named `name` (an id for keys and tokens), or a refusal: no `what` of that name.
fn found<'o, T>(
    objects: &'o mut impl Objects<T>,
    what: &'static str,
    name: &str,
) -> Result<&'o mut T, Refusal> {
    objects.object_mut(name).ok_or_else(|| Refusal::NotFound {
        what,
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
            let key = found(&mut next.keys, "enrolment key", &id)?;
            key.revoked = true;
            t.keys.insert(id.clone());
            Ok(("key.revoke", id, String::new(), Reply::Key(key.clone())))
        }
        Command::Enrol {
            key_hash,
            public_key,
            hostname,
        } => enrol(next, t, &key_hash, public_key, hostname.as_deref(), ctx),
        Command::Approve { name } => approve(next, t, name, Approval::Approved, "system.approve"),
        Command::Revoke { name } => approve(next, t, name, Approval::Revoked, "system.revoke"),
        Command::Delete { name } => {
            system_mut(next, &name)?;
            next.systems.remove(&name);
            t.systems.insert(name.clone());
            t.definition = true;
            Ok(("system.delete", name, String::new(), done("deleted")))
        }
        Command::UpdateSystem { name, edit } => update_system(next, t, name, edit),
        Command::AddAppDevice {
            name,
            public_key,
            tags,
            key_made_here,
        } => app::add(next, t, name, &public_key, tags, key_made_here, ctx),
        Command::SetGateway { name, allowed } => {
            let system = system_mut(next, &name)?;
            system
                .gateway
                .get_or_insert_with(GatewayDoc::default)
                .allowed = allowed;
            let detail = if allowed { "on" } else { "off" };
            Ok(edited(t, system, "system.gateway", detail.to_owned()))
        }
        Command::AddSubnet { system, subnet } => {
            if subnet.trunc() != subnet {
                return Err(host_bits("subnet", subnet));
            }
            let s = system_mut(next, &system)?;
            let gateway = s.gateway.get_or_insert_with(GatewayDoc::default);
            gateway.removed.remove(&subnet);
            gateway.subnets.insert(subnet);
            Ok(edited(t, s, "subnet.add", subnet.to_string()))
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
            Ok(edited(t, s, "subnet.remove", subnet.to_string()))
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
        Command::ObserveEndpoints { endpoints } => endpoints::observe(next, t, endpoints),
        Command::PutPolicy { doc, write } => put_policy(next, t, doc, write),
        Command::DeletePolicy { name } => document::delete::<PolicyDoc>(next, t, name),
        Command::PutTag { doc, write } => {
            check_name("name", &doc.name)?;
            check_list("trust", &doc.trust)?;
            document::put(next, t, doc, write, String::new())
        }
        Command::DeleteTag { name } => document::delete::<TagDoc>(next, t, name),
        Command::PutTrust { doc, write } => {
            check_label("name", &doc.name)?;
            check_list("allow", &doc.allow)?;
            check_list("block", &doc.block)?;
            document::put(next, t, doc, write, String::new())
        }
        Command::DeleteTrust { name } => document::delete::<TrustDoc>(next, t, name),
        Command::CreateToken { id, name, hash } => {
            check_name("name", &name)?;
            let token = AdminToken {
                id: id.clone(),
                name: name.clone(),
                hash: hash.into(),
                created_at: ctx.now,
                revoked: false,
            };
            next.tokens.insert(id.clone(), token.clone());
            t.tokens.insert(id.clone());
            Ok(("token.create", id, name, Reply::Token(token)))
        }
        Command::RevokeToken { id } => {
            let token = found(&mut next.tokens, "admin token", &id)?;
            token.revoked = true;
            let (name, reply) = (token.name.clone(), Reply::Token(token.clone()));
            t.tokens.insert(id.clone());
            Ok(("token.revoke", id, name, reply))
        }
    }
}

/// Approves or revokes the system `name` (`approval`, audited as `action`); only what that
/// can break is checked (`targeted`).
fn approve(
    next: &mut State,
    t: &mut Touched,
    name: String,
    approval: Approval,
    action: &'static str,
) -> Result<Ran, Refusal> {
    let system = system_mut(next, &name)?;
    system.approval = approval;
    t.targeted = Some(targeted::Targeted::Approval(name));
    Ok(edited(t, system, action, String::new()))
}

/// What a command that changed `system`'s part of the definition ran: its row is written,
/// the definition validated, and the reply shows it.
fn edited(t: &mut Touched, system: &ManagedSystem, action: &'static str, detail: String) -> Ran {
    t.systems.insert(system.name.clone());
    t.definition = true;
    let reply = Reply::System(Box::new(system.clone()));
    (action, system.name.clone(), detail, reply)
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
            // An export writes the observed endpoint of a system without one set by hand;
            // the same endpoint read back stays observed, not set by hand.
            system.observed_endpoint = old.observed_endpoint;
            if old.endpoint.is_none() && system.endpoint == old.observed_endpoint {
                system.endpoint = None;
            }
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
    t.preshared_keys = true;
    t.definition = true;
    let detail = format!(
        "{} systems, {} policies, {} tags, {} trust requirements",
        systems.len(),
        imported.policies.len(),
        imported.tags.len(),
        imported.trust_requirements.len()
    );
    next.settings = imported.settings;
    next.systems = systems.into_iter().collect();
    next.tags = imported.tags;
    next.trust_requirements = imported.trust_requirements;
    next.policies = imported.policies;
    next.preshared_keys = imported.preshared_keys;
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
        hash: key.hash.into(),
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
        .find(|k| crate::secret::same(k.hash.expose(), key_hash))
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
    key.uses += 1;
    let (key_id, tags, approval, ephemeral) = (
        key.id.clone(),
        key.tags.clone(),
        key.approval,
        key.ephemeral,
    );
    let name = unique_name(hostname, &next.systems);
    let approval = match approval {
        ApprovalMode::Auto => Approval::Approved,
        ApprovalMode::Manual => Approval::Pending,
    };
    let system = join(
        next,
        t,
        name.clone(),
        &public_key,
        tags,
        approval,
        ephemeral,
        key_id.clone(),
        ctx,
    )?;
    let address = system.address;
    t.keys.insert(key_id.clone());
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

/// Adds a new system, the same whichever way it joins (an enrolment, a device with the
/// WireGuard app): its public key must not be taken; it gets the first free overlay address,
/// no endpoint and no gateway settings, which is what the targeted check covers for an added
/// system.
#[allow(clippy::too_many_arguments)]
fn join(
    next: &mut State,
    t: &mut Touched,
    name: String,
    public_key: &str,
    tags: BTreeSet<String>,
    approval: Approval,
    ephemeral: bool,
    enrolled_with: String,
    ctx: &Ctx,
) -> Result<ManagedSystem, Refusal> {
    if let Some(s) = next.systems.values().find(|s| s.public_key == public_key) {
        return Err(Refusal::KeyTaken(s.name.clone()));
    }
    let used: BTreeSet<Ipv4Addr> = next.systems.values().map(|s| s.address).collect();
    let overlay = next.settings.overlay;
    let address = allocate(overlay, &used).ok_or(Refusal::NoAddress(overlay))?;
    let system = ManagedSystem {
        name: name.clone(),
        public_key: public_key.to_owned(),
        address,
        tags,
        endpoint: None,
        observed_endpoint: None,
        enabled: true,
        approval,
        gateway: None,
        discovered: BTreeMap::new(),
        ephemeral,
        enrolled_with: Some(enrolled_with),
        created_at: ctx.now,
        last_seen: None,
        connected: false,
        version: 0,
    };
    next.systems.insert(name.clone(), system.clone());
    t.systems.insert(name.clone());
    t.definition = true;
    t.targeted = Some(targeted::Targeted::Added(name));
    Ok(system)
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
    let endpoint = match edit.endpoint.as_deref().map(str::trim) {
        None => None,
        Some("") => Some(None),
        Some(text) => Some(Some(text.parse::<std::net::SocketAddr>().map_err(
            |_| {
                command::problem(
                    "endpoint",
                    format!("{text:?} is not ADDRESS:PORT (for example 203.0.113.2:51820)"),
                )
            },
        )?)),
    };
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
        // So do the pre-shared keys of its tunnels.
        for psk in &mut next.preshared_keys {
            for system in &mut psk.systems {
                if *system == name {
                    system.clone_from(&new_name);
                    t.preshared_keys = true;
                }
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
    if let Some(endpoint) = endpoint {
        detail.push(match endpoint {
            Some(endpoint) => format!("endpoint {endpoint}"),
            None => "no endpoint".to_owned(),
        });
        system.endpoint = endpoint;
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
    let kind = match doc.kind {
        PolicyKind::Direct => "direct",
        PolicyKind::Gateway => "gateway",
    };
    document::put(next, t, doc, write, kind.to_owned())
}

#[cfg(test)]
mod tests;
