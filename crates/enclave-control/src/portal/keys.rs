//! The Enrolment keys page: every key with its settings and state, Create (the key is shown
//! in the answer to that form and never again), Revoke.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};

use crate::api::parse_duration;
use crate::core::{self, Command, KeyRefusal, NewKey, Reply};
use crate::model::{ApprovalMode, EnrolmentKey, State as Network};
use crate::secret;

use super::fields::{field, Fields, Ran, View};
use super::pages::{esc, layout, utc};
use super::session::{Session, SignedIn, SignedInForm};
use super::{html, now, see, segment, tags, Answer, Portal};

/// The create form's name, for its errors.
const CREATE: &str = "create";
/// The fields of the create form.
const KNOWN: &[&str] = &["tags", "approval", "uses", "expires", "ephemeral"];

pub(super) async fn list(State(portal): State<Portal>, SignedIn(session): SignedIn) -> Answer {
    page(&portal, &session, &View::default()).await
}

async fn page(portal: &Portal, session: &Session, view: &View) -> Answer {
    let state = portal.state().await?;
    Ok(html(view.status, render(session, &state, now(), view)))
}

/// What the create form says, or the field it got wrong.
fn new_key(form: &HashMap<String, String>, now: i64) -> Result<NewKey, Fields> {
    let approval = match field(form, "approval").as_str() {
        "auto" => ApprovalMode::Auto,
        "manual" | "" => ApprovalMode::Manual,
        other => {
            return Err(Fields::error(
                CREATE,
                "approval",
                format!("{other:?} is not an approval mode"),
                Some("choose automatic or manual"),
                form,
            ))
        }
    };
    let uses = match field(form, "uses").as_str() {
        "" => None,
        text => Some(text.parse::<u32>().map_err(|_| {
            Fields::error(
                CREATE,
                "uses",
                format!("{text:?} is not a whole number"),
                Some("how many systems may enrol with the key, at least 1; leave it empty for no limit"),
                form,
            )
        })?),
    };
    let expires_at = match field(form, "expires").as_str() {
        "" => None,
        text => Some(
            now + parse_duration(text).ok_or_else(|| {
                Fields::error(
                    CREATE,
                    "expires",
                    format!("{text:?} is not a duration"),
                    Some("write a number and a unit: 90s, 30m, 24h, 7d, 2w; leave it empty for never"),
                    form,
                )
            })?,
        ),
    };
    Ok(NewKey {
        id: String::new(),
        hash: String::new(),
        tags: tags(&field(form, "tags")),
        approval,
        uses,
        expires_at,
        ephemeral: form.get("ephemeral").is_some_and(|v| v == "on"),
    })
}

pub(super) async fn create(
    State(portal): State<Portal>,
    headers: HeaderMap,
    SignedInForm(session, form): SignedInForm,
) -> Answer {
    let mut key = match new_key(&form, now()) {
        Ok(key) => key,
        Err(fields) => return page(&portal, &session, &View::refused(fields)).await,
    };
    let made = secret::generate(secret::KEY_PREFIX);
    key.id.clone_from(&made.id);
    key.hash.clone_from(made.hash.expose());
    let command = Command::CreateKey(key);
    let ran = portal
        .change(&session, command, Some(CREATE), &form)
        .await?;
    let view = match ran {
        Ran::Shown(view) => view,
        Ran::Done(outcome) => {
            let Reply::Key(record) = &outcome.reply else {
                return Ok(see("/portal/keys"));
            };
            // The only answer that ever holds the key itself.
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("SERVER:8443");
            View::said(created(record, made.text.expose(), host))
        }
    };
    page(&portal, &session, &view).await
}

pub(super) async fn revoke(
    State(portal): State<Portal>,
    Path(id): Path<String>,
    SignedInForm(session, form): SignedInForm,
) -> Answer {
    let command = Command::RevokeKey { id: id.clone() };
    let done = format!("Enrolment key {id} was revoked.");
    let view = portal.remove(&session, command, &form, &done).await?;
    page(&portal, &session, &view).await
}

/// The card with the new key, shown once.
fn created(key: &EnrolmentKey, text: &str, host: &str) -> String {
    format!(
        r#"<section class="card created" aria-labelledby="new-key-title">
<h2 id="new-key-title">Enrolment key {id} was created</h2>
<p><strong>Copy it now: it is shown only this once.</strong> The server keeps only its hash; if you lose it, revoke it and create another.</p>
<label for="new-key">Enrolment key</label>
<input id="new-key" readonly value="{text}" autocomplete="off" spellcheck="false">
<p>Enrol a system with it:</p>
<pre><code>enclave-agent enrol --server https://{host} --key {text}</code></pre>
</section>"#,
        id = esc(&key.id),
        text = esc(text),
        host = esc(host),
    )
}

/// `valid`, `revoked`, `expired` or `used up`, with its badge class.
fn key_state(key: &EnrolmentKey, now: i64) -> (&'static str, &'static str) {
    match core::key_state(key, now) {
        Ok(()) => ("valid", "ok"),
        Err(KeyRefusal::Revoked) => ("revoked", "bad"),
        Err(KeyRefusal::Expired) => ("expired", "warn"),
        Err(_) => ("used up", "warn"),
    }
}

fn uses_left(key: &EnrolmentKey) -> String {
    let used = match key.uses {
        0 => "none used".to_owned(),
        n => format!("{n} used"),
    };
    match key.uses_allowed {
        Some(n) => format!("{} of {n} ({used})", n.saturating_sub(key.uses)),
        None => format!("unlimited ({used})"),
    }
}

pub(crate) fn render(session: &Session, state: &Network, now: i64, view: &View) -> String {
    let (fields, top) = (&view.fields, &view.top);
    let csrf = esc(&session.csrf);
    let mut keys: Vec<&EnrolmentKey> = state.keys.values().collect();
    keys.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    let mut rows = String::new();
    for key in &keys {
        let (text, class) = key_state(key, now);
        let tags: Vec<String> = key
            .tags
            .iter()
            .map(|t| format!(r#"<span class="tag">{}</span>"#, esc(t)))
            .collect();
        let revoke = if key.revoked {
            String::new()
        } else {
            format!(
                r#"<form method="post" action="/portal/keys/{path}/revoke"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" class="danger" id="revoke-{id}" aria-label="Revoke key {id}">Revoke</button></form>"#,
                path = segment(&key.id),
                id = esc(&key.id),
            )
        };
        let _ = writeln!(
            rows,
            r#"<tr><td><code>{id}</code></td><td>{tags}</td><td>{approval}</td><td>{uses}</td><td>{expires}</td><td>{ephemeral}</td><td><span class="badge {class}">{text}</span></td><td>{created}<br><span class="hint">{by}</span></td><td>{revoke}</td></tr>"#,
            id = esc(&key.id),
            tags = if tags.is_empty() {
                r#"<span class="hint">none</span>"#.to_owned()
            } else {
                tags.join(" ")
            },
            approval = match key.approval {
                ApprovalMode::Auto => "automatic",
                ApprovalMode::Manual => "manual",
            },
            uses = uses_left(key),
            expires = key.expires_at.map_or_else(|| "never".to_owned(), utc),
            ephemeral = if key.ephemeral { "yes" } else { "no" },
            created = utc(key.created_at),
            by = esc(&key.created_by),
        );
    }
    if rows.is_empty() {
        rows = r#"<tr><td colspan="9" class="empty">No enrolment keys yet: create one below.</td></tr>"#
            .to_owned();
    }
    let manual = fields.typed(CREATE, "approval", "manual") != "auto";
    let (manual, auto) = if manual {
        (" checked", "")
    } else {
        ("", " checked")
    };
    let ephemeral = if fields.ticked(CREATE, "ephemeral", false) {
        " checked"
    } else {
        ""
    };
    layout(
        Some(session),
        "Enrolment keys",
        &format!(
            r#"{top}<p class="hint">A system joins the network with an enrolment key: <code>enclave-agent enrol --server URL --key KEY</code> makes its key pair on the host and registers it. The key gives the system its tags; with manual approval it waits as <strong>pending</strong> on the Systems page until you approve it.</p>
<div class="table"><table>
<thead><tr><th scope="col">Key</th><th scope="col">Tags</th><th scope="col">Approval</th><th scope="col">Uses left</th><th scope="col">Expires</th><th scope="col">Ephemeral</th><th scope="col">State</th><th scope="col">Created</th><th scope="col"><span class="sr">Actions</span></th></tr></thead>
<tbody>
{rows}</tbody></table></div>
<section class="card" aria-labelledby="create-title"><h2 id="create-title">Create an enrolment key</h2>
<form method="post" action="/portal/keys">
<input type="hidden" name="csrf" value="{csrf}">
{general}
<label for="key-tags">Tags <span class="hint">(given to every system it enrols; separated by commas)</span></label>
<input id="key-tags" name="tags" value="{tags}" placeholder="users, laptops">
{tag_errors}
<fieldset><legend>Approval</legend>
<p class="check"><input type="radio" id="approval-manual" name="approval" value="manual"{manual}> <label for="approval-manual">Manual: systems wait as pending until an administrator approves them</label></p>
<p class="check"><input type="radio" id="approval-auto" name="approval" value="auto"{auto}> <label for="approval-auto">Automatic: systems are approved as they enrol</label></p>
{approval_errors}
</fieldset>
<label for="key-uses">Uses <span class="hint">(how many systems may enrol with it; empty: no limit)</span></label>
<input id="key-uses" name="uses" inputmode="numeric" value="{uses}" placeholder="no limit">
{uses_errors}
<label for="key-expires">Expires after <span class="hint">(90s, 30m, 24h, 7d, 2w; empty: never)</span></label>
<input id="key-expires" name="expires" value="{expires}" placeholder="never">
{expires_errors}
<p class="check"><input type="checkbox" id="key-ephemeral" name="ephemeral"{ephemeral}> <label for="key-ephemeral">Ephemeral: delete the systems it enrols once their agent has been disconnected for a while</label></p>
<button type="submit" class="primary" id="create-key">Create key</button>
</form></section>"#,
            general = fields.rest(CREATE, KNOWN),
            tags = esc(fields.typed(CREATE, "tags", "")),
            tag_errors = fields.at(CREATE, &["tags"]),
            approval_errors = fields.at(CREATE, &["approval"]),
            uses = esc(fields.typed(CREATE, "uses", "")),
            uses_errors = fields.at(CREATE, &["uses"]),
            expires = esc(fields.typed(CREATE, "expires", "")),
            expires_errors = fields.at(CREATE, &["expires"]),
        ),
    )
}
