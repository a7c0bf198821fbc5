//! The Policies pages as HTML, and the policy form as typed ([`Draft`]).
//!
//! Everything that comes from a user or an agent is escaped with [`esc`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::core::subnet_rows;
use crate::definition::FieldProblem;
use crate::model::{AclDoc, HoursDoc, PolicyDoc, PolicyKind, Ports, State};

use super::pages::{esc, layout, paragraph, FIELD_ERROR};
use super::policies::path;
use super::session::Session;

/// Blank ACL rows offered under the filled ones.
const BLANK_ACL_ROWS: usize = 2;
/// ACL rows read from a form at most.
const MAX_ACL_ROWS: usize = 256;
/// The days of active hours, as the definition writes them.
const DAYS: [(&str, &str); 7] = [
    ("mon", "Mon"),
    ("tue", "Tue"),
    ("wed", "Wed"),
    ("thu", "Thu"),
    ("fri", "Fri"),
    ("sat", "Sat"),
    ("sun", "Sun"),
];
/// The protocols of an ACL entry.
const PROTOCOLS: [&str; 4] = ["any", "icmp", "tcp", "udp"];

/// One ACL row as typed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AclRow {
    pub protocol: String,
    pub ports: String,
    pub label: String,
}

impl AclRow {
    fn is_blank(&self) -> bool {
        self.protocol.trim().is_empty()
            && self.ports.trim().is_empty()
            && self.label.trim().is_empty()
    }
}

/// A policy form as typed (or as a stored policy fills it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Draft {
    pub kind: PolicyKind,
    pub name: String,
    /// The version read (0 for a new policy).
    pub version: i64,
    /// Whether it exists already (the form edits it).
    pub stored: bool,
    pub enabled: bool,
    pub senders: String,
    pub receivers: String,
    pub gateways: Vec<String>,
    /// Subnets ticked in the list.
    pub subnets: Vec<String>,
    /// Subnets typed under the list.
    pub more_subnets: String,
    pub filtering: bool,
    pub filter: String,
    pub acl: Vec<AclRow>,
    pub trust: Vec<String>,
    pub timed: bool,
    pub days: Vec<String>,
    pub hours: String,
    pub zone: String,
}

/// Words separated by commas or white space.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Entries separated by commas or line breaks (a range may be typed with spaces).
fn entries(text: &str) -> Vec<String> {
    text.split([',', '\n', ';'])
        .map(|e| e.split_whitespace().collect::<String>())
        .filter(|e| !e.is_empty())
        .collect()
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

impl Draft {
    /// An empty form: enabled, one ACL entry `any`.
    pub(crate) fn new(kind: PolicyKind) -> Self {
        Self {
            kind,
            name: String::new(),
            version: 0,
            stored: false,
            enabled: true,
            senders: String::new(),
            receivers: String::new(),
            gateways: Vec::new(),
            subnets: Vec::new(),
            more_subnets: String::new(),
            filtering: false,
            filter: String::new(),
            acl: vec![AclRow {
                protocol: "any".to_owned(),
                ..AclRow::default()
            }],
            trust: Vec::new(),
            timed: false,
            days: Vec::new(),
            hours: String::new(),
            zone: String::new(),
        }
    }

    /// The form of a stored policy.
    pub(crate) fn of(doc: &PolicyDoc) -> Self {
        let hours = doc.active_hours.clone();
        Self {
            kind: doc.kind,
            name: doc.name.clone(),
            version: doc.version,
            stored: true,
            enabled: doc.enabled,
            senders: doc.senders.join(", "),
            receivers: doc.receivers.join(", "),
            gateways: doc.gateways.clone(),
            subnets: doc.subnets.clone(),
            more_subnets: String::new(),
            filtering: doc.filter.is_some(),
            filter: doc.filter.clone().unwrap_or_default().join("\n"),
            acl: doc
                .acl
                .iter()
                .map(|a| AclRow {
                    protocol: a.protocol.clone(),
                    ports: match &a.ports {
                        Some(Ports::One(p)) => p.to_string(),
                        Some(Ports::Range(r)) => r.clone(),
                        None => String::new(),
                    },
                    label: a.label.clone().unwrap_or_default(),
                })
                .collect(),
            trust: doc.trust.clone(),
            timed: hours.is_some(),
            days: hours.as_ref().map(|h| h.days.clone()).unwrap_or_default(),
            hours: hours
                .as_ref()
                .map(|h| h.hours.join(", "))
                .unwrap_or_default(),
            zone: hours.map(|h| h.zone).unwrap_or_default(),
        }
    }

    /// Reads a posted form; `kind` is the stored policy's when it is edited.
    pub(crate) fn read(fields: &[(String, String)], kind: Option<PolicyKind>) -> Self {
        let one = |name: &str| {
            fields
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map_or(String::new(), |(_, v)| v.clone())
        };
        let all = |name: &str| {
            let mut list = Vec::new();
            for (k, v) in fields {
                if k == name && !v.trim().is_empty() {
                    push_unique(&mut list, v.trim().to_owned());
                }
            }
            list
        };
        let kind = kind.unwrap_or(if one("kind") == "direct" {
            PolicyKind::Direct
        } else {
            PolicyKind::Gateway
        });
        let mut acl: BTreeMap<usize, AclRow> = BTreeMap::new();
        for (k, v) in fields {
            let Some((what, index)) = k
                .strip_prefix("acl-")
                .and_then(|rest| rest.rsplit_once('-'))
            else {
                continue;
            };
            let Ok(index) = index.parse::<usize>() else {
                continue;
            };
            if index >= MAX_ACL_ROWS {
                continue;
            }
            let row = acl.entry(index).or_default();
            match what {
                "protocol" => row.protocol.clone_from(v),
                "ports" => row.ports.clone_from(v),
                "label" => row.label.clone_from(v),
                _ => {}
            }
        }
        let mut acl: Vec<AclRow> = match acl.keys().next_back() {
            Some(&last) => (0..=last)
                .map(|i| acl.remove(&i).unwrap_or_default())
                .collect(),
            None => Vec::new(),
        };
        while acl.last().is_some_and(AclRow::is_blank) {
            acl.pop();
        }
        let version = one("version").trim().parse().unwrap_or(0);
        Self {
            kind,
            name: one("name").trim().to_owned(),
            version,
            stored: version > 0,
            enabled: one("enabled") == "on",
            senders: one("senders"),
            receivers: one("receivers"),
            gateways: all("gateways"),
            subnets: all("subnets"),
            more_subnets: one("more_subnets"),
            filtering: one("filtering") == "on",
            filter: one("filter"),
            acl,
            trust: all("trust"),
            timed: one("timed") == "on",
            days: all("days"),
            hours: one("hours"),
            zone: one("zone").trim().to_owned(),
        }
    }

    /// The policy the draft says, and for each of its ACL entries the draft's row.
    pub(crate) fn doc(&self) -> (PolicyDoc, Vec<usize>) {
        let mut acl = Vec::new();
        let mut rows = Vec::new();
        for (i, row) in self.acl.iter().enumerate() {
            if row.is_blank() {
                continue;
            }
            let ports = row.ports.trim();
            let ports = if ports.is_empty() {
                None
            } else if let Ok(port) = ports.parse::<i64>() {
                Some(Ports::One(port))
            } else {
                Some(Ports::Range(ports.split_whitespace().collect()))
            };
            let label = row.label.trim();
            acl.push(AclDoc {
                protocol: row.protocol.trim().to_owned(),
                ports,
                label: (!label.is_empty()).then(|| label.to_owned()),
            });
            rows.push(i);
        }
        let gateway = self.kind == PolicyKind::Gateway;
        let mut subnets = self.subnets.clone();
        for subnet in words(&self.more_subnets) {
            push_unique(&mut subnets, subnet);
        }
        let doc = PolicyDoc {
            name: self.name.clone(),
            kind: self.kind,
            enabled: self.enabled,
            senders: words(&self.senders),
            receivers: if gateway {
                Vec::new()
            } else {
                words(&self.receivers)
            },
            gateways: if gateway {
                self.gateways.clone()
            } else {
                Vec::new()
            },
            subnets: if gateway { subnets } else { Vec::new() },
            filter: (gateway && self.filtering).then(|| entries(&self.filter)),
            acl,
            trust: self.trust.clone(),
            active_hours: self.timed.then(|| HoursDoc {
                days: self.days.clone(),
                hours: words(&self.hours),
                zone: self.zone.clone(),
            }),
            version: self.version,
        };
        (doc, rows)
    }
}

/// Where on the form a problem is shown: `name`, `senders`, `receivers`, `gateways`,
/// `subnets`, `filter`, `acl` (the list), `acl:N` (row N of the form), `trust`,
/// `active_hours`, `days`, `hours`, `zone`, or `""` (at the top).
pub(crate) fn slot(field: &str, policy: &str, rows: &[usize]) -> String {
    let prefix = format!("policies[{policy:?}]");
    let rest = match field.strip_prefix(&prefix) {
        Some(rest) => rest.strip_prefix('.').unwrap_or(rest),
        // Another object's field (`systems["gw"].gateway`), or the whole definition.
        None if field.contains(['[', '"']) => return String::new(),
        None => field,
    };
    let head = rest.split(['.', '[']).next().unwrap_or("");
    match head {
        "acl" => {
            let row = rest
                .strip_prefix("acl[")
                .and_then(|r| r.split(']').next())
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| rows.get(i));
            row.map_or_else(|| "acl".to_owned(), |row| format!("acl:{row}"))
        }
        "active_hours" => match rest.split('.').nth(1).and_then(|s| s.split('[').next()) {
            Some(sub @ ("days" | "hours" | "zone")) => sub.to_owned(),
            _ => "active_hours".to_owned(),
        },
        "name" | "senders" | "receivers" | "gateways" | "subnets" | "filter" | "trust" => {
            head.to_owned()
        }
        _ => String::new(),
    }
}

/// Problems of the form sorted by [`slot`].
struct Notes {
    by_slot: BTreeMap<String, Vec<(bool, FieldProblem)>>,
}

impl Notes {
    fn new(draft: &Draft, errors: &[FieldProblem], warnings: &[FieldProblem]) -> Self {
        let (_, rows) = draft.doc();
        let mut slots: BTreeSet<&str> = [
            "name",
            "senders",
            "acl",
            "trust",
            "active_hours",
            "days",
            "hours",
            "zone",
        ]
        .into_iter()
        .collect();
        match draft.kind {
            PolicyKind::Gateway => slots.extend(["gateways", "subnets", "filter"]),
            PolicyKind::Direct => {
                slots.insert("receivers");
            }
        }
        let mut by_slot: BTreeMap<String, Vec<(bool, FieldProblem)>> = BTreeMap::new();
        let notes = errors
            .iter()
            .map(|p| (true, p))
            .chain(warnings.iter().map(|p| (false, p)));
        for (error, problem) in notes {
            let mut at = slot(&problem.field, &draft.name, &rows);
            if !(slots.contains(at.as_str()) || at.starts_with("acl:")) {
                at = String::new();
            }
            by_slot
                .entry(at)
                .or_default()
                .push((error, problem.clone()));
        }
        Self { by_slot }
    }

    /// The problems of `slot` as HTML, to go next to its field.
    fn at(&self, slot: &str) -> String {
        self.by_slot
            .get(slot)
            .into_iter()
            .flatten()
            .map(|(error, p)| {
                let open = if *error {
                    FIELD_ERROR
                } else {
                    r#"<p class="field-warning">"#
                };
                paragraph(open, p)
            })
            .collect()
    }

    fn any_errors(&self) -> bool {
        self.by_slot.values().flatten().any(|(e, _)| *e)
    }
}

fn kind_name(kind: PolicyKind) -> &'static str {
    match kind {
        PolicyKind::Gateway => "Gateway access",
        PolicyKind::Direct => "Direct access",
    }
}

fn tags_html(tags: &[String]) -> String {
    if tags.is_empty() {
        return r#"<span class="empty">none</span>"#.to_owned();
    }
    tags.iter()
        .map(|t| format!(r#"<span class="tag">{}</span>"#, esc(t)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// An ACL entry as `status` shows it: `tcp 445 (SMB)`.
fn acl_text(entry: &AclDoc) -> String {
    let mut text = entry.protocol.clone();
    match &entry.ports {
        Some(Ports::One(p)) => {
            let _ = write!(text, " {p}");
        }
        Some(Ports::Range(r)) => {
            let _ = write!(text, " {r}");
        }
        None => {}
    }
    if let Some(label) = &entry.label {
        let _ = write!(text, " ({label})");
    }
    text
}

/// What a policy lets through, in short.
fn summary(doc: &PolicyDoc) -> String {
    let mut lines = Vec::new();
    if doc.kind == PolicyKind::Gateway {
        lines.push(match &doc.filter {
            Some(filter) => format!(
                "<strong>Subnet filter:</strong> {}",
                esc(&filter.join(", "))
            ),
            None => "Whole subnets".to_owned(),
        });
    }
    let acl: Vec<String> = doc.acl.iter().map(acl_text).collect();
    lines.push(if acl.is_empty() {
        "<strong>ACLs:</strong> none (grants nothing)".to_owned()
    } else {
        format!("<strong>ACLs:</strong> {}", esc(&acl.join(", ")))
    });
    if !doc.trust.is_empty() {
        lines.push(format!(
            "<strong>Trust:</strong> {}",
            esc(&doc.trust.join(", "))
        ));
    }
    if let Some(hours) = &doc.active_hours {
        lines.push(format!(
            "<strong>Active:</strong> {} {} ({})",
            esc(&hours.days.join(" ")),
            esc(&hours.hours.join(", ")),
            esc(&hours.zone)
        ));
    }
    lines.join("<br>")
}

/// The Policies page.
pub(crate) fn list(session: &Session, state: &State, error: Option<&str>) -> String {
    let csrf = esc(&session.csrf);
    let mut rows = String::new();
    for doc in state.policies.values() {
        let to = match doc.kind {
            PolicyKind::Gateway => {
                let mut to = format!(
                    r#"<span class="hint">via</span> {}"#,
                    if doc.gateways.is_empty() {
                        r#"<span class="empty">no gateway</span>"#.to_owned()
                    } else {
                        esc(&doc.gateways.join(", "))
                    }
                );
                for subnet in &doc.subnets {
                    let _ = write!(to, "<br><code>{}</code>", esc(subnet));
                }
                to
            }
            PolicyKind::Direct => format!(
                r#"<span class="hint">receivers</span> {}"#,
                tags_html(&doc.receivers)
            ),
        };
        let (state_badge, toggle, turn) = if doc.enabled {
            (r#"<span class="badge ok">enabled</span>"#, "Disable", "off")
        } else {
            (r#"<span class="badge bad">disabled</span>"#, "Enable", "on")
        };
        let _ = writeln!(
            rows,
            r#"<tr><td><a href="{href}">{name}</a></td><td>{kind}</td><td>{senders}</td><td>{to}</td><td>{summary}</td><td>{state_badge}<form method="post" action="{href}/enabled"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="version" value="{version}"><input type="hidden" name="enabled" value="{turn}"> <button type="submit" aria-label="{toggle} {name}">{toggle}</button></form></td></tr>"#,
            href = path(&doc.name),
            name = esc(&doc.name),
            kind = kind_name(doc.kind),
            senders = tags_html(&doc.senders),
            summary = summary(doc),
            version = doc.version,
        );
    }
    if rows.is_empty() {
        rows = r#"<tr><td colspan="6" class="empty">No policies yet: nothing is allowed. Make a gateway access policy to let tagged systems reach a gateway's subnets.</td></tr>"#.to_owned();
    }
    let error = error.map_or_else(String::new, |e| {
        format!(r#"<p class="error" role="alert">{}</p>"#, esc(e))
    });
    layout(
        Some(session),
        "Policies",
        &format!(
            r#"{error}<p class="actions"><a class="button primary" href="/portal/new-policy?kind=gateway" id="new-gateway-policy">New gateway access policy</a> <a class="button" href="/portal/new-policy?kind=direct" id="new-direct-policy">New direct access policy</a></p>
<p class="hint">A <strong>gateway access policy</strong> lets systems with the sender tags reach subnets through gateways (one way: the subnets' devices cannot start connections to the senders). A <strong>direct access policy</strong> lets systems with the sender tags reach systems with the receiver tags. Nothing is allowed that no enabled policy allows.</p>
<div class="table"><table>
<thead><tr><th scope="col">Name</th><th scope="col">Kind</th><th scope="col">Senders</th><th scope="col">Gateways and subnets, or receivers</th><th scope="col">Filter and ACLs</th><th scope="col">State</th></tr></thead>
<tbody>
{rows}</tbody></table></div>"#
        ),
    )
}

/// One check box of a list: `<p>` with the box, its label (HTML) and a hint.
fn check_box(id: &str, name: &str, value: &str, label: &str, on: bool, hint: &str) -> String {
    format!(
        r#"<p class="check"><input type="checkbox" id="{id}" name="{name}" value="{value}"{on}> <label for="{id}">{label}</label> <span class="hint">{hint}</span></p>
"#,
        value = esc(value),
        on = checked(on),
        hint = esc(hint),
    )
}

/// One checkbox of a group: the value it sends, its label (HTML) and a hint (text).
struct Choice {
    value: String,
    label: String,
    hint: String,
}

/// A group of checkboxes: the ids are `{id}-0`, `{id}-1`…, each box sends field `name`, and
/// `empty` (HTML) stands in their place when there is no choice.
struct Group {
    id: &'static str,
    name: &'static str,
    empty: &'static str,
}

const GATEWAY_BOXES: Group = Group {
    id: "gateway",
    name: "gateways",
    empty: r#"<p class="empty">No system is allowed to act as a gateway yet: switch one on in its page under Systems.</p>"#,
};

const SUBNET_BOXES: Group = Group {
    id: "subnet",
    name: "subnets",
    empty: r#"<p class="empty">No gateway serves a subnet yet.</p>"#,
};

const TRUST_BOXES: Group = Group {
    id: "trust",
    name: "trust",
    empty: r#"<p class="empty">No trust requirements are defined.</p>"#,
};

/// The checkboxes of `group`, one a choice, each ticked when `chosen` holds its value.
fn check_boxes(group: &Group, choices: &[Choice], chosen: &[String]) -> String {
    if choices.is_empty() {
        return group.empty.to_owned();
    }
    choices
        .iter()
        .enumerate()
        .map(|(i, choice)| {
            check_box(
                &format!("{}-{i}", group.id),
                group.name,
                &choice.value,
                &choice.label,
                chosen.contains(&choice.value),
                &choice.hint,
            )
        })
        .collect()
}

fn checked(on: bool) -> &'static str {
    if on {
        " checked"
    } else {
        ""
    }
}

/// The gateways the form offers: systems allowed to act as one, and those the draft names.
/// For each, whether it is allowed and the subnets it serves.
fn gateway_choices(state: &State, draft: &Draft) -> Vec<(String, bool, Vec<String>)> {
    let rows = subnet_rows(state);
    let mut out = Vec::new();
    for system in state.systems.values() {
        let allowed = system.gateway.as_ref().is_some_and(|g| g.allowed);
        if !allowed && !draft.gateways.contains(&system.name) {
            continue;
        }
        let served = rows
            .iter()
            .filter(|r| r.system == system.name && r.state == "served")
            .map(|r| r.subnet.to_string())
            .collect();
        out.push((system.name.clone(), allowed, served));
    }
    for name in &draft.gateways {
        if !state.systems.contains_key(name) {
            out.push((name.clone(), false, Vec::new()));
        }
    }
    out
}

fn gateway_section(state: &State, draft: &Draft, notes: &Notes) -> String {
    let choices = gateway_choices(state, draft);
    // Subnets on offer, each with the gateways serving it.
    let mut offered: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, _, served) in &choices {
        for subnet in served {
            offered
                .entry(subnet.clone())
                .or_default()
                .push(name.clone());
        }
    }
    let gateways: Vec<Choice> = choices
        .iter()
        .map(|(name, allowed, served)| Choice {
            value: name.clone(),
            label: esc(name),
            hint: if !state.systems.contains_key(name) {
                "no such system".to_owned()
            } else if !allowed {
                "not allowed to act as a gateway: routes nothing".to_owned()
            } else if served.is_empty() {
                "serves no subnet yet".to_owned()
            } else {
                format!("serves {}", served.join(", "))
            },
        })
        .collect();
    let gateways = check_boxes(&GATEWAY_BOXES, &gateways, &draft.gateways);
    for subnet in &draft.subnets {
        offered.entry(subnet.clone()).or_default();
    }
    let subnets: Vec<Choice> = offered
        .iter()
        .map(|(subnet, via)| Choice {
            value: subnet.clone(),
            label: format!("<code>{}</code>", esc(subnet)),
            hint: if via.is_empty() {
                "offered by no gateway".to_owned()
            } else {
                format!("via {}", via.join(", "))
            },
        })
        .collect();
    let subnets = check_boxes(&SUBNET_BOXES, &subnets, &draft.subnets);
    format!(
        r#"<fieldset class="card"><legend>Gateways and subnets</legend>
<p class="hint">The gateways that carry the senders' traffic, and the destination subnets. Each subnet must be served by at least one of the ticked gateways; with several, senders use the first they connect to and fail over to the others.</p>
<h3 id="gateways-label">Gateways</h3>
<div role="group" aria-labelledby="gateways-label">
{gateways}</div>
{gateway_notes}
<h3 id="subnets-label">Subnets</h3>
<div role="group" aria-labelledby="subnets-label">
{subnets}</div>
<label for="more-subnets">Other subnets <span class="hint">(separated by commas, e.g. a gateway's added subnet, or <code>0.0.0.0/0</code> for all Internet traffic)</span></label>
<input id="more-subnets" name="more_subnets" value="{more}">
{subnet_notes}
</fieldset>
<fieldset class="card"><legend>Subnet filtering</legend>
<p class="check"><input type="checkbox" id="filtering" name="filtering"{filtering}> <label for="filtering">Restrict the senders to some addresses of these subnets</label></p>
<label for="filter">Allowed addresses <span class="hint">(one per line: an address <code>192.168.77.20</code>, a range <code>192.168.77.20-192.168.77.21</code> or a CIDR <code>192.168.77.16/28</code>, inside the subnets above)</span></label>
<textarea id="filter" name="filter" rows="4">{filter}</textarea>
{filter_notes}
</fieldset>"#,
        gateway_notes = notes.at("gateways"),
        more = esc(&draft.more_subnets),
        subnet_notes = notes.at("subnets"),
        filtering = checked(draft.filtering),
        filter = esc(&draft.filter),
        filter_notes = notes.at("filter"),
    )
}

fn acl_section(draft: &Draft, notes: &Notes) -> String {
    let mut rows = String::new();
    let mut all = draft.acl.clone();
    all.extend(std::iter::repeat_n(AclRow::default(), BLANK_ACL_ROWS));
    for (i, row) in all.iter().enumerate() {
        let mut options = String::from(r#"<option value="">—</option>"#);
        for p in PROTOCOLS {
            let _ = write!(
                options,
                r#"<option value="{p}"{}>{p}</option>"#,
                if row.protocol == p { " selected" } else { "" }
            );
        }
        // Something typed that is no protocol: kept, so its error makes sense.
        if !row.protocol.is_empty() && !PROTOCOLS.contains(&row.protocol.as_str()) {
            let _ = write!(
                options,
                r#"<option value="{p}" selected>{p}</option>"#,
                p = esc(&row.protocol)
            );
        }
        let n = i + 1;
        let _ = writeln!(
            rows,
            r#"<tr><td><label class="sr" for="acl-protocol-{i}">Protocol of entry {n}</label><select id="acl-protocol-{i}" name="acl-protocol-{i}">{options}</select></td><td><label class="sr" for="acl-ports-{i}">Ports of entry {n}</label><input id="acl-ports-{i}" name="acl-ports-{i}" value="{ports}" placeholder="445 or 8000-8100"></td><td><label class="sr" for="acl-label-{i}">Label of entry {n}</label><input id="acl-label-{i}" name="acl-label-{i}" value="{label}" placeholder="SMB"></td></tr>"#,
            ports = esc(&row.ports),
            label = esc(&row.label),
        );
        let row_notes = notes.at(&format!("acl:{i}"));
        if !row_notes.is_empty() {
            let _ = writeln!(rows, r#"<tr><td colspan="3">{row_notes}</td></tr>"#);
        }
    }
    format!(
        r#"<fieldset class="card"><legend>ACLs</legend>
<p class="hint">What the senders may open: <code>any</code>, <code>icmp</code>, or <code>tcp</code>/<code>udp</code> with a port or a range (empty: every port), each with an optional label shown in <code>status</code>. A policy without an entry grants nothing. Save to get more empty rows.</p>
<div class="table"><table class="acl">
<thead><tr><th scope="col">Protocol</th><th scope="col">Ports</th><th scope="col">Label</th></tr></thead>
<tbody>
{rows}</tbody></table></div>
{notes}
</fieldset>"#,
        notes = notes.at("acl"),
    )
}

fn trust_section(state: &State, draft: &Draft, notes: &Notes) -> String {
    let mut names: Vec<String> = state.trust_requirements.keys().cloned().collect();
    for name in &draft.trust {
        push_unique(&mut names, name.clone());
    }
    let choices: Vec<Choice> = names
        .iter()
        .map(|name| Choice {
            value: name.clone(),
            label: esc(name),
            hint: state.trust_requirements.get(name).map_or_else(
                || "not defined".to_owned(),
                |t| {
                    let mut parts = Vec::new();
                    if !t.allow.is_empty() {
                        parts.push(format!("allow {}", t.allow.join(", ")));
                    }
                    if !t.block.is_empty() {
                        parts.push(format!("block {}", t.block.join(", ")));
                    }
                    format!("{}: {}", t.kind.replace('_', " "), parts.join("; "))
                },
            ),
        })
        .collect();
    let boxes = check_boxes(&TRUST_BOXES, &choices, &draft.trust);
    let mut days = String::new();
    for (value, text) in DAYS {
        let _ = write!(
            days,
            r#"<span class="day"><input type="checkbox" id="day-{value}" name="days" value="{value}"{on}> <label for="day-{value}">{text}</label></span> "#,
            on = checked(draft.days.iter().any(|d| d == value)),
        );
    }
    format!(
        r#"<fieldset class="card"><legend>Trust requirements</legend>
<p class="hint">Senders must meet each ticked requirement (judged on their observed public address); access stops within a second of one failing.</p>
{boxes}{trust_notes}
<p class="check"><input type="checkbox" id="timed" name="timed"{timed}> <label for="timed">Only during active hours</label></p>
<h3 id="days-label">Days</h3>
<div role="group" aria-labelledby="days-label" class="days">{days}</div>
{day_notes}
<label for="hours">Hours <span class="hint">(<code>HH:MM-HH:MM</code>, several separated by commas; split a window that crosses midnight)</span></label>
<input id="hours" name="hours" value="{hours}" placeholder="07:00-19:00">
{hour_notes}
<label for="zone">Time zone <span class="hint">(an IANA name, e.g. <code>America/Los_Angeles</code>, <code>Europe/London</code>, <code>UTC</code>)</span></label>
<input id="zone" name="zone" value="{zone}" placeholder="America/Los_Angeles">
{zone_notes}{hours_notes}
</fieldset>"#,
        trust_notes = notes.at("trust"),
        timed = checked(draft.timed),
        day_notes = notes.at("days"),
        hours = esc(&draft.hours),
        hour_notes = notes.at("hours"),
        zone = esc(&draft.zone),
        zone_notes = notes.at("zone"),
        hours_notes = notes.at("active_hours"),
    )
}

/// The form that creates or edits a policy; `errors` refused it, `warnings` came with its
/// last save.
pub(crate) fn form(
    session: &Session,
    state: &State,
    draft: &Draft,
    errors: &[FieldProblem],
    warnings: &[FieldProblem],
) -> String {
    let notes = Notes::new(draft, errors, warnings);
    let csrf = esc(&session.csrf);
    let (title, action, button) = if draft.stored {
        (
            draft.name.clone(),
            format!("{}/save", path(&draft.name)),
            "Save",
        )
    } else {
        (
            format!("New {} policy", kind_name(draft.kind).to_lowercase()),
            "/portal/new-policy".to_owned(),
            "Create policy",
        )
    };
    let mut top = String::new();
    if notes.any_errors() {
        top.push_str(
            r#"<p class="error" role="alert">Nothing was saved: see the problems below.</p>"#,
        );
    } else if !warnings.is_empty() {
        top.push_str(r#"<p class="notice" role="status">Saved, with the warnings below.</p>"#);
    }
    top.push_str(&notes.at(""));
    let name = if draft.stored {
        format!(
            r#"<p>{kind} policy <span class="hint">(version {version}; to rename it, make a new policy and delete this one)</span></p>"#,
            kind = kind_name(draft.kind),
            version = draft.version,
        )
    } else {
        format!(
            r#"<label for="name">Name</label>
<input id="name" name="name" required value="{name}" placeholder="{example}">
{notes}"#,
            name = esc(&draft.name),
            notes = notes.at("name"),
            example = match draft.kind {
                PolicyKind::Gateway => "e.g. users to Menlo Park Office",
                PolicyKind::Direct => "e.g. admins to servers",
            },
        )
    };
    let sides = match draft.kind {
        PolicyKind::Gateway => gateway_section(state, draft, &notes),
        PolicyKind::Direct => format!(
            r#"<fieldset class="card"><legend>Receivers</legend>
<label for="receivers">Receiver tags <span class="hint">(separated by commas: the systems the senders may reach; they enforce it)</span></label>
<input id="receivers" name="receivers" value="{receivers}">
{notes}
</fieldset>"#,
            receivers = esc(&draft.receivers),
            notes = notes.at("receivers"),
        ),
    };
    let known_tags: BTreeSet<&str> = state
        .systems
        .values()
        .flat_map(|s| s.tags.iter().map(String::as_str))
        .chain(state.tags.keys().map(String::as_str))
        .collect();
    let known_tags = if known_tags.is_empty() {
        String::new()
    } else {
        format!(
            r#" <span class="hint">Tags in use: {}</span>"#,
            esc(&known_tags.into_iter().collect::<Vec<_>>().join(", "))
        )
    };
    let delete = if draft.stored {
        format!(
            r#"<section class="card"><h2>Delete</h2>
<form method="post" action="{href}/delete"><input type="hidden" name="csrf" value="{csrf}">
<p class="hint">Deleting the policy takes its access away from its senders at once.</p>
<button type="submit" class="danger" id="delete-policy">Delete policy</button></form></section>"#,
            href = path(&draft.name),
        )
    } else {
        String::new()
    };
    layout(
        Some(session),
        &title,
        &format!(
            r#"<p><a href="/portal/policies">← Policies</a></p>
{top}<form method="post" action="{action}" class="policy">
<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="version" value="{version}"><input type="hidden" name="kind" value="{kind}">
<section class="card">
{name}
<p class="check"><input type="checkbox" id="enabled" name="enabled"{enabled}> <label for="enabled">Enabled</label> <span class="hint">(a disabled policy grants nothing)</span></p>
</section>
<fieldset class="card"><legend>Senders</legend>
<label for="senders">Sender tags <span class="hint">(separated by commas: systems with any of these tags are senders)</span></label>
<input id="senders" name="senders" value="{senders}">{known_tags}
{sender_notes}
</fieldset>
{sides}
{acl}
{trust}
<button type="submit" class="primary" id="save-policy">{button}</button>
</form>
{delete}"#,
            version = draft.version,
            kind = match draft.kind {
                PolicyKind::Gateway => "gateway",
                PolicyKind::Direct => "direct",
            },
            enabled = checked(draft.enabled),
            senders = esc(&draft.senders),
            sender_notes = notes.at("senders"),
            acl = acl_section(draft, &notes),
            trust = trust_section(state, draft, &notes),
        ),
    )
}
