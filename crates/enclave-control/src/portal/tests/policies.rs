//! The Policies pages in-process, over the harness of the portal's tests.

use super::*;
use crate::model::{PolicyDoc, PolicyKind};
use crate::portal::policy_form::{slot, Draft};

const LAN: &str = "192.168.77.0/24";

/// The harness with the laptop approved, allowed to act as a gateway and serving the LAN
/// (done on the server host, as `cli`), and a signed-in session: its cookie.
fn gateway_ready(name: &str) -> (Harness, String) {
    let h = Harness::new(name);
    for command in [
        Command::Approve {
            name: "laptop".into(),
        },
        Command::SetGateway {
            name: "laptop".into(),
            allowed: true,
        },
        Command::AddSubnet {
            system: "laptop".into(),
            subnet: LAN.parse().unwrap(),
        },
    ] {
        h.execute(command);
    }
    let (_, cookie) = h.sign_in(PASSWORD);
    (h, cookie)
}

/// The guide's policy as the form posts it, with `filter` as typed.
fn guide_form(csrf: &str, filter: &str) -> String {
    encode(&[
        ("csrf", csrf),
        ("version", "0"),
        ("kind", "gateway"),
        ("name", "users to Menlo Park Office"),
        ("enabled", "on"),
        ("senders", "users"),
        ("gateways", "laptop"),
        ("subnets", LAN),
        ("more_subnets", ""),
        ("filtering", "on"),
        ("filter", filter),
        ("acl-protocol-0", "icmp"),
        ("acl-ports-0", ""),
        ("acl-label-0", "ping"),
        ("acl-protocol-1", "tcp"),
        ("acl-ports-1", "445"),
        ("acl-label-1", "SMB"),
        ("acl-protocol-2", ""),
        ("acl-ports-2", ""),
        ("acl-label-2", ""),
        ("hours", ""),
        ("zone", ""),
    ])
}

/// The token of the new-policy form, as `cookie`'s user opens it.
fn new_policy_csrf(h: &Harness, cookie: &str) -> String {
    h.get("/portal/new-policy", cookie).csrf()
}

/// Posts the guide's policy (see [`guide_form`]) to the new-policy form.
fn new_policy(h: &Harness, cookie: &str, csrf: &str, filter: &str) -> Answer {
    h.send(
        Method::POST,
        "/portal/new-policy",
        cookie,
        Some(guide_form(csrf, filter)),
    )
}

/// Asserts that a form was saved: sent back to the list, or shown again with the warnings
/// of its validation.
fn assert_saved(answer: &Answer) {
    assert!(
        answer.status == StatusCode::SEE_OTHER
            || (answer.status == StatusCode::OK
                && answer.text.contains("Saved, with the warnings below.")),
        "{} {}",
        answer.status,
        answer.text
    );
}

#[test]
fn the_guides_policy_is_made_in_the_form_and_audited_as_the_user() {
    let (h, cookie) = gateway_ready("policy-create");
    let list = h
        .get("/portal/policies", &cookie)
        .expect_status(StatusCode::OK);
    assert!(list.text.contains("No policies yet"), "{}", list.text);
    let form = h
        .get("/portal/new-policy?kind=gateway", &cookie)
        .expect_status(StatusCode::OK);
    // The gateway and the subnet it serves are offered.
    assert!(form.text.contains(r#"name="gateways" value="laptop""#));
    assert!(form
        .text
        .contains(&format!(r#"name="subnets" value="{LAN}""#)));
    assert!(form.text.contains("Subnet filtering"));
    let csrf = form.csrf();

    let made = new_policy(&h, &cookie, &csrf, "192.168.77.20\n192.168.77.21");
    // Saved; no system carries the tag `users` yet, which `policy check` warns about: the
    // form shows the warning at the senders.
    assert_eq!(made.status, StatusCode::OK, "{}", made.text);
    assert!(made.text.contains("Saved, with the warnings below."));
    let senders_at = made.text.find(r#"id="senders""#).unwrap();
    let warning_at = made
        .text
        .find(r#"<p class="field-warning">no system carries tag &quot;users&quot;"#)
        .unwrap();
    assert!(warning_at > senders_at && warning_at < made.text.find("<legend>Gateways").unwrap());
    let state = h.state();
    let policy = &state.policies["users to Menlo Park Office"];
    assert_eq!(policy.kind, PolicyKind::Gateway);
    assert!(policy.enabled);
    assert_eq!(policy.senders, ["users"]);
    assert_eq!(policy.gateways, ["laptop"]);
    assert_eq!(policy.subnets, [LAN]);
    assert_eq!(
        policy.filter.as_deref(),
        Some(&["192.168.77.20".to_owned(), "192.168.77.21".to_owned()][..])
    );
    assert_eq!(policy.acl.len(), 2, "the blank row is no entry");
    assert_eq!(policy.acl[1].protocol, "tcp");
    assert_eq!(policy.acl[1].label.as_deref(), Some("SMB"));
    assert!(policy.active_hours.is_none());
    let entries = h.audit();
    assert!(entries.iter().any(|e| e.actor == "user:alice"
        && e.action == "policy.create"
        && e.target == "users to Menlo Park Office"));

    // The list shows it with the guide's words.
    let list = h.get("/portal/policies", &cookie);
    for words in [
        "users to Menlo Park Office",
        "Gateway access",
        "Subnet filter:</strong> 192.168.77.20, 192.168.77.21",
        "tcp 445 (SMB)",
        "enabled",
    ] {
        assert!(list.text.contains(words), "{words:?} in {}", list.text);
    }
    // The same name again is refused at the name.
    let again = new_policy(&h, &cookie, &csrf, "192.168.77.20")
        .expect_status(StatusCode::UNPROCESSABLE_ENTITY);
    let name_at = again.text.find(r#"id="name""#).unwrap();
    let error_at = again.text.find("exists already").unwrap();
    assert!(error_at > name_at && error_at < again.text.find(r#"id="senders""#).unwrap());
}

#[test]
fn a_bad_cidr_is_refused_next_to_the_filter_with_what_was_typed() {
    let (h, cookie) = gateway_ready("policy-bad-cidr");
    let csrf = new_policy_csrf(&h, &cookie);
    for bad in ["192.168.77.0/33", "192.168.99.1"] {
        let answer = new_policy(&h, &cookie, &csrf, &format!("192.168.77.20\n{bad}"))
            .expect_status(StatusCode::UNPROCESSABLE_ENTITY);
        let text = &answer.text;
        let filter_at = text.find(r#"id="filter""#).unwrap();
        let error_at = text[filter_at..]
            .find("field-error")
            .map(|at| at + filter_at)
            .unwrap_or_else(|| panic!("no error after the filter: {text}"));
        // Next to the filter: before the next group (the ACLs).
        assert!(error_at < text.find("<legend>ACLs").unwrap(), "{text}");
        assert!(text[error_at..].starts_with("field-error"));
        assert!(text.contains(bad), "the error or the field names {bad}");
        // What was typed stays in the text area, and the other fields too.
        assert!(
            text.contains(&format!("192.168.77.20\n{bad}</textarea>")),
            "{text}"
        );
        assert!(text.contains(r#"value="users to Menlo Park Office""#));
        assert!(text.contains(r#"name="acl-ports-1" value="445""#));
        assert!(h.state().policies.is_empty(), "nothing was saved");
    }
}

#[test]
fn a_bad_port_is_shown_at_its_acl_row_and_a_bad_zone_at_the_zone() {
    let (h, cookie) = gateway_ready("policy-bad-acl");
    let csrf = new_policy_csrf(&h, &cookie);
    let form = encode(&[
        ("csrf", &csrf),
        ("kind", "gateway"),
        ("name", "office"),
        ("enabled", "on"),
        ("senders", "users"),
        ("gateways", "laptop"),
        ("subnets", LAN),
        // A blank row before the bad one: the error still lands on the bad row.
        ("acl-protocol-0", ""),
        ("acl-protocol-1", "tcp"),
        ("acl-ports-1", "70000"),
        ("timed", "on"),
        ("days", "mon"),
        ("hours", "07:00-19:00"),
        ("zone", "Mars/Olympus_Mons"),
    ]);
    let answer = h
        .send(Method::POST, "/portal/new-policy", &cookie, Some(form))
        .expect_status(StatusCode::UNPROCESSABLE_ENTITY);
    let text = &answer.text;
    let row_at = text.find(r#"id="acl-label-1""#).unwrap();
    let next_row = text.find(r#"id="acl-protocol-2""#).unwrap();
    let error_at = text[row_at..].find("field-error").unwrap() + row_at;
    assert!(error_at < next_row, "the port's error is on row 2: {text}");
    assert!(text[error_at..next_row].contains("70000"), "{text}");
    let zone_at = text.find(r#"id="zone""#).unwrap();
    let zone_error = text[zone_at..].find("field-error").map(|at| at + zone_at);
    assert!(
        zone_error.is_some_and(|at| text[at..].contains("Mars/Olympus_Mons")),
        "the zone's error follows the zone: {text}"
    );
    assert!(h.state().policies.is_empty());
}

#[test]
fn a_stale_edit_is_refused_and_the_switch_and_delete_work() {
    let (h, cookie) = gateway_ready("policy-edit");
    let csrf = new_policy_csrf(&h, &cookie);
    let made = new_policy(&h, &cookie, &csrf, "192.168.77.20");
    assert_saved(&made);
    let page_path = "/portal/policies/users%20to%20Menlo%20Park%20Office";
    let page = h.get(page_path, &cookie).expect_status(StatusCode::OK);
    assert!(page.text.contains("192.168.77.20</textarea>"));
    let read = h.state().policies["users to Menlo Park Office"].version;
    assert!(page
        .text
        .contains(&format!(r#"name="version" value="{read}""#)));

    // An edit at the version read is saved.
    let mut form = guide_form(&csrf, "192.168.77.20\n192.168.77.21");
    form = form.replace("version=0", &format!("version={read}"));
    let saved = h.send(
        Method::POST,
        &format!("{page_path}/save"),
        &cookie,
        Some(form.clone()),
    );
    assert_saved(&saved);
    let now_at = h.state().policies["users to Menlo Park Office"].clone();
    assert_eq!(now_at.filter.as_ref().map(Vec::len), Some(2));
    assert!(now_at.version > read);

    // The same form again carries the old version: refused, nothing changes.
    let stale = h
        .send(
            Method::POST,
            &format!("{page_path}/save"),
            &cookie,
            Some(form.replace("192.168.77.21", "192.168.77.22")),
        )
        .expect_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        stale.text.contains("changed by someone else"),
        "{}",
        stale.text
    );
    assert!(stale.text.contains("Reload the page"));
    assert_eq!(h.state().policies["users to Menlo Park Office"], now_at);

    // Without the form's token the switch changes nothing.
    let version = now_at.version.to_string();
    h.post(
        &format!("{page_path}/enabled"),
        &cookie,
        &[("version", &version), ("enabled", "off")],
    )
    .expect_status(StatusCode::FORBIDDEN);
    assert!(h.state().policies["users to Menlo Park Office"].enabled);
    // With it, the list's switch disables the policy.
    let off = h.post(
        &format!("{page_path}/enabled"),
        &cookie,
        &[("csrf", &csrf), ("version", &version), ("enabled", "off")],
    );
    assert_saved(&off);
    let disabled = h.state().policies["users to Menlo Park Office"].clone();
    assert!(!disabled.enabled);
    assert_eq!(disabled.filter, now_at.filter, "only the switch changed");
    let list = h.get("/portal/policies", &cookie);
    assert!(list.text.contains("disabled") && list.text.contains(">Enable</button>"));
    // A switch at an old version is refused too.
    h.post(
        &format!("{page_path}/enabled"),
        &cookie,
        &[("csrf", &csrf), ("version", &version), ("enabled", "on")],
    )
    .expect_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!h.state().policies["users to Menlo Park Office"].enabled);

    h.post(&format!("{page_path}/delete"), &cookie, &[("csrf", &csrf)])
        .expect_status(StatusCode::SEE_OTHER);
    assert!(h.state().policies.is_empty());
    h.get(page_path, &cookie)
        .expect_status(StatusCode::NOT_FOUND);
    let entries = h.audit();
    for action in ["policy.create", "policy.update", "policy.delete"] {
        assert!(
            entries
                .iter()
                .any(|e| e.actor == "user:alice" && e.action == action),
            "{action} by user:alice"
        );
    }
}

#[test]
fn a_direct_access_policy_and_pages_without_a_session() {
    let (h, cookie) = gateway_ready("policy-direct");
    for page in [
        "/portal/policies",
        "/portal/new-policy",
        "/portal/policies/x",
    ] {
        let answer = h.get(page, "");
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{page}");
        assert_eq!(answer.headers[header::LOCATION], "/portal/signin");
    }
    h.post("/portal/new-policy", "", &[("name", "x")])
        .expect_status(StatusCode::FORBIDDEN);

    let form = h.get("/portal/new-policy?kind=direct", &cookie);
    assert!(form.text.contains("Receiver tags"));
    assert!(!form.text.contains("Subnet filtering"));
    let made = h.post(
        "/portal/new-policy",
        &cookie,
        &[
            ("csrf", &form.csrf()),
            ("kind", "direct"),
            ("name", "admins to servers"),
            ("enabled", "on"),
            ("senders", "admins"),
            ("receivers", "servers, db"),
            ("acl-protocol-0", "tcp"),
            ("acl-ports-0", "22"),
            ("acl-label-0", "SSH"),
            // A gateway's fields do not belong to a direct policy: ignored.
            ("gateways", "laptop"),
        ],
    );
    assert_saved(&made);
    let policy = h.state().policies["admins to servers"].clone();
    assert_eq!(policy.kind, PolicyKind::Direct);
    assert_eq!(policy.receivers, ["servers", "db"]);
    assert!(policy.gateways.is_empty() && policy.filter.is_none());
    let list = h.get("/portal/policies", &cookie);
    assert!(list.text.contains("Direct access"));
}

#[test]
fn a_stored_policy_fills_the_form_and_reads_back_the_same() {
    let doc: PolicyDoc = serde_json::from_value(serde_json::json!({
        "name": "users to the office", "kind": "gateway", "enabled": false,
        "senders": ["users", "admins"], "gateways": ["gw-1", "gw-2"],
        "subnets": ["192.168.77.0/24", "10.1.0.0/16"],
        "filter": ["192.168.77.20", "192.168.77.30-192.168.77.40", "10.1.2.0/24"],
        "acl": [ { "protocol": "tcp", "ports": 445, "label": "SMB" },
                 { "protocol": "udp", "ports": "8000-8100" }, { "protocol": "icmp" } ],
        "trust": ["partner-offices"],
        "active_hours": { "days": ["mon", "fri"], "hours": ["07:00-12:00", "13:00-19:00"],
                          "zone": "America/Los_Angeles" },
        "version": 7 }))
    .unwrap();
    let draft = Draft::of(&doc);
    let (back, rows) = draft.doc();
    assert_eq!(back, doc);
    assert_eq!(rows, [0, 1, 2]);
    // A range typed with spaces is one entry.
    let mut typed = draft;
    typed.filter = "192.168.77.20 - 192.168.77.21,\n\n192.168.77.30".into();
    assert_eq!(
        typed.doc().0.filter.unwrap(),
        ["192.168.77.20-192.168.77.21", "192.168.77.30"]
    );
}

#[test]
fn problems_are_placed_by_their_field() {
    let name = "users to the office";
    let rows = [1, 3];
    let at = |field: &str| slot(field, name, &rows);
    assert_eq!(at(r#"policies["users to the office"].filter[1]"#), "filter");
    assert_eq!(
        at(r#"policies["users to the office"].subnets[0]"#),
        "subnets"
    );
    assert_eq!(at(r#"policies["users to the office"].acl[1]"#), "acl:3");
    assert_eq!(at(r#"policies["users to the office"].acl[9]"#), "acl");
    assert_eq!(
        at(r#"policies["users to the office"].active_hours.zone"#),
        "zone"
    );
    assert_eq!(
        at(r#"policies["users to the office"].active_hours.days[0]"#),
        "days"
    );
    assert_eq!(at(r#"policies["users to the office"]"#), "");
    assert_eq!(at("senders"), "senders");
    assert_eq!(at("name"), "name");
    // Another policy's, or another object's, field goes to the top.
    assert_eq!(at(r#"policies["other"].filter[0]"#), "");
    assert_eq!(at(r#"systems["gw"].gateway"#), "");
    assert_eq!(at("kind"), "");
}

#[test]
fn subnet_filtering_ticked_without_an_address_is_refused_at_the_filter() {
    let (h, cookie) = gateway_ready("policy-empty-filter");
    let csrf = new_policy_csrf(&h, &cookie);
    let answer =
        new_policy(&h, &cookie, &csrf, " \n ").expect_status(StatusCode::UNPROCESSABLE_ENTITY);
    let text = &answer.text;
    let filter_at = text.find(r#"id="filter""#).unwrap();
    let error_at = text[filter_at..].find("field-error").unwrap() + filter_at;
    assert!(error_at < text.find("<legend>ACLs").unwrap(), "{text}");
    assert!(
        text[error_at..].contains("subnet filter is empty"),
        "{text}"
    );
    assert!(h.state().policies.is_empty());
}
