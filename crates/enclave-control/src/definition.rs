//! The managed network as a network definition: rendered to TOML (for `export`, and to be
//! validated by the policy engine's own loader, the rules of `policy check`), and read back
//! from TOML (`import`).
//!
//! Validation renders every value on a line of its own and remembers which field each line
//! holds, so the engine's `LINE:COL` diagnostics become field names such as
//! `policies["office"].subnets[1]`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use enclave_policy::{Diagnostic, Network, Severity};
use serde::{Deserialize, Serialize};

use crate::model::{
    AclDoc, Approval, GatewayDoc, HoursDoc, ManagedSystem, PolicyDoc, PolicyKind, Ports,
    PresharedKeyDoc, Settings, State, TagDoc, TrustDoc, UnixTime,
};

/// One problem with a change, named by the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldProblem {
    /// Error (the change is refused) or warning (accepted).
    pub severity: Severity,
    /// The field, e.g. `policies["office"].subnets[1]` or `systems["gw"].gateway`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// What to do, when the engine can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl std::fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}: {severity}: {}", self.field, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// A definition that passed validation.
#[derive(Debug, Clone)]
pub struct Validated {
    /// The compiled model, for views and explain.
    pub network: Network,
    /// Warnings, by field.
    pub warnings: Vec<FieldProblem>,
}

/// TOML text with, for each line, the field it holds.
struct Writer {
    text: String,
    fields: Vec<String>,
}

impl Writer {
    fn new() -> Self {
        Self {
            text: String::new(),
            fields: Vec::new(),
        }
    }

    fn line(&mut self, field: &str, text: &str) {
        self.text.push_str(text);
        self.text.push('\n');
        self.fields.push(field.to_owned());
    }

    fn blank(&mut self, field: &str) {
        self.line(field, "");
    }

    fn string(&mut self, field: &str, key: &str, value: &str) {
        self.line(
            &format!("{field}.{key}"),
            &format!("{key} = {}", quote(value)),
        );
    }

    fn raw(&mut self, field: &str, key: &str, value: impl std::fmt::Display) {
        self.line(&format!("{field}.{key}"), &format!("{key} = {value}"));
    }

    /// An array of strings, one element per line.
    fn strings<'a>(&mut self, field: &str, key: &str, items: impl IntoIterator<Item = &'a str>) {
        let field = format!("{field}.{key}");
        self.line(&field, &format!("{key} = ["));
        for (i, item) in items.into_iter().enumerate() {
            self.line(&format!("{field}[{i}]"), &format!("  {},", quote(item)));
        }
        self.line(&field, "]");
    }
}

/// A TOML basic string.
fn quote(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn key(name: &str) -> String {
    format!("{name:?}")
}

/// Renders the managed network as a network definition (the `export` format).
pub fn render(state: &State) -> String {
    write(state).text
}

fn write(state: &State) -> Writer {
    let mut w = Writer::new();
    w.line(
        "network",
        "# The network definition, exported by enclave-control.",
    );
    w.line("network", "[network]");
    w.string("network", "overlay", &state.settings.overlay.to_string());
    w.raw("network", "keepalive", state.settings.keepalive);
    for system in state.systems.values() {
        write_system(&mut w, system);
    }
    for tag in state.tags.values() {
        let field = format!("tags[{}]", key(&tag.name));
        w.blank(&field);
        w.line(&field, "[[tag]]");
        w.string(&field, "name", &tag.name);
        w.strings(&field, "trust", tag.trust.iter().map(String::as_str));
    }
    for trust in state.trust_requirements.values() {
        let field = format!("trust_requirements[{}]", key(&trust.name));
        w.blank(&field);
        w.line(&field, "[[trust_requirement]]");
        w.string(&field, "name", &trust.name);
        w.string(&field, "kind", &trust.kind);
        w.strings(&field, "allow", trust.allow.iter().map(String::as_str));
        w.strings(&field, "block", trust.block.iter().map(String::as_str));
    }
    for policy in state.policies.values() {
        write_policy(&mut w, policy);
    }
    for (i, psk) in state.preshared_keys.iter().enumerate() {
        let field = format!("preshared_keys[{i}]");
        w.blank(&field);
        w.line(&field, "[[preshared_key]]");
        w.strings(&field, "systems", psk.systems.iter().map(String::as_str));
        w.string(&field, "file", &psk.file);
    }
    w
}

fn write_system(w: &mut Writer, system: &ManagedSystem) {
    let field = format!("systems[{}]", key(&system.name));
    w.blank(&field);
    match system.approval {
        Approval::Approved => {}
        Approval::Pending => w.line(&field, "# pending approval: exported as disabled"),
        Approval::Revoked => w.line(&field, "# revoked: exported as disabled"),
    }
    w.line(&field, "[[system]]");
    w.string(&field, "name", &system.name);
    w.string(&field, "public_key", &system.public_key);
    w.string(&field, "address", &system.address.to_string());
    w.strings(&field, "tags", system.tags.iter().map(String::as_str));
    if let Some(endpoint) = system.effective_endpoint() {
        if system.endpoint.is_none() {
            w.line(
                &format!("{field}.observed_endpoint"),
                "# endpoint observed by the server (its agent's address), not set by hand",
            );
        }
        w.string(&field, "endpoint", &endpoint.to_string());
    }
    w.raw(&field, "enabled", system.effective_enabled());
    if let Some(gateway) = &system.gateway {
        let field = format!("{field}.gateway");
        w.line(&field, "[system.gateway]");
        w.raw(&field, "allowed", gateway.allowed);
        let subnets: Vec<String> = gateway.subnets.iter().map(|n| n.to_string()).collect();
        w.strings(&field, "subnets", subnets.iter().map(String::as_str));
        let removed: Vec<String> = gateway.removed.iter().map(|n| n.to_string()).collect();
        w.strings(&field, "removed", removed.iter().map(String::as_str));
        w.raw(&field, "auto_discover", gateway.auto_discover);
        w.raw(&field, "priority", gateway.priority);
    }
}

fn write_policy(w: &mut Writer, policy: &PolicyDoc) {
    let field = format!("policies[{}]", key(&policy.name));
    w.blank(&field);
    match policy.kind {
        PolicyKind::Direct => w.line(&field, "[[direct_policy]]"),
        PolicyKind::Gateway => w.line(&field, "[[gateway_policy]]"),
    }
    w.string(&field, "name", &policy.name);
    w.raw(&field, "enabled", policy.enabled);
    w.strings(&field, "senders", policy.senders.iter().map(String::as_str));
    match policy.kind {
        PolicyKind::Direct => {
            w.strings(
                &field,
                "receivers",
                policy.receivers.iter().map(String::as_str),
            );
        }
        PolicyKind::Gateway => {
            w.strings(
                &field,
                "gateways",
                policy.gateways.iter().map(String::as_str),
            );
            w.strings(&field, "subnets", policy.subnets.iter().map(String::as_str));
            if let Some(filter) = &policy.filter {
                w.strings(&field, "filter", filter.iter().map(String::as_str));
            }
        }
    }
    let acl_field = format!("{field}.acl");
    w.line(&acl_field, "acl = [");
    for (i, entry) in policy.acl.iter().enumerate() {
        let mut text = format!("  {{ protocol = {}", quote(&entry.protocol));
        match &entry.ports {
            Some(Ports::One(port)) => {
                let _ = write!(text, ", ports = {port}");
            }
            Some(Ports::Range(range)) => {
                let _ = write!(text, ", ports = {}", quote(range));
            }
            None => {}
        }
        if let Some(label) = &entry.label {
            let _ = write!(text, ", label = {}", quote(label));
        }
        text.push_str(" },");
        w.line(&format!("{acl_field}[{i}]"), &text);
    }
    w.line(&acl_field, "]");
    w.strings(&field, "trust", policy.trust.iter().map(String::as_str));
    if let Some(hours) = &policy.active_hours {
        let field = format!("{field}.active_hours");
        match policy.kind {
            PolicyKind::Direct => w.line(&field, "[direct_policy.active_hours]"),
            PolicyKind::Gateway => w.line(&field, "[gateway_policy.active_hours]"),
        }
        w.strings(&field, "days", hours.days.iter().map(String::as_str));
        w.strings(&field, "hours", hours.hours.iter().map(String::as_str));
        w.string(&field, "zone", &hours.zone);
    }
}

/// Validates the managed network by the rules of `policy check`.
///
/// # Errors
/// Every error (and warning) found, each naming its field.
pub fn validate(state: &State) -> Result<Validated, Vec<FieldProblem>> {
    let w = write(state);
    let field_of = |d: &Diagnostic| FieldProblem {
        severity: d.severity,
        field: w
            .fields
            .get(d.line.saturating_sub(1))
            .cloned()
            .unwrap_or_else(|| "definition".to_owned()),
        message: d.message.clone(),
        hint: d.hint.clone(),
    };
    match enclave_policy::load("definition", &w.text) {
        Ok(loaded) => Ok(Validated {
            network: loaded.network,
            warnings: loaded.warnings.iter().map(field_of).collect(),
        }),
        Err(enclave_policy::Error::Invalid { diagnostics, .. }) => {
            Err(diagnostics.iter().map(field_of).collect())
        }
        Err(other) => Err(vec![FieldProblem {
            severity: Severity::Error,
            field: "definition".to_owned(),
            message: other.to_string(),
            hint: None,
        }]),
    }
}

/// What `import` read from a file: the definition's objects, as the server keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// `[network]`.
    pub settings: Settings,
    /// Systems, approved (a file's systems were put there by an administrator).
    pub systems: BTreeMap<String, ManagedSystem>,
    /// `[[tag]]`s.
    pub tags: BTreeMap<String, TagDoc>,
    /// `[[trust_requirement]]`s.
    pub trust_requirements: BTreeMap<String, TrustDoc>,
    /// Both kinds of policies.
    pub policies: BTreeMap<String, PolicyDoc>,
    /// `[[preshared_key]]`s, in file order.
    pub preshared_keys: Vec<PresharedKeyDoc>,
}

#[derive(Deserialize)]
struct FileDoc {
    #[serde(default)]
    tag: Vec<TagDoc>,
    #[serde(default)]
    trust_requirement: Vec<TrustDoc>,
    #[serde(default)]
    direct_policy: Vec<FilePolicy>,
    #[serde(default)]
    gateway_policy: Vec<FilePolicy>,
    #[serde(default)]
    preshared_key: Vec<PresharedKeyDoc>,
}

#[derive(Deserialize)]
struct FilePolicy {
    name: String,
    enabled: Option<bool>,
    senders: Vec<String>,
    #[serde(default)]
    receivers: Vec<String>,
    #[serde(default)]
    gateways: Vec<String>,
    #[serde(default)]
    subnets: Vec<String>,
    filter: Option<Vec<String>>,
    acl: Vec<AclDoc>,
    #[serde(default)]
    trust: Vec<String>,
    active_hours: Option<HoursDoc>,
}

impl FilePolicy {
    fn into_doc(self, kind: PolicyKind) -> PolicyDoc {
        PolicyDoc {
            name: self.name,
            kind,
            enabled: self.enabled.unwrap_or(true),
            senders: self.senders,
            receivers: self.receivers,
            gateways: self.gateways,
            subnets: self.subnets,
            filter: self.filter,
            acl: self.acl,
            trust: self.trust,
            active_hours: self.active_hours,
            version: 0,
        }
    }
}

/// Reads a network definition file for `import`. `file` names it in diagnostics; `now` is the
/// systems' creation time.
///
/// # Errors
/// The engine's diagnostics (`FILE:LINE:COL: error: …`), exactly as `policy check` prints them.
pub fn import(file: &str, text: &str, now: UnixTime) -> Result<Imported, Vec<Diagnostic>> {
    let network = match enclave_policy::load(file, text) {
        Ok(loaded) => loaded.network,
        Err(enclave_policy::Error::Invalid { diagnostics, .. }) => return Err(diagnostics),
        Err(other) => return Err(vec![whole_file(file, other.to_string())]),
    };
    // The engine accepted the text, so it has the shape below; read the tables as written.
    let doc: FileDoc = toml::from_str(text).map_err(|e| vec![whole_file(file, e.to_string())])?;
    let systems = network
        .systems
        .values()
        .map(|s| {
            let system = ManagedSystem {
                name: s.name.clone(),
                public_key: s.public_key.clone(),
                address: s.address,
                tags: s.tags.clone(),
                endpoint: s.endpoint,
                observed_endpoint: None,
                enabled: s.enabled,
                approval: Approval::Approved,
                gateway: s.gateway.as_ref().map(|g| GatewayDoc {
                    allowed: g.allowed,
                    subnets: g.subnets.clone(),
                    removed: g.removed.clone(),
                    auto_discover: g.auto_discover,
                    priority: g.priority,
                }),
                discovered: BTreeMap::new(),
                ephemeral: false,
                enrolled_with: None,
                created_at: now,
                last_seen: None,
                connected: false,
                version: 0,
            };
            (s.name.clone(), system)
        })
        .collect();
    let mut policies = BTreeMap::new();
    for p in doc.direct_policy {
        policies.insert(p.name.clone(), p.into_doc(PolicyKind::Direct));
    }
    for p in doc.gateway_policy {
        policies.insert(p.name.clone(), p.into_doc(PolicyKind::Gateway));
    }
    Ok(Imported {
        settings: Settings {
            overlay: network.overlay,
            keepalive: network.keepalive.unwrap_or(0),
        },
        systems,
        tags: doc.tag.into_iter().map(|t| (t.name.clone(), t)).collect(),
        trust_requirements: doc
            .trust_requirement
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect(),
        policies,
        preshared_keys: doc.preshared_key,
    })
}

fn whole_file(file: &str, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: file.to_owned(),
        line: 1,
        column: 1,
        message,
        hint: None,
    }
}
