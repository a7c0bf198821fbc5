//! The Trust requirements page: public IP requirements (allow and block ranges) listed,
//! created, edited and deleted, and each policy's active hours (days, times, an IANA time
//! zone) set or removed. Active hours belong to a policy in the model, so they are saved with
//! the policy's own command, at the version the page read.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::OnceLock;

use axum::extract::{Path, State};

use crate::core::{Command, Write};
use crate::model::{HoursDoc, PolicyDoc, PolicyKind, State as Network, TrustDoc};

use super::fields::{field, items, Fields, View};
use super::pages::{esc, layout};
use super::policies::stored;
use super::session::{Session, SignedIn, SignedInForm};
use super::{html, missing, segment, Answer, Portal};

/// The form that creates a requirement.
const CREATE: &str = "create";
/// The form that edits one.
const EDIT: &str = "edit";
/// The active hours form.
const HOURS: &str = "hours";
/// The fields of the requirement forms.
const KNOWN: &[&str] = &["name", "allow", "block"];
/// The fields of the active hours form.
const HOURS_KNOWN: &[&str] = &["days", "active_hours", "hours", "zone"];
/// The days of active hours, as the model writes them, and as the page says them.
const DAYS: [(&str, &str); 7] = [
    ("mon", "Monday"),
    ("tue", "Tuesday"),
    ("wed", "Wednesday"),
    ("thu", "Thursday"),
    ("fri", "Friday"),
    ("sat", "Saturday"),
    ("sun", "Sunday"),
];

/// The IANA zones the validator knows, read once.
fn zones() -> &'static [String] {
    static ZONES: OnceLock<Vec<String>> = OnceLock::new();
    ZONES.get_or_init(enclave_policy::time_zones)
}

// ---- the list ----

pub(super) async fn list(State(portal): State<Portal>, SignedIn(session): SignedIn) -> Answer {
    list_page(&portal, &session, &View::default()).await
}

async fn list_page(portal: &Portal, session: &Session, view: &View) -> Answer {
    let state = portal.state().await?;
    Ok(html(view.status, render_list(session, &state, view)))
}

/// A requirement as the form typed it.
fn trust_doc(name: &str, form: &HashMap<String, String>) -> TrustDoc {
    TrustDoc {
        name: name.to_owned(),
        kind: "public_ip".to_owned(),
        allow: items(&field(form, "allow")),
        block: items(&field(form, "block")),
        version: field(form, "version").parse().unwrap_or(0),
    }
}

pub(super) async fn create(
    State(portal): State<Portal>,
    SignedInForm(session, form): SignedInForm,
) -> Answer {
    let command = Command::PutTrust {
        doc: trust_doc(&field(&form, "name"), &form),
        write: Write::Create,
    };
    let view = portal
        .change(&session, command, Some(CREATE), &form)
        .await?
        .saved("/portal/trust", "The trust requirement was created.")?;
    list_page(&portal, &session, &view).await
}

pub(super) async fn delete(
    State(portal): State<Portal>,
    Path(name): Path<String>,
    SignedInForm(session, form): SignedInForm,
) -> Answer {
    let command = Command::DeleteTrust { name: name.clone() };
    let done = format!("Trust requirement {name:?} was deleted.");
    // Refused while a policy or a tag names it: the list says which.
    let view = portal.remove(&session, command, &form, &done).await?;
    list_page(&portal, &session, &view).await
}

// ---- one requirement ----

pub(super) async fn edit(
    State(portal): State<Portal>,
    Path(name): Path<String>,
    SignedIn(session): SignedIn,
) -> Answer {
    edit_page(&portal, &session, &name, &View::default()).await
}

async fn edit_page(portal: &Portal, session: &Session, name: &str, view: &View) -> Answer {
    let state = portal.state().await?;
    let doc = state
        .trust_requirements
        .get(name)
        .ok_or_else(|| missing("trust requirement", name))?;
    Ok(html(view.status, render_edit(session, &state, doc, view)))
}

pub(super) async fn update(
    State(portal): State<Portal>,
    Path(name): Path<String>,
    SignedInForm(session, form): SignedInForm,
) -> Answer {
    let command = Command::PutTrust {
        doc: trust_doc(&name, &form),
        write: Write::Update,
    };
    let view = portal
        .change(&session, command, Some(EDIT), &form)
        .await?
        .saved("/portal/trust", "Saved.")?;
    edit_page(&portal, &session, &name, &view).await
}

// ---- a policy's active hours ----

pub(super) async fn hours(
    State(portal): State<Portal>,
    Path(policy): Path<String>,
    SignedIn(session): SignedIn,
) -> Answer {
    hours_page(&portal, &session, &policy, &View::default()).await
}

async fn hours_page(portal: &Portal, session: &Session, policy: &str, view: &View) -> Answer {
    let state = portal.state().await?;
    let doc = stored(&state, policy)?;
    Ok(html(view.status, render_hours(session, doc, view)))
}

/// The active hours the form sets; `None` when it asks for none ("Always active").
fn hours_doc(form: &HashMap<String, String>) -> Option<HoursDoc> {
    if form.contains_key("always") {
        return None;
    }
    Some(HoursDoc {
        days: DAYS
            .iter()
            .filter(|(day, _)| form.get(&format!("day-{day}")).is_some_and(|v| v == "on"))
            .map(|(day, _)| (*day).to_owned())
            .collect(),
        hours: items(&field(form, "hours")),
        zone: field(form, "zone"),
    })
}

pub(super) async fn save_hours(
    State(portal): State<Portal>,
    Path(policy): Path<String>,
    SignedInForm(session, form): SignedInForm,
) -> Answer {
    let state = portal.state().await?;
    let current = stored(&state, &policy)?;
    let doc = PolicyDoc {
        active_hours: hours_doc(&form),
        // The version the page was read at: a policy changed since is refused as stale.
        version: field(&form, "version").parse().unwrap_or(-1),
        ..current.clone()
    };
    let command = Command::PutPolicy {
        doc,
        write: Write::Update,
    };
    let view = portal
        .change(&session, command, Some(HOURS), &form)
        .await?
        .saved("/portal/trust#active-hours", "Saved.")?;
    hours_page(&portal, &session, &policy, &view).await
}

// ---- rendering ----

/// Who names requirement `name`: policies and tags.
fn users_of(state: &Network, name: &str) -> Vec<String> {
    let policies = state
        .policies
        .values()
        .filter(|p| p.trust.iter().any(|t| t == name))
        .map(|p| format!("policy {}", esc(&p.name)));
    let tags = state
        .tags
        .values()
        .filter(|t| t.trust.iter().any(|x| x == name))
        .map(|t| format!(r#"tag <span class="tag">{}</span>"#, esc(&t.name)));
    policies.chain(tags).collect()
}

fn ranges(list: &[String]) -> String {
    if list.is_empty() {
        return r#"<span class="hint">none</span>"#.to_owned();
    }
    list.iter()
        .map(|r| format!("<code>{}</code>", esc(r)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn hours_text(hours: Option<&HoursDoc>) -> (String, String, String) {
    match hours {
        None => (
            r#"<span class="hint">always</span>"#.to_owned(),
            String::new(),
            String::new(),
        ),
        Some(h) => {
            let days: BTreeSet<&str> = h.days.iter().map(String::as_str).collect();
            let named: Vec<&str> = DAYS
                .iter()
                .filter(|(d, _)| days.contains(d))
                .map(|(_, name)| &name[..3])
                .collect();
            (
                if named.is_empty() {
                    "no day (never active)".to_owned()
                } else {
                    named.join(", ")
                },
                esc(&h.hours.join(", ")),
                esc(&h.zone),
            )
        }
    }
}

/// The allow and block fields of a requirement form, with their errors.
fn range_fields(form: &str, fields: &Fields, allow: &str, block: &str) -> String {
    format!(
        r#"<label for="{form}-allow">Allow <span class="hint">(the sender's public address must lie in one of these ranges; one per line or separated by commas; empty: any address)</span></label>
<textarea id="{form}-allow" name="allow" rows="3" placeholder="198.51.100.0/24">{allow}</textarea>
{allow_errors}
<label for="{form}-block">Block <span class="hint">(… and in none of these)</span></label>
<textarea id="{form}-block" name="block" rows="3" placeholder="203.0.113.0/24">{block}</textarea>
{block_errors}"#,
        allow = esc(fields.typed(form, "allow", allow)),
        block = esc(fields.typed(form, "block", block)),
        allow_errors = fields.at(form, &["allow"]),
        block_errors = fields.at(form, &["block"]),
    )
}

fn render_list(session: &Session, state: &Network, view: &View) -> String {
    let (fields, top) = (&view.fields, &view.top);
    let csrf = esc(&session.csrf);
    let mut rows = String::new();
    for doc in state.trust_requirements.values() {
        let users = users_of(state, &doc.name);
        let _ = writeln!(
            rows,
            r#"<tr><td><a href="/portal/trust/{path}">{name}</a></td><td>Public IP</td><td>{allow}</td><td>{block}</td><td>{users}</td><td><a href="/portal/trust/{path}" aria-label="Edit {name}">Edit</a> <form method="post" action="/portal/trust/{path}/delete"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" class="danger" aria-label="Delete {name}">Delete</button></form></td></tr>"#,
            path = segment(&doc.name),
            name = esc(&doc.name),
            allow = ranges(&doc.allow),
            block = ranges(&doc.block),
            users = if users.is_empty() {
                r#"<span class="hint">nothing yet</span>"#.to_owned()
            } else {
                users.join(", ")
            },
        );
    }
    if rows.is_empty() {
        rows = r#"<tr><td colspan="6" class="empty">No trust requirements yet: create one below.</td></tr>"#
            .to_owned();
    }
    let mut hours_rows = String::new();
    for policy in state.policies.values() {
        let (days, hours, zone) = hours_text(policy.active_hours.as_ref());
        let _ = writeln!(
            hours_rows,
            r#"<tr><td>{name}</td><td>{kind}</td><td>{days}</td><td>{hours}</td><td>{zone}</td><td><a href="/portal/active-hours/{path}" aria-label="Set the active hours of {name}">Set active hours</a></td></tr>"#,
            path = segment(&policy.name),
            name = esc(&policy.name),
            kind = match policy.kind {
                PolicyKind::Gateway => "gateway access",
                PolicyKind::Direct => "direct access",
            },
        );
    }
    if hours_rows.is_empty() {
        hours_rows = r#"<tr><td colspan="6" class="empty">No policies yet.</td></tr>"#.to_owned();
    }
    layout(
        Some(session),
        "Trust requirements",
        &format!(
            r#"{top}<p class="hint">Trust requirements are conditions a sender must meet for a policy to grant it access; a gateway access policy obeys them as a direct access policy does. Attach them to a policy, or to a tag on the <a href="/portal/tags">Tags</a> page (a system then carries the tag only while they hold). They are checked again all the time: access stops within a second of one failing.</p>
<section class="card" aria-labelledby="public-ip-title"><h2 id="public-ip-title">Public IP</h2>
<p class="hint">Judged on the sender's public (underlay) address as the enforcing gateway or receiver sees it; until it has been seen, the requirement fails.</p>
<div class="table"><table>
<thead><tr><th scope="col">Name</th><th scope="col">Kind</th><th scope="col">Allow</th><th scope="col">Block</th><th scope="col">Used by</th><th scope="col"><span class="sr">Actions</span></th></tr></thead>
<tbody>
{rows}</tbody></table></div></section>
<section class="card" aria-labelledby="create-title"><h2 id="create-title">Create a trust requirement</h2>
<form method="post" action="/portal/trust">
<input type="hidden" name="csrf" value="{csrf}">
{general}
<label for="create-name">Name</label>
<input id="create-name" name="name" required value="{name}" placeholder="partner-offices">
{name_errors}
{range_fields}
<button type="submit" class="primary" id="create-trust">Create</button>
</form></section>
<section class="card" id="active-hours" aria-labelledby="hours-title"><h2 id="hours-title">Active hours</h2>
<p class="hint">A policy with active hours grants access only on its days, inside its hours, in its time zone's local time (daylight saving time included).</p>
<div class="table"><table>
<thead><tr><th scope="col">Policy</th><th scope="col">Kind</th><th scope="col">Days</th><th scope="col">Hours</th><th scope="col">Time zone</th><th scope="col"><span class="sr">Actions</span></th></tr></thead>
<tbody>
{hours_rows}</tbody></table></div></section>"#,
            general = fields.rest(CREATE, KNOWN),
            name = esc(fields.typed(CREATE, "name", "")),
            name_errors = fields.at(CREATE, &["name"]),
            range_fields = range_fields(CREATE, fields, "", ""),
        ),
    )
}

fn render_edit(session: &Session, state: &Network, doc: &TrustDoc, view: &View) -> String {
    let (fields, top) = (&view.fields, &view.top);
    let users = users_of(state, &doc.name);
    layout(
        Some(session),
        &format!("Trust requirement {}", doc.name),
        &format!(
            r#"{top}<p><a href="/portal/trust">← Trust requirements</a></p>
<section class="card"><h2>Public IP</h2>
<p>Used by: {users}</p>
<form method="post" action="/portal/trust/{path}">
<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="version" value="{version}">
{general}
{range_fields}
<button type="submit" class="primary" id="save-trust">Save</button>
</form></section>
<section class="card"><h2>Delete</h2>
<form method="post" action="/portal/trust/{path}/delete">
<input type="hidden" name="csrf" value="{csrf}">
<p class="hint">A requirement that a policy or a tag still names cannot be deleted: take it off them first.</p>
<button type="submit" class="danger" id="delete-trust">Delete {name}</button>
</form></section>"#,
            path = segment(&doc.name),
            csrf = esc(&session.csrf),
            name = esc(&doc.name),
            version = doc.version,
            users = if users.is_empty() {
                "nothing yet".to_owned()
            } else {
                users.join(", ")
            },
            general = fields.rest(EDIT, &["allow", "block"]),
            range_fields = range_fields(EDIT, fields, &doc.allow.join("\n"), &doc.block.join("\n")),
        ),
    )
}

fn render_hours(session: &Session, policy: &PolicyDoc, view: &View) -> String {
    let (fields, top) = (&view.fields, &view.top);
    let current = policy.active_hours.as_ref();
    let days: BTreeSet<&str> = current
        .map(|h| h.days.iter().map(String::as_str).collect())
        .unwrap_or_else(|| DAYS[..5].iter().map(|(d, _)| *d).collect());
    let mut boxes = String::new();
    for (day, name) in DAYS {
        let ticked = fields.ticked(HOURS, &format!("day-{day}"), days.contains(day));
        let _ = write!(
            boxes,
            r#"<span class="check day"><input type="checkbox" id="day-{day}" name="day-{day}"{checked}> <label for="day-{day}">{name}</label></span> "#,
            checked = if ticked { " checked" } else { "" },
        );
    }
    let hours_now = current.map_or_else(|| "09:00-17:00".to_owned(), |h| h.hours.join(", "));
    let zone_now = current.map_or("UTC", |h| h.zone.as_str());
    let zone = fields.typed(HOURS, "zone", zone_now);
    let mut options = String::new();
    if !zones().iter().any(|z| z == zone) {
        let _ = write!(
            options,
            r#"<option value="{z}" selected>{z}</option>"#,
            z = esc(zone)
        );
    }
    for z in zones() {
        let selected = if z == zone { " selected" } else { "" };
        let _ = write!(
            options,
            r#"<option value="{z}"{selected}>{z}</option>"#,
            z = esc(z)
        );
    }
    let state_now = match current {
        None => "This policy is always active.".to_owned(),
        Some(_) => {
            let (d, h, z) = hours_text(current);
            format!("Active on {d}, {h}, {z} time.")
        }
    };
    let csrf = esc(&session.csrf);
    let path = segment(&policy.name);
    layout(
        Some(session),
        &format!("Active hours of {}", policy.name),
        &format!(
            r#"{top}<p><a href="/portal/trust#active-hours">← Trust requirements</a></p>
<section class="card"><h2>Active hours</h2>
<p>{state_now}</p>
<form method="post" action="/portal/active-hours/{path}">
<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="version" value="{version}">
{general}
<fieldset><legend>Days</legend>
<p>{boxes}</p>
{day_errors}
</fieldset>
<label for="hours-hours">Hours <span class="hint">(HH:MM-HH:MM, the end after the start, up to 24:00; several separated by commas; split a window that crosses midnight in two)</span></label>
<input id="hours-hours" name="hours" value="{hours}" placeholder="07:00-19:00">
{hour_errors}
<label for="hours-zone">Time zone <span class="hint">(IANA; local time there, daylight saving time included)</span></label>
<select id="hours-zone" name="zone">{options}</select>
{zone_errors}
<button type="submit" class="primary" id="save-hours">Save active hours</button>
</form>
<form method="post" action="/portal/active-hours/{path}">
<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="version" value="{version}"><input type="hidden" name="always" value="on">
<button type="submit" id="always-active">Always active (remove the active hours)</button>
</form></section>"#,
            version = policy.version,
            general = fields.rest(HOURS, HOURS_KNOWN),
            day_errors = fields.at(HOURS, &["days", "active_hours"]),
            hours = esc(fields.typed(HOURS, "hours", &hours_now)),
            hour_errors = fields.at(HOURS, &["hours"]),
            zone_errors = fields.at(HOURS, &["zone"]),
        ),
    )
}
