//! The portal's pages as HTML text. Everything that comes from the network or a user is
//! escaped by [`esc`]; nothing else builds markup.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::agents::Seen;
use crate::core::{Refusal, SubnetRow};
use crate::definition::FieldProblem;
use crate::model::{Approval, AuditEntry, ManagedSystem, State};

use super::session::Session;
use super::{field_problems, segment, Which};

/// Escapes text for HTML content and quoted attributes.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC`.
pub(crate) fn utc(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Days since 1970-01-01 to a civil date (proleptic Gregorian), in 400-year eras.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// A message shown at the top of a page.
#[derive(Debug, Clone)]
pub(crate) struct Flash {
    text: String,
}

impl Flash {
    pub(crate) fn error(text: &str) -> Self {
        Self {
            text: text.to_owned(),
        }
    }

    fn html(&self) -> String {
        format!(r#"<p class="error" role="alert">{}</p>"#, esc(&self.text))
    }
}

/// A refused form's problems and what was typed into it, to show it again.
#[derive(Debug, Clone, Default)]
pub(crate) struct Problems {
    which: Option<Which>,
    problems: Vec<FieldProblem>,
    typed: HashMap<String, String>,
}

impl Problems {
    pub(crate) fn of(which: Which, refusal: &Refusal, typed: &HashMap<String, String>) -> Self {
        let mut typed = typed.clone();
        typed.remove("csrf");
        Self {
            which: Some(which),
            problems: field_problems(refusal),
            typed,
        }
    }

    /// The problems of form `which` whose field mentions one of `words` (or, for `""`, those
    /// that mention no other word of `all`), as HTML next to the field.
    fn at(&self, which: Which, word: &str, others: &[&str]) -> String {
        if self.which != Some(which) {
            return String::new();
        }
        let mut out = String::new();
        for p in &self.problems {
            let mine = if word.is_empty() {
                !others.iter().any(|o| p.field.contains(o))
            } else {
                p.field.contains(word)
            };
            if mine {
                let _ = write!(
                    out,
                    r#"<p class="field-error" role="alert">{}"#,
                    esc(&p.message)
                );
                if let Some(hint) = &p.hint {
                    let _ = write!(out, r#" <span class="hint">{}</span>"#, esc(hint));
                }
                out.push_str("</p>");
            }
        }
        out
    }

    /// What was typed into field `name` of form `which`, else `default`.
    fn typed<'a>(&'a self, which: Which, name: &str, default: &'a str) -> &'a str {
        if self.which == Some(which) {
            self.typed.get(name).map_or(default, String::as_str)
        } else {
            default
        }
    }
}

pub(crate) fn layout(session: Option<&Session>, title: &str, body: &str) -> String {
    let nav = session.map_or_else(String::new, |s| {
        format!(
            r#"<nav aria-label="Main"><a href="/portal/systems">Systems</a><a href="/portal/activity">Activity</a></nav>
<form class="signout" method="post" action="/portal/signout"><input type="hidden" name="csrf" value="{csrf}"><span class="who">Signed in as <strong>{user}</strong></span> <button type="submit" id="signout">Sign out</button></form>"#,
            csrf = esc(&s.csrf),
            user = esc(&s.user),
        )
    });
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Enclave</title>
<link rel="stylesheet" href="/portal/assets/portal.css">
</head>
<body>
<header><span class="brand">Enclave</span>{nav}</header>
<main>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"#,
        title = esc(title),
    )
}

/// A page that only says something.
pub(crate) fn message(title: &str, text: &str) -> String {
    layout(
        None,
        title,
        &format!(
            r#"<p class="error" role="alert">{}</p><p><a href="/portal/systems">Back to the portal</a></p>"#,
            esc(text)
        ),
    )
}

pub(crate) fn signin(token: &str, name: &str, error: Option<&str>) -> String {
    let error = error.map_or_else(String::new, |e| {
        format!(
            r#"<p class="error" role="alert" id="signin-error">{}</p>"#,
            esc(e)
        )
    });
    layout(
        None,
        "Sign in",
        &format!(
            r#"{error}<form class="card narrow" method="post" action="/portal/signin">
<input type="hidden" name="csrf" value="{token}">
<label for="name">Name</label>
<input id="name" name="name" autocomplete="username" required value="{name}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit" id="signin">Sign in</button>
</form>
<p class="hint">Accounts are made on the server host: <code>enclave-control admin user create NAME</code>.</p>"#,
            token = esc(token),
            name = esc(name),
        ),
    )
}

fn presence(system: &ManagedSystem, seen: &HashMap<String, Seen>) -> String {
    match seen.get(&system.public_key) {
        Some(s) if s.connected => r#"<span class="badge ok">connected</span>"#.to_owned(),
        Some(Seen {
            last_seen: Some(t), ..
        }) => format!("last seen {}", utc(*t)),
        _ => system.last_seen.map_or_else(
            || "never seen".to_owned(),
            |t| format!("last seen {}", utc(t)),
        ),
    }
}

fn state_badge(approval: Approval) -> String {
    let class = match approval {
        Approval::Pending => "warn",
        Approval::Approved => "ok",
        Approval::Revoked => "bad",
    };
    format!(
        r#"<span class="badge {class}">{}</span>"#,
        approval.as_str()
    )
}

fn is_gateway(system: &ManagedSystem) -> bool {
    system.gateway.as_ref().is_some_and(|g| g.allowed)
}

fn matches(system: &ManagedSystem, q: &str) -> bool {
    let q = q.to_lowercase();
    q.split_whitespace().all(|word| {
        system.name.to_lowercase().contains(word)
            || system.address.to_string().contains(word)
            || system.tags.iter().any(|t| t.to_lowercase().contains(word))
            || system.approval.as_str() == word
            || (word == "gateway" && is_gateway(system))
    })
}

pub(crate) fn systems(
    session: &Session,
    state: &State,
    seen: &HashMap<String, Seen>,
    q: &str,
    flash: Option<&Flash>,
) -> String {
    let mut rows = String::new();
    let mut shown = 0;
    for system in state.systems.values().filter(|s| matches(s, q)) {
        shown += 1;
        let tags: Vec<String> = system
            .tags
            .iter()
            .map(|t| format!(r#"<span class="tag">{}</span>"#, esc(t)))
            .collect();
        let gateway = if is_gateway(system) {
            r#" <span class="badge gw">Gateway</span>"#
        } else {
            ""
        };
        let approve = if system.approval == Approval::Pending {
            format!(
                r#"<form method="post" action="/portal/systems/{path}/approve"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="back" value="systems"><input type="hidden" name="q" value="{q}"><button type="submit" class="primary" id="approve-{id}" aria-label="Approve {name}">Approve</button></form>"#,
                path = segment(&system.name),
                csrf = esc(&session.csrf),
                q = esc(q),
                id = esc(&system.name),
                name = esc(&system.name),
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            rows,
            r#"<tr><td><a href="/portal/systems/{path}">{name}</a>{gateway}</td><td><code>{address}</code></td><td>{tags}</td><td>{state}</td><td>{presence}</td><td>{approve}</td></tr>"#,
            path = segment(&system.name),
            name = esc(&system.name),
            address = system.address,
            tags = tags.join(" "),
            state = state_badge(system.approval),
            presence = presence(system, seen),
        );
    }
    if shown == 0 {
        rows = r#"<tr><td colspan="6" class="empty">No system matches.</td></tr>"#.to_owned();
    }
    let flash = flash.map_or_else(String::new, Flash::html);
    layout(
        Some(session),
        "Systems",
        &format!(
            r#"{flash}<p><a href="/portal/app-devices" id="add-app-device">Add a device with the WireGuard app</a></p>
<form class="search" method="get" action="/portal/systems" role="search">
<label for="q">Filter</label>
<input id="q" name="q" value="{q}" placeholder="name, address, tag, pending, gateway…">
<button type="submit">Filter</button>
</form>
<p class="hint">{shown} of {total} systems.</p>
<div class="table"><table>
<thead><tr><th scope="col">Name</th><th scope="col">Overlay address</th><th scope="col">Tags</th><th scope="col">State</th><th scope="col">Connection</th><th scope="col"><span class="sr">Actions</span></th></tr></thead>
<tbody>
{rows}</tbody></table></div>"#,
            q = esc(q),
            total = state.systems.len(),
        ),
    )
}

pub(crate) fn system(
    session: &Session,
    system: &ManagedSystem,
    seen: &HashMap<String, Seen>,
    subnets: &[SubnetRow],
    problems: &Problems,
    flash: Option<&Flash>,
) -> String {
    let path = segment(&system.name);
    let csrf = esc(&session.csrf);
    let tags_text = system.tags.iter().cloned().collect::<Vec<_>>().join(", ");
    let approve = if system.approval == Approval::Pending {
        format!(
            r#"<form method="post" action="/portal/systems/{path}/approve"><input type="hidden" name="csrf" value="{csrf}"><button type="submit" class="primary" id="approve">Approve</button></form>"#
        )
    } else {
        String::new()
    };
    let gateway = system.gateway.clone().unwrap_or_default();
    let checked = if gateway.allowed { " checked" } else { "" };
    let mut rows = String::new();
    for row in subnets {
        let remove = if row.state == "removed" {
            format!(
                r#"<form method="post" action="/portal/systems/{path}/subnet-add"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="subnet" value="{subnet}"><button type="submit" aria-label="Serve {subnet} again">Add back</button></form>"#,
                subnet = row.subnet
            )
        } else {
            format!(
                r#"<form method="post" action="/portal/systems/{path}/subnet-remove"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="subnet" value="{subnet}"><button type="submit" class="danger" aria-label="Remove {subnet}">Remove</button></form>"#,
                subnet = row.subnet
            )
        };
        let _ = writeln!(
            rows,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{remove}</td></tr>",
            row.subnet,
            esc(&row.source),
            esc(row.interface.as_deref().unwrap_or("")),
            esc(row.reason.as_deref().unwrap_or("")),
            esc(&row.state),
        );
    }
    if rows.is_empty() {
        rows = r#"<tr><td colspan="6" class="empty">No subnets: none discovered, none added.</td></tr>"#
            .to_owned();
    }
    let flash = flash.map_or_else(String::new, Flash::html);
    let gateway_badge = if gateway.allowed {
        r#" <span class="badge gw">Gateway</span>"#
    } else {
        ""
    };
    layout(
        Some(session),
        &system.name,
        &format!(
            r#"{flash}<p><a href="/portal/systems">← Systems</a></p>
<section class="card"><h2>Overview</h2>
<dl>
<dt>Overlay address</dt><dd><code>{address}</code></dd>
<dt>State</dt><dd>{state}{gateway_badge} {approve}</dd>
<dt>Connection</dt><dd>{presence}</dd>
<dt>Public key</dt><dd><code>{key}</code></dd>
<dt>Enrolled</dt><dd>{created}</dd>
{app_device}</dl></section>
<section class="card"><h2>Name and tags</h2>
<form method="post" action="/portal/systems/{path}/edit">
<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="version" value="{version}">
<label for="edit-name">Name</label>
<input id="edit-name" name="name" required value="{name}">
{name_errors}
<label for="edit-tags">Tags <span class="hint">(separated by commas)</span></label>
<input id="edit-tags" name="tags" value="{tags}">
{tag_errors}
<button type="submit" id="save-edit">Save</button>
</form></section>
<section class="card"><h2>Gateway</h2>
<form method="post" action="/portal/systems/{path}/gateway">
<input type="hidden" name="csrf" value="{csrf}">
<p class="check"><input type="checkbox" id="gateway-allowed" name="allowed"{checked}> <label for="gateway-allowed">Allow this system to act as a gateway</label></p>
{gateway_errors}
<button type="submit" id="save-gateway">Save</button>
</form></section>
<section class="card"><h2>Subnets</h2>
<div class="table"><table>
<thead><tr><th scope="col">Subnet</th><th scope="col">Source</th><th scope="col">Interface</th><th scope="col">Reason</th><th scope="col">State</th><th scope="col"><span class="sr">Actions</span></th></tr></thead>
<tbody>
{rows}</tbody></table></div>
<form method="post" action="/portal/systems/{path}/subnet-add" class="inline">
<input type="hidden" name="csrf" value="{csrf}">
<label for="subnet">Add subnet</label>
<input id="subnet" name="subnet" placeholder="192.168.77.0/24 or 0.0.0.0/0" value="{subnet_typed}">
<button type="submit" id="add-subnet">Add subnet</button>
{subnet_errors}
</form>
<p class="hint">A subnet not directly connected to the gateway, or <code>0.0.0.0/0</code> to send all traffic through it.</p>
</section>"#,
            address = system.address,
            state = state_badge(system.approval),
            presence = presence(system, seen),
            key = esc(&system.public_key),
            created = utc(system.created_at),
            app_device = if system.is_app_device() {
                format!(
                    r#"<dt>Device</dt><dd>WireGuard app, no agent: <a href="/portal/app-devices/{path}" id="app-config">its configuration</a></dd>"#
                )
            } else {
                String::new()
            },
            version = system.version,
            name = esc(problems.typed(Which::Edit, "name", &system.name)),
            tags = esc(problems.typed(Which::Edit, "tags", &tags_text)),
            name_errors = problems.at(Which::Edit, "", &["tags"]),
            tag_errors = problems.at(Which::Edit, "tags", &[]),
            gateway_errors = problems.at(Which::Gateway, "", &[]),
            subnet_typed = esc(problems.typed(Which::Subnet, "subnet", "")),
            subnet_errors = problems.at(Which::Subnet, "", &[]),
        ),
    )
}

pub(crate) fn activity(session: &Session, entries: &[AuditEntry]) -> String {
    let mut rows = String::new();
    for e in entries {
        let _ = writeln!(
            rows,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            utc(e.at),
            esc(&e.actor),
            esc(&e.action),
            esc(&e.target),
            esc(&e.detail),
        );
    }
    if rows.is_empty() {
        rows =
            r#"<tr><td colspan="5" class="empty">Nothing has happened yet.</td></tr>"#.to_owned();
    }
    layout(
        Some(session),
        "Activity",
        &format!(
            r#"<p class="hint">Every change to the network, newest first: who made it (<code>user:NAME</code> in the portal, <code>token:NAME</code> through the API, <code>cli</code> on the server host, <code>key:ID</code> for an enrolment) and when.</p>
<div class="table"><table>
<thead><tr><th scope="col">When</th><th scope="col">Who</th><th scope="col">What</th><th scope="col">On</th><th scope="col">Details</th></tr></thead>
<tbody>
{rows}</tbody></table></div>"#
        ),
    )
}
