//! The Tags page: every tag in use (by systems, enrolment keys, policies) with how many systems
//! carry it, and the trust requirements a system must meet to carry it (a `[[tag]]` table),
//! set or removed. Tags need no declaration, so there is nothing else to create; a tag is
//! renamed where it is used (the model has no rename command for tags).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use axum::extract::{Path, State};

use crate::core::{Command, Write};
use crate::model::{State as Network, TagDoc};

use super::fields::{field, Fields, Ran, View};
use super::pages::{esc, layout};
use super::session::{Session, SignedIn, SignedInForm};
use super::{html, segment, Answer, Portal};

/// The form that sets a tag's requirements.
const SET: &str = "set";

/// Where one tag is used.
#[derive(Debug, Default)]
struct Usage<'a> {
    systems: usize,
    keys: usize,
    policies: BTreeSet<&'a str>,
    entry: Option<&'a TagDoc>,
}

fn usage(state: &Network) -> BTreeMap<&str, Usage<'_>> {
    let mut out: BTreeMap<&str, Usage<'_>> = BTreeMap::new();
    for system in state.systems.values() {
        for tag in &system.tags {
            out.entry(tag).or_default().systems += 1;
        }
    }
    for key in state.keys.values().filter(|k| !k.revoked) {
        for tag in &key.tags {
            out.entry(tag).or_default().keys += 1;
        }
    }
    for policy in state.policies.values() {
        for tag in policy.senders.iter().chain(&policy.receivers) {
            out.entry(tag)
                .or_default()
                .policies
                .insert(policy.name.as_str());
        }
    }
    for doc in state.tags.values() {
        out.entry(&doc.name).or_default().entry = Some(doc);
    }
    out
}

pub(super) async fn list(State(portal): State<Portal>, SignedIn(session): SignedIn) -> Answer {
    page(&portal, &session, None, &View::default()).await
}

/// The list, with the requirements form of `name` (a tag) open.
pub(super) async fn edit(
    State(portal): State<Portal>,
    Path(name): Path<String>,
    SignedIn(session): SignedIn,
) -> Answer {
    page(&portal, &session, Some(&name), &View::default()).await
}

async fn page(portal: &Portal, session: &Session, editing: Option<&str>, view: &View) -> Answer {
    let state = portal.state().await?;
    Ok(html(view.status, render(session, &state, editing, view)))
}

/// Sets the requirements of the tag named in the form (creating its `[[tag]]` table).
pub(super) async fn save(
    State(portal): State<Portal>,
    SignedInForm(session, form): SignedInForm,
) -> Answer {
    let name = field(&form, "name");
    // Ticked requirements come as `trust-N=NAME`, in the order shown.
    let mut ticked: Vec<(usize, String)> = form
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("trust-")?.parse().ok()?, v.clone())))
        .collect();
    ticked.sort();
    let version = field(&form, "version").parse::<i64>().ok();
    let doc = TagDoc {
        name: name.clone(),
        trust: ticked.into_iter().map(|(_, v)| v).collect(),
        version: version.unwrap_or(0),
    };
    let write = if version.is_some() {
        Write::Update
    } else {
        Write::Create
    };
    let command = Command::PutTag { doc, write };
    let ran = portal.change(&session, command, Some(SET), &form).await?;
    // A refused form of a tag's own page is shown there again.
    let editing =
        (matches!(ran, Ran::Shown(_)) && form.contains_key("editing")).then_some(name.as_str());
    let view = ran.saved(
        "/portal/tags",
        &format!("The trust requirements of tag {name:?} were saved."),
    )?;
    page(&portal, &session, editing, &view).await
}

/// Removes a tag's `[[tag]]` table: the tag stays where it is used, without requirements.
pub(super) async fn delete(
    State(portal): State<Portal>,
    Path(name): Path<String>,
    SignedInForm(session, form): SignedInForm,
) -> Answer {
    let command = Command::DeleteTag { name: name.clone() };
    let done = format!("Tag {name:?} has no trust requirements any more.");
    let view = portal.remove(&session, command, &form, &done).await?;
    page(&portal, &session, None, &view).await
}

/// The requirements form: a box per trust requirement, for `tag` (typed by the administrator
/// when `None`).
fn requirements_form(
    session: &Session,
    state: &Network,
    tag: Option<&TagDoc>,
    editing: Option<&str>,
    fields: &Fields,
) -> String {
    let csrf = esc(&session.csrf);
    let chosen: BTreeSet<&str> = tag
        .map(|t| t.trust.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let mut boxes = String::new();
    for (i, name) in state.trust_requirements.keys().enumerate() {
        let key = format!("trust-{i}");
        let ticked = if fields.is(SET) {
            fields.typed(SET, &key, "") == name
        } else {
            chosen.contains(name.as_str())
        };
        let _ = write!(
            boxes,
            r#"<p class="check"><input type="checkbox" id="{key}" name="{key}" value="{value}"{checked}> <label for="{key}">{value}</label></p>"#,
            value = esc(name),
            checked = if ticked { " checked" } else { "" },
        );
    }
    if boxes.is_empty() {
        boxes = r#"<p class="hint">There are no trust requirements yet: create them on the <a href="/portal/trust">Trust requirements</a> page.</p>"#.to_owned();
    }
    let (title, name_field) = match editing {
        Some(name) => (
            format!("Trust requirements of tag {}", esc(name)),
            format!(
                r#"<input type="hidden" name="editing" value="on"><input type="hidden" name="name" value="{name}">{version}"#,
                name = esc(name),
                // Without a `[[tag]]` table yet, saving creates one.
                version = tag.map_or_else(String::new, |t| format!(
                    r#"<input type="hidden" name="version" value="{}">"#,
                    t.version
                )),
            ),
        ),
        None => (
            "Add trust requirements to a tag".to_owned(),
            format!(
                r#"<label for="tag-name">Tag</label>
<input id="tag-name" name="name" required value="{typed}" placeholder="contractors">
{errors}"#,
                typed = esc(fields.typed(SET, "name", "")),
                errors = fields.at(SET, &["name"]),
            ),
        ),
    };
    let cancel = if editing.is_some() {
        r#" <a href="/portal/tags">Cancel</a>"#
    } else {
        ""
    };
    format!(
        r#"<section class="card" id="requirements" aria-labelledby="requirements-title"><h2 id="requirements-title">{title}</h2>
<form method="post" action="/portal/tags">
<input type="hidden" name="csrf" value="{csrf}">
{general}
{name_field}
<fieldset><legend>A system carries the tag, for the policies that name it, only while all of these hold</legend>
{boxes}
{trust_errors}
</fieldset>
<button type="submit" class="primary" id="save-tag">Save</button>{cancel}
</form></section>"#,
        general = fields.rest(SET, &["name", "trust"]),
        trust_errors = fields.at(SET, &["trust"]),
    )
}

fn render(session: &Session, state: &Network, editing: Option<&str>, view: &View) -> String {
    let (fields, top) = (&view.fields, &view.top);
    let csrf = esc(&session.csrf);
    let used = usage(state);
    let mut rows = String::new();
    for (tag, u) in &used {
        let policies: Vec<String> = u.policies.iter().map(|p| esc(p)).collect();
        let trust = match u.entry {
            Some(doc) if !doc.trust.is_empty() => doc
                .trust
                .iter()
                .map(|t| format!(r#"<a href="/portal/trust/{}">{}</a>"#, segment(t), esc(t)))
                .collect::<Vec<_>>()
                .join(", "),
            _ => r#"<span class="hint">none</span>"#.to_owned(),
        };
        let remove = if u.entry.is_some() {
            format!(
                r#" <form method="post" action="/portal/tags/{path}/delete"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" class="danger" aria-label="Remove the trust requirements of {name}">Remove requirements</button></form>"#,
                path = segment(tag),
                name = esc(tag),
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            rows,
            r#"<tr><td><span class="tag">{name}</span></td><td><a href="/portal/systems?q={path}" aria-label="{count} systems with tag {name}">{count}</a></td><td>{keys}</td><td>{policies}</td><td>{trust}</td><td><a href="/portal/tags/{path}#requirements" aria-label="Set the trust requirements of {name}">Set requirements</a>{remove}</td></tr>"#,
            name = esc(tag),
            path = segment(tag),
            count = u.systems,
            keys = u.keys,
            policies = if policies.is_empty() {
                r#"<span class="hint">none</span>"#.to_owned()
            } else {
                policies.join(", ")
            },
        );
    }
    if rows.is_empty() {
        rows = r#"<tr><td colspan="6" class="empty">No tags yet: give systems tags on their page, or give an enrolment key tags.</td></tr>"#.to_owned();
    }
    let editing_doc = editing.and_then(|name| state.tags.get(name));
    let form = requirements_form(session, state, editing_doc, editing, fields);
    layout(
        Some(session),
        "Tags",
        &format!(
            r#"{top}<p class="hint">Policies name tags: a direct access policy on both sides, a gateway access policy on the senders' side. A system gets its tags from its enrolment key or on its page. Tags need no declaration, so a tag is renamed or removed where it is used (systems, keys, policies).</p>
<div class="table"><table>
<thead><tr><th scope="col">Tag</th><th scope="col">Systems</th><th scope="col">Enrolment keys</th><th scope="col">Policies</th><th scope="col">Trust requirements</th><th scope="col"><span class="sr">Actions</span></th></tr></thead>
<tbody>
{rows}</tbody></table></div>
{form}"#
        ),
    )
}
