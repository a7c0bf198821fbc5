//! The portal's pages as HTML text. Everything that comes from the network or a user is
//! escaped by [`esc`]; nothing else builds markup.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use enclave_control_proto::message::Report;

use crate::agents::{AgentInfo, Seen};
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

/// How an error next to its field begins.
pub(crate) const FIELD_ERROR: &str = r#"<p class="field-error" role="alert">"#;

/// A problem as a paragraph that `open` begins (the `<p …>` tag, perhaps words after it):
/// its message and its hint, escaped.
pub(crate) fn paragraph(open: &str, problem: &FieldProblem) -> String {
    let mut out = format!("{open}{}", esc(&problem.message));
    if let Some(hint) = &problem.hint {
        let _ = write!(out, r#" <span class="hint">{}</span>"#, esc(hint));
    }
    out.push_str("</p>");
    out
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC`.
pub(crate) fn utc(t: i64) -> String {
    let seconds = utc_seconds(t);
    // `YYYY-MM-DD HH:MM:SS UTC` without `:SS`.
    format!("{} UTC", &seconds[..seconds.len() - 7])
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn utc_seconds(t: i64) -> String {
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
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
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
        self.problems
            .iter()
            .filter(|p| {
                if word.is_empty() {
                    !others.iter().any(|o| p.field.contains(o))
                } else {
                    p.field.contains(word)
                }
            })
            .map(|p| paragraph(FIELD_ERROR, p))
            .collect()
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

pub(super) fn layout(session: Option<&Session>, title: &str, body: &str) -> String {
    layout_of(session, title, None, body)
}

/// A page whose parts marked `data-live` the script fetches again from `src` when the server
/// says something changed (see `live.rs`).
fn layout_live(session: &Session, title: &str, src: &str, body: &str) -> String {
    layout_of(Some(session), title, Some(src), body)
}

fn layout_of(session: Option<&Session>, title: &str, live: Option<&str>, body: &str) -> String {
    let (main, script, status) = live.map_or_else(Default::default, |src| {
        (
            format!(r#" data-live-src="{}""#, esc(src)),
            r#"<script src="/portal/assets/portal.js" defer></script>
"#,
            r#"<p id="live-status" class="live" role="status" aria-live="polite" hidden></p>
"#,
        )
    });
    let nav = session.map_or_else(String::new, |s| {
        format!(
            r#"<nav aria-label="Main"><a href="/portal/systems">Systems</a>
<a href="/portal/policies">Policies</a>
<a href="/portal/keys">Enrolment keys</a>
<a href="/portal/tags">Tags</a>
<a href="/portal/trust">Trust requirements</a>
<a href="/portal/explain">Explain</a>
<a href="/portal/activity">Activity</a></nav>
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
{script}</head>
<body>
<header><span class="brand">Enclave</span>{nav}</header>
<main{main}>
<h1>{title}</h1>
{status}{body}
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

/// Whether `system` holds every word (lower case) of a filter.
fn matches(system: &ManagedSystem, words: &[String]) -> bool {
    words.iter().all(|word| {
        system.name.to_lowercase().contains(word.as_str())
            || system.address.to_string().contains(word.as_str())
            || system
                .tags
                .iter()
                .any(|t| t.to_lowercase().contains(word.as_str()))
            || system.approval.as_str() == word
            || (word == "gateway" && is_gateway(system))
    })
}

/// Systems shown on one page of the Systems page.
pub(crate) const PAGE: usize = 50;

/// One page of the Systems page: the systems that match a filter, [`PAGE`] at a time, in
/// name order.
#[derive(Debug)]
pub(crate) struct Listing<'a> {
    q: &'a str,
    /// Systems in the network.
    total: usize,
    /// Systems that match.
    matched: usize,
    /// This page (from 1) and how many there are.
    page: usize,
    pages: usize,
    /// The first shown is the `offset + 1`-th that matches.
    offset: usize,
    systems: Vec<&'a ManagedSystem>,
}

impl<'a> Listing<'a> {
    /// Page `page` (from 1; kept within the pages there are) of the systems matching `q`.
    pub(crate) fn of(state: &'a State, q: &'a str, page: usize) -> Self {
        let words: Vec<String> = q.split_whitespace().map(str::to_lowercase).collect();
        let matching: Vec<&ManagedSystem> = state
            .systems
            .values()
            .filter(|s| matches(s, &words))
            .collect();
        let pages = matching.len().div_ceil(PAGE).max(1);
        let page = page.clamp(1, pages);
        let offset = (page - 1) * PAGE;
        let matched = matching.len();
        let systems = matching.into_iter().skip(offset).take(PAGE).collect();
        Self {
            q,
            total: state.systems.len(),
            matched,
            page,
            pages,
            offset,
            systems,
        }
    }

    /// The names of the systems shown.
    pub(crate) fn names(&self) -> BTreeSet<&'a str> {
        self.systems.iter().map(|s| s.name.as_str()).collect()
    }

    /// The Systems page's address for page `page` of this filter.
    fn href(&self, page: usize) -> String {
        if self.q.is_empty() {
            format!("/portal/systems?page={page}")
        } else {
            format!("/portal/systems?q={}&page={page}", segment(self.q))
        }
    }

    /// How many are shown, of how many: "1–50 of 10000 systems that match (12000 in all)."
    fn counted(&self) -> String {
        let noun = |n: usize| if n == 1 { "system" } else { "systems" };
        let filtered = self.matched != self.total;
        if self.pages > 1 {
            let of_all = if filtered {
                format!(" that match ({} in all)", self.total)
            } else {
                String::new()
            };
            format!(
                "{}–{} of {} systems{of_all}.",
                self.offset + 1,
                self.offset + self.systems.len(),
                self.matched
            )
        } else if filtered {
            format!(
                "{} of {} {} match.",
                self.matched,
                self.total,
                noun(self.total)
            )
        } else {
            format!("{} {}.", self.total, noun(self.total))
        }
    }

    /// "Previous", "Page N of M", "Next".
    fn pager(&self) -> String {
        if self.pages <= 1 {
            return String::new();
        }
        let previous = if self.page > 1 {
            format!(
                r#"<a href="{}" rel="prev" id="page-previous">← Previous</a>"#,
                esc(&self.href(self.page - 1))
            )
        } else {
            String::new()
        };
        let next = if self.page < self.pages {
            format!(
                r#"<a href="{}" rel="next" id="page-next">Next →</a>"#,
                esc(&self.href(self.page + 1))
            )
        } else {
            String::new()
        };
        format!(
            r#"<nav class="pager" aria-label="Pages">{previous}<span aria-current="page">Page {} of {}</span>{next}</nav>"#,
            self.page, self.pages
        )
    }
}

/// What the agent says of its host: its name and the agent's version.
fn platform(agent: Option<&AgentInfo>) -> String {
    let Some(agent) = agent else {
        return r#"<span class="hint">—</span>"#.to_owned();
    };
    let version = if agent.agent_version.is_empty() {
        "agent".to_owned()
    } else {
        format!("agent {}", esc(&agent.agent_version))
    };
    match &agent.hostname {
        Some(host) => format!(
            "{} <span class=\"hint nowrap\">({version})</span>",
            esc(host)
        ),
        None => version,
    }
}

/// The gateway a sender uses now for each subnet, short: `menlo-gw-2 for 192.168.77.0/24`.
fn gateways_in_use(agent: Option<&AgentInfo>) -> String {
    let Some(report) = agent.and_then(|a| a.report.as_ref()) else {
        return String::new();
    };
    report
        .active_gateways
        .iter()
        .map(|(subnet, active)| match &active.gateway {
            Some(gateway) => format!(
                r#"<span class="via"><a href="/portal/systems/{}">{}</a> for <code>{subnet}</code></span>"#,
                segment(gateway),
                esc(gateway)
            ),
            None => format!(
                r#"<span class="via"><span class="badge bad">none</span> for <code>{subnet}</code></span>"#
            ),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn systems(
    session: &Session,
    listing: &Listing<'_>,
    seen: &HashMap<String, Seen>,
    agents: &BTreeMap<String, AgentInfo>,
    flash: Option<&Flash>,
) -> String {
    let q = listing.q;
    let mut rows = String::new();
    for system in &listing.systems {
        let agent = agents.get(&system.name);
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
                r#"<form method="post" action="/portal/systems/{path}/approve"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="back" value="systems"><input type="hidden" name="q" value="{q}"><input type="hidden" name="page" value="{page}"><button type="submit" class="primary" id="approve-{id}" aria-label="Approve {name}">Approve</button></form>"#,
                path = segment(&system.name),
                csrf = esc(&session.csrf),
                q = esc(q),
                page = listing.page,
                id = esc(&system.name),
                name = esc(&system.name),
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            rows,
            r#"<tr id="system-{id}"><td><a href="/portal/systems/{path}">{name}</a>{gateway}</td><td data-label="Overlay address"><code>{address}</code></td><td data-label="Tags">{tags}</td><td data-label="State">{state}</td><td class="presence" data-label="Connection">{presence}</td><td data-label="Platform">{platform}</td><td class="in-use" data-label="Gateway in use">{in_use}</td><td>{approve}</td></tr>"#,
            id = esc(&system.name),
            path = segment(&system.name),
            name = esc(&system.name),
            address = system.address,
            tags = tags.join(" "),
            state = state_badge(system.approval),
            presence = presence(system, seen),
            platform = platform(agent),
            in_use = gateways_in_use(agent),
        );
    }
    if listing.systems.is_empty() {
        rows = r#"<tr><td colspan="8" class="empty">No system matches.</td></tr>"#.to_owned();
    }
    let counted = listing.counted();
    let flash = flash.map_or_else(String::new, Flash::html);
    layout_live(
        session,
        "Systems",
        &listing.href(listing.page),
        &format!(
            r#"{flash}<p><a href="/portal/app-devices" id="add-app-device">Add a device with the WireGuard app</a></p>
<form class="search" method="get" action="/portal/systems" role="search">
<label for="q">Filter</label>
<input id="q" name="q" value="{q}" placeholder="name, address, tag, pending, gateway…">
<button type="submit">Filter</button>
</form>
<div id="systems-live" data-live>
<p class="hint" id="systems-count">{counted}</p>
<div class="table"><table class="cards">
<thead><tr><th scope="col">Name</th><th scope="col">Overlay address</th><th scope="col">Tags</th><th scope="col">State</th><th scope="col">Connection</th><th scope="col">Platform</th><th scope="col">Gateway in use</th><th scope="col"><span class="sr">Actions</span></th></tr></thead>
<tbody>
{rows}</tbody></table></div>
{pager}
</div>"#,
            q = esc(q),
            pager = listing.pager(),
        ),
    )
}

/// What is known of a system's agent: where it is (any server) and, when it is connected to
/// this server, what it reported.
#[derive(Debug)]
pub(crate) struct Shown<'a> {
    pub(crate) seen: &'a HashMap<String, Seen>,
    pub(crate) agent: Option<&'a AgentInfo>,
}

impl<'a> Shown<'a> {
    /// The agent connected here and its last report, or (`Err`) what its cards say instead.
    fn report(&self) -> Result<(&'a AgentInfo, &'a Report), String> {
        let agent = self.agent.ok_or_else(|| {
            r#"<p class="hint">Shown while the system's agent is connected to this server.</p>"#
                .to_owned()
        })?;
        let report = agent
            .report
            .as_deref()
            .ok_or_else(|| r#"<p class="hint">Its agent has not reported yet.</p>"#.to_owned())?;
        Ok((agent, report))
    }
}

/// Seconds as "3 s", "4 min", "2 h".
fn ago(secs: f64) -> String {
    if secs < 90.0 {
        format!("{secs:.0} s ago")
    } else if secs < 5400.0 {
        format!("{:.0} min ago", secs / 60.0)
    } else {
        format!("{:.0} h ago", secs / 3600.0)
    }
}

/// Bytes as "12.3 KiB".
fn bytes(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let mut value = n as f64;
    for unit in ["B", "KiB", "MiB", "GiB"] {
        if value < 1024.0 {
            return if unit == "B" {
                format!("{n} B")
            } else {
                format!("{value:.1} {unit}")
            };
        }
        value /= 1024.0;
    }
    format!("{value:.1} TiB")
}

/// The agent's lines of the Overview.
fn agent_overview(system: &ManagedSystem, shown: &Shown<'_>) -> String {
    let Some(agent) = shown.agent else {
        let server = shown
            .seen
            .get(&system.public_key)
            .filter(|s| s.connected)
            .and_then(|s| s.server.as_deref());
        return server.map_or_else(String::new, |server| {
            format!(
                "<dt>Agent</dt><dd>connected to server <code>{}</code>; its report is shown there</dd>",
                esc(server)
            )
        });
    };
    let applied = match (agent.serial_applied, agent.serial_sent) {
        (Some(applied), Some(sent)) if applied == sent => format!("{applied} (the latest)"),
        (Some(applied), Some(sent)) => format!("{applied} (sent {sent})"),
        (None, Some(sent)) => format!("not yet (sent {sent})"),
        (Some(applied), None) => applied.to_string(),
        (None, None) => "none sent".to_owned(),
    };
    format!(
        "<dt>Platform</dt><dd>{}</dd><dt>Connected since</dt><dd>{}</dd><dt>Endpoint</dt><dd><code>{}</code></dd><dt>View applied</dt><dd>{applied}</dd>",
        platform(Some(agent)),
        utc(agent.connected_since),
        esc(&agent.endpoint),
    )
}

/// The "Gateways in use" card: which gateway carries each subnet for this sender, since
/// when and why.
fn active_gateways(shown: &Shown<'_>) -> String {
    let (agent, report) = match shown.report() {
        Ok(reported) => reported,
        Err(instead) => return instead,
    };
    if report.active_gateways.is_empty() {
        return r#"<p class="hint">This system routes no subnet through a gateway.</p>"#.to_owned();
    }
    let mut rows = String::new();
    for (subnet, active) in &report.active_gateways {
        let gateway = active.gateway.as_ref().map_or_else(
            || r#"<span class="badge bad">none works</span>"#.to_owned(),
            |g| format!(r#"<a href="/portal/systems/{}">{}</a>"#, segment(g), esc(g)),
        );
        let since = agent
            .active_since
            .get(subnet)
            .map_or_else(String::new, |t| utc_seconds(*t));
        let _ = writeln!(
            rows,
            "<tr><td><code>{subnet}</code></td><td>{gateway}</td><td>{since}</td><td>{}</td></tr>",
            esc(without_age(&active.reason))
        );
    }
    format!(
        r#"<div class="table"><table>
<thead><tr><th scope="col">Subnet</th><th scope="col">Gateway in use</th><th scope="col">Since</th><th scope="col">Why</th></tr></thead>
<tbody>
{rows}</tbody></table></div>"#
    )
}

/// A reason without the age the agent gave it when it reported (`failed over from
/// menlo-gw-1 0.9 s ago`): it is stale on a page, where "Since" says when.
pub(crate) fn without_age(reason: &str) -> &str {
    let Some(rest) = reason.strip_suffix(" s ago") else {
        return reason;
    };
    match rest.rsplit_once(' ') {
        Some((head, age)) if age.parse::<f64>().is_ok() => head,
        _ => reason,
    }
}

/// The "Peers" card: each tunnel as the agent's status shows it.
fn peers(shown: &Shown<'_>) -> String {
    let report = match shown.report() {
        Ok((_, report)) => report,
        Err(instead) => return instead,
    };
    let mut out = String::new();
    for warning in &report.warnings {
        let _ = write!(out, r#"<p class="error">{}</p>"#, esc(warning));
    }
    if report.peers.is_empty() {
        out.push_str(r#"<p class="hint">No peers: no policy gives this system a tunnel.</p>"#);
        return out;
    }
    let mut rows = String::new();
    for (name, peer) in &report.peers {
        // `Up` or `Down` as the agent's status says it; anything else is in between.
        let class = match peer.state.to_ascii_lowercase().as_str() {
            "up" | "connected" => "ok",
            "down" => "bad",
            _ => "warn",
        };
        let _ = writeln!(
            rows,
            r#"<tr><td>{name}</td><td><span class="badge {class}">{state}</span></td><td><code>{endpoint}</code></td><td>{activity}</td><td>{rx} in, {tx} out</td><td>{rtt}</td></tr>"#,
            name = esc(name),
            state = esc(&peer.state),
            endpoint = esc(peer.endpoint.as_deref().unwrap_or("")),
            activity = peer.last_activity_secs.map_or_else(String::new, ago),
            rx = bytes(peer.rx_bytes),
            tx = bytes(peer.tx_bytes),
            rtt = peer
                .rtt_ms
                .map_or_else(String::new, |r| format!("{r:.1} ms")),
        );
    }
    let _ = write!(
        out,
        r#"<div class="table"><table>
<thead><tr><th scope="col">Peer</th><th scope="col">State</th><th scope="col">Endpoint</th><th scope="col">Last activity</th><th scope="col">Transfer</th><th scope="col">Link RTT</th></tr></thead>
<tbody>
{rows}</tbody></table></div>"#
    );
    out
}

pub(crate) fn system(
    session: &Session,
    system: &ManagedSystem,
    shown: &Shown<'_>,
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
    layout_live(
        session,
        &system.name,
        &format!("/portal/systems/{path}"),
        &format!(
            r#"{flash}<p><a href="/portal/systems">← Systems</a></p>
<section class="card"><h2>Overview</h2>
<dl id="overview" data-live>
<dt>Overlay address</dt><dd><code>{address}</code></dd>
<dt>State</dt><dd>{state}{gateway_badge} {approve}</dd>
<dt>Connection</dt><dd>{presence}</dd>
{agent}<dt>Public key</dt><dd><code>{key}</code></dd>
<dt>Enrolled</dt><dd>{created}</dd>
{app_device}</dl></section>
<section class="card"><h2>Gateways in use</h2>
<div id="active-gateways" data-live>{active}</div></section>
<section class="card"><h2>Peers</h2>
<div id="peers" data-live>{peers}</div></section>
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
<div class="table" id="subnets-table" data-live><table>
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
            presence = presence(system, shown.seen),
            agent = agent_overview(system, shown),
            active = active_gateways(shown),
            peers = peers(shown),
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
