//! The Explain page: "would system X reach address Y on protocol/port Z, now?", answered by
//! the policy engine's `explain`, with the reasons as `enclave-agent policy explain` prints
//! them. It changes nothing, so its form is a `GET` (like the Systems filter): the answer has
//! an address of its own and needs no CSRF token.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use enclave_policy::{Explanation, FindingOutcome, GrantKind, Protocol, Timestamp, Verdict};

use crate::model::State as Network;

use super::fields::{field, Fields};
use super::pages::{esc, layout, utc};
use super::session::{Session, SignedIn};
use super::{html, now, Answer, Portal};

/// The form's name, for its errors.
const ASK: &str = "ask";
/// The form's fields.
const KNOWN: &[&str] = &["from", "to", "proto", "port", "from_ip", "at"];

/// The question, read from the form.
struct Question {
    query: enclave_policy::Query,
    /// Whether `at` was left empty.
    now: bool,
    /// Where the public address came from, when the form left it empty.
    observed: Option<Ipv4Addr>,
}

/// The sender's public address as the servers last saw it, if any.
fn observed(
    state: &Network,
    seen: &HashMap<String, crate::agents::Seen>,
    from: &str,
) -> Option<Ipv4Addr> {
    let system = state.systems.get(from)?;
    let text = seen.get(&system.public_key)?.endpoint.as_deref()?;
    let ip = text
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| text.parse::<IpAddr>())
        .ok()?;
    match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

fn question(
    form: &HashMap<String, String>,
    state: &Network,
    seen: &HashMap<String, crate::agents::Seen>,
) -> Result<Question, Fields> {
    let wrong = |name: &str, message: String, hint: &str| {
        Fields::error(ASK, name, message, Some(hint), form)
    };
    let from = field(form, "from");
    if !state.systems.contains_key(&from) {
        return Err(wrong(
            "from",
            format!("there is no system named {from:?}"),
            "choose a system from the list",
        ));
    }
    let to_text = field(form, "to");
    let to: Ipv4Addr = to_text.parse().map_err(|_| {
        wrong(
            "to",
            format!("{to_text:?} is not an IPv4 address"),
            "write one address, such as 192.168.77.20 or 100.64.0.2",
        )
    })?;
    let protocol = match field(form, "proto").as_str() {
        "" => None,
        "any" => Some(Protocol::Any),
        "icmp" => Some(Protocol::Icmp),
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        other => {
            return Err(wrong(
                "proto",
                format!("{other:?} is not a protocol"),
                "choose any traffic, TCP, UDP, ICMP or any protocol",
            ))
        }
    };
    let port = match field(form, "port").as_str() {
        "" => None,
        text => Some(text.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
            wrong(
                "port",
                format!("{text:?} is not a port"),
                "a number from 1 to 65535, or empty for any port",
            )
        })?),
    };
    if port.is_some() && matches!(protocol, Some(Protocol::Icmp)) {
        return Err(wrong(
            "port",
            "ICMP has no ports".to_owned(),
            "leave the port empty, or choose TCP or UDP",
        ));
    }
    let seen_ip = observed(state, seen, &from);
    let public_ip = match field(form, "from_ip").as_str() {
        "" => seen_ip,
        text => Some(text.parse::<Ipv4Addr>().map_err(|_| {
            wrong(
                "from_ip",
                format!("{text:?} is not an IPv4 address"),
                "the sender's public (underlay) address, or empty for the one last seen",
            )
        })?),
    };
    let at_text = field(form, "at");
    let at = if at_text.is_empty() {
        Timestamp::now()
    } else {
        at_text.parse::<Timestamp>().map_err(|_| {
            wrong(
                "at",
                format!("{at_text:?} is not an RFC 3339 time"),
                "such as 2026-11-25T18:00:00Z, or empty for now",
            )
        })?
    };
    Ok(Question {
        query: enclave_policy::Query {
            from,
            to,
            protocol,
            port,
            public_ip,
            at,
        },
        now: at_text.is_empty(),
        observed: field(form, "from_ip")
            .is_empty()
            .then_some(seen_ip)
            .flatten(),
    })
}

pub(super) async fn page(
    State(portal): State<Portal>,
    Query(form): Query<HashMap<String, String>>,
    SignedIn(session): SignedIn,
) -> Answer {
    let state = portal.state().await?;
    let (status, fields, card) = if form.contains_key("from") {
        match answer(&portal, &state, &form).await {
            Ok(card) => (StatusCode::OK, Fields::default(), card),
            Err(fields) => (StatusCode::UNPROCESSABLE_ENTITY, fields, String::new()),
        }
    } else {
        (StatusCode::OK, Fields::default(), String::new())
    };
    Ok(html(
        status,
        render(&session, &state, &form, &fields, &card),
    ))
}

/// The answer to the form's question, as HTML, or what is wrong with the question.
async fn answer(
    portal: &Portal,
    state: &Network,
    form: &HashMap<String, String>,
) -> Result<String, Fields> {
    let seen = portal.hub.seen().await;
    let question = question(form, state, &seen)?;
    let network = portal
        .network(state)
        .map_err(|refusal| Fields::refused(ASK, &refusal, form))?;
    // The system is in the state but not in the compiled network when it is not enabled.
    let answer = enclave_policy::explain(&network, &question.query)
        .map_err(|e| Fields::error(ASK, "from", e.to_string(), None, form))?;
    Ok(answer_card(&answer, &question))
}

fn protocol_name(protocol: Option<Protocol>) -> &'static str {
    match protocol {
        None => "any traffic",
        Some(Protocol::Any) => "any protocol",
        Some(Protocol::Icmp) => "ICMP",
        Some(Protocol::Tcp) => "TCP",
        Some(Protocol::Udp) => "UDP",
    }
}

fn answer_card(answer: &Explanation, question: &Question) -> String {
    let (verdict, class, sentence) = match answer.verdict {
        Verdict::Allowed => ("allowed", "ok", "Yes"),
        Verdict::Denied => ("denied", "bad", "No"),
    };
    let port = answer
        .port
        .map_or_else(String::new, |p| format!(" port {p}"));
    let when = if question.now {
        format!("now ({})", utc(now()))
    } else {
        format!("at {}", question.query.at)
    };
    let public = match (question.query.public_ip, question.observed) {
        (Some(ip), Some(_)) => {
            format!("with the public address the control server last saw for it, <code>{ip}</code>")
        }
        (Some(ip), None) => format!("with the public address <code>{ip}</code>"),
        (None, _) => "with no public address known (a public IP requirement fails)".to_owned(),
    };
    let mut reasons = String::new();
    if let Some(denial) = &answer.denial {
        let _ = write!(reasons, "<li>{}</li>", esc(&denial.to_string()));
    }
    for finding in &answer.findings {
        let kind = match finding.kind {
            GrantKind::Direct => "Direct access policy",
            GrantKind::Gateway => "Gateway access policy",
        };
        let what = match &finding.outcome {
            FindingOutcome::Allowed { acl, gateways } => {
                let mut text = format!(
                    r#"<span class="badge ok">allows</span> by ACL entry <code>{}</code>"#,
                    esc(&acl.to_string())
                );
                if !gateways.is_empty() {
                    let _ = write!(
                        text,
                        ", through {}",
                        gateways
                            .iter()
                            .map(|g| format!("<strong>{}</strong>", esc(g)))
                            .collect::<Vec<_>>()
                            .join(", then ")
                    );
                }
                text
            }
            FindingOutcome::Denied { reason } => format!(
                r#"<span class="badge bad">denies</span> {}"#,
                esc(&reason.to_string())
            ),
        };
        let _ = write!(
            reasons,
            "<li>{kind} <strong>{}</strong>: {what}</li>",
            esc(&finding.policy)
        );
    }
    format!(
        r#"<section class="card answer" id="answer" aria-labelledby="answer-title">
<h2 id="answer-title">{sentence}: <span class="badge {class}" id="verdict">{verdict}</span></h2>
<p><strong>{from}</strong> → <code>{to}</code>{port}, {protocol}, {when}, {public}.</p>
<h3>Why</h3>
<ul class="reasons">{reasons}</ul>
<h3>As <code>enclave-agent policy explain</code> prints it</h3>
<pre id="explain-text">{text}</pre>
</section>"#,
        from = esc(&answer.from),
        to = answer.to,
        protocol = protocol_name(answer.protocol),
        text = esc(&answer.to_string()),
    )
}

fn render(
    session: &Session,
    state: &Network,
    form: &HashMap<String, String>,
    fields: &Fields,
    answer: &str,
) -> String {
    let typed = |name: &str| esc(form.get(name).map_or("", String::as_str));
    let from = form.get("from").map_or("", String::as_str);
    let mut systems = String::new();
    for name in state.systems.keys() {
        let selected = if name == from { " selected" } else { "" };
        let _ = write!(
            systems,
            r#"<option value="{n}"{selected}>{n}</option>"#,
            n = esc(name)
        );
    }
    let proto = form.get("proto").map_or("", String::as_str);
    let mut protocols = String::new();
    for (value, label) in [
        ("", "Any traffic"),
        ("tcp", "TCP"),
        ("udp", "UDP"),
        ("icmp", "ICMP (ping)"),
        ("any", "Any protocol (an ACL entry for every protocol)"),
    ] {
        let selected = if value == proto { " selected" } else { "" };
        let _ = write!(
            protocols,
            r#"<option value="{value}"{selected}>{label}</option>"#
        );
    }
    layout(
        Some(session),
        "Explain",
        &format!(
            r#"<p class="hint">Would a system reach an address, and why (not)? The answer comes from the policies as they are now, judged as the gateway or receiver would judge them: which policy, which ACL entry, which gateway, which trust requirement or active hours failed.</p>
<section class="card"><h2>Would this system reach this address?</h2>
<form method="get" action="/portal/explain#answer">
{general}
<label for="explain-from">System <span class="hint">(the sender)</span></label>
<select id="explain-from" name="from" required>{systems}</select>
{from_errors}
<label for="explain-to">Address</label>
<input id="explain-to" name="to" required value="{to}" placeholder="e.g. 192.168.77.20">
{to_errors}
<label for="explain-proto">Protocol</label>
<select id="explain-proto" name="proto">{protocols}</select>
{proto_errors}
<label for="explain-port">Port <span class="hint">(TCP or UDP; empty: any port)</span></label>
<input id="explain-port" name="port" inputmode="numeric" value="{port}" placeholder="any port">
{port_errors}
<label for="explain-from-ip">Public address of the system <span class="hint">(for public IP requirements; empty: the one the control server last saw)</span></label>
<input id="explain-from-ip" name="from_ip" value="{from_ip}" placeholder="as last seen">
{from_ip_errors}
<label for="explain-at">When <span class="hint">(RFC 3339, for active hours; empty: now)</span></label>
<input id="explain-at" name="at" value="{at}" placeholder="now">
{at_errors}
<button type="submit" class="primary" id="explain">Explain</button>
</form></section>
{answer}"#,
            general = fields.rest(ASK, KNOWN),
            from_errors = fields.at(ASK, &["from"]),
            to = typed("to"),
            to_errors = fields.at(ASK, &["to"]),
            proto_errors = fields.at(ASK, &["proto"]),
            port = typed("port"),
            port_errors = fields.at(ASK, &["port"]),
            from_ip = typed("from_ip"),
            from_ip_errors = fields.at(ASK, &["from_ip"]),
            at = typed("at"),
            at_errors = fields.at(ASK, &["at"]),
        ),
    )
}
