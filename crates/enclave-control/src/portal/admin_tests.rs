//! The pages of enrolment keys, tags, trust requirements and explain, in-process over a real
//! SQLite store, through the same harness as the other portal pages.

use super::*;
use crate::model::{PolicyDoc, TrustDoc};
use crate::testing::smb_policy;

const KEY_B: &str = "CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=";

/// [`smb_policy`] through `gw` to 192.168.77.20 alone.
fn gateway_policy(name: &str) -> PolicyDoc {
    PolicyDoc {
        filter: Some(vec!["192.168.77.20".into()]),
        ..smb_policy(name, "gw", "192.168.77.0/24")
    }
}

/// The guide's network: `laptop` (tag `users`, approved) and gateway `gw` serving
/// 192.168.77.0/24, and a gateway access policy to 192.168.77.20 on TCP 445.
fn guide_network(h: &Harness) {
    h.execute(Command::Approve {
        name: "laptop".into(),
    });
    h.execute(Command::UpdateSystem {
        name: "laptop".into(),
        edit: SystemEdit {
            tags: Some(["users".to_owned()].into()),
            ..SystemEdit::default()
        },
    });
    let key = h.key(ApprovalMode::Auto);
    h.execute(Command::Enrol {
        key_hash: key.hash.into_inner(),
        public_key: KEY_B.into(),
        hostname: Some("gw".into()),
    });
    h.execute(Command::SetGateway {
        name: "gw".into(),
        allowed: true,
    });
    h.execute(Command::AddSubnet {
        system: "gw".into(),
        subnet: "192.168.77.0/24".parse().unwrap(),
    });
    h.execute(Command::PutPolicy {
        doc: gateway_policy("users to the office"),
        write: crate::core::Write::Create,
    });
}

#[test]
fn an_enrolment_key_is_shown_once_and_can_be_revoked() {
    let h = Harness::new("keys");
    let (_, cookie) = h.sign_in(PASSWORD);
    let page = h.get("/portal/keys", &cookie).expect_status(StatusCode::OK);
    assert!(page.text.contains("Create an enrolment key"));
    let csrf = page.csrf();
    let before = h.state().keys.len();

    // Without the form's token nothing is made.
    h.post(
        "/portal/keys",
        &cookie,
        &[("csrf", "forged"), ("tags", "users")],
    )
    .expect_status(StatusCode::FORBIDDEN);
    assert_eq!(h.state().keys.len(), before);

    // A bad expiry is refused next to its field, with what was typed kept.
    let bad = h.refused(
        "/portal/keys",
        &cookie,
        &[("csrf", &csrf), ("tags", "users"), ("expires", "soon")],
        "key-expires",
        "&quot;soon&quot; is not a duration",
    );
    assert!(bad.text.contains(r#"value="soon""#) && bad.text.contains(r#"value="users""#));
    // So is a bad tag, at the tags (the core's check, field `tags[0]`).
    h.refused(
        "/portal/keys",
        &cookie,
        &[("csrf", &csrf), ("tags", "no/slash")],
        "key-tags",
        "may hold only letters",
    );
    assert_eq!(h.state().keys.len(), before);

    let made = h
        .post(
            "/portal/keys",
            &cookie,
            &[
                ("csrf", &csrf),
                ("tags", "users, laptops"),
                ("approval", "auto"),
                ("uses", "3"),
                ("expires", "7d"),
                ("ephemeral", "on"),
            ],
        )
        .expect_status(StatusCode::OK);
    let at = made.text.find(r#"id="new-key" readonly value=""#).unwrap();
    let text = made.text[at..].split('"').nth(3).unwrap().to_owned();
    assert!(text.starts_with(secret::KEY_PREFIX), "{text}");
    assert!(made.text.contains("shown only this once"));
    let state = h.state();
    let key = state
        .keys
        .values()
        .find(|k| *k.hash.expose() == secret::hash(&text))
        .expect("the key shown is the key stored");
    assert_eq!(key.approval, ApprovalMode::Auto);
    assert_eq!(key.uses_allowed, Some(3));
    assert!(key.ephemeral);
    assert_eq!(key.tags, ["laptops", "users"].map(String::from).into());
    let expires = key.expires_at.unwrap() - now();
    assert!(
        (7 * 86_400 - 60..=7 * 86_400).contains(&expires),
        "{expires}"
    );
    assert_eq!(key.created_by, "user:alice");

    // Never again: not in the list, not on any other page.
    let list = h.get("/portal/keys", &cookie);
    assert!(!list.text.contains(&text));
    assert!(list.text.contains(&key.id) && list.text.contains("3 of 3"));
    assert!(list.text.contains("automatic"));

    let id = key.id.clone();
    let revoked = h
        .post(
            &format!("/portal/keys/{id}/revoke"),
            &cookie,
            &[("csrf", &csrf)],
        )
        .expect_status(StatusCode::OK);
    assert!(revoked
        .text
        .contains(&format!("Enrolment key {id} was revoked.")));
    assert!(h.state().keys[&id].revoked);
    let entries = h.audit();
    for action in ["key.create", "key.revoke"] {
        assert!(
            entries
                .iter()
                .any(|e| e.actor == "user:alice" && e.action == action),
            "{action} by user:alice"
        );
    }
    assert!(
        !entries
            .iter()
            .any(|e| e.detail.contains(&text) || e.target.contains(&text)),
        "the audit log holds the key"
    );
    h.post(
        "/portal/keys/000000000000/revoke",
        &cookie,
        &[("csrf", &csrf)],
    )
    .expect_status(StatusCode::NOT_FOUND);
}

#[test]
fn trust_requirements_are_created_edited_refused_at_their_field_and_deleted() {
    let h = Harness::new("trust");
    let (_, cookie) = h.sign_in(PASSWORD);
    let page = h
        .get("/portal/trust", &cookie)
        .expect_status(StatusCode::OK);
    let csrf = page.csrf();

    let bad = h.refused(
        "/portal/trust",
        &cookie,
        &[
            ("csrf", &csrf),
            ("name", "partner-offices"),
            ("allow", "198.51.100.1/24"),
        ],
        "create-allow",
        "198.51.100.1/24 has host bits set",
    );
    let error = bad.error_after("create-allow");
    assert!(error.contains("did you mean 198.51.100.0/24?"), "{error}");
    assert_eq!(bad.text.matches("field-error").count(), 1, "{}", bad.text);
    assert!(h.state().trust_requirements.is_empty());

    h.post(
        "/portal/trust",
        &cookie,
        &[
            ("csrf", &csrf),
            ("name", "partner-offices"),
            ("allow", "198.51.100.0/24\n203.0.113.0/24"),
            ("block", "203.0.113.128/25"),
        ],
    )
    .expect_status(StatusCode::SEE_OTHER);
    let doc = h.state().trust_requirements["partner-offices"].clone();
    assert_eq!(doc.kind, "public_ip");
    assert_eq!(doc.allow, ["198.51.100.0/24", "203.0.113.0/24"]);
    assert_eq!(doc.block, ["203.0.113.128/25"]);
    let list = h.get("/portal/trust", &cookie);
    assert!(list.text.contains("<code>203.0.113.128/25</code>"));

    // Edited at the version read; an older version is refused as stale.
    let edit = h
        .get("/portal/trust/partner-offices", &cookie)
        .expect_status(StatusCode::OK);
    assert!(edit.text.contains("198.51.100.0/24\n203.0.113.0/24"));
    let version = doc.version.to_string();
    h.post(
        "/portal/trust/partner-offices",
        &cookie,
        &[
            ("csrf", &csrf),
            ("version", &version),
            ("allow", "198.51.100.0/24"),
            ("block", ""),
        ],
    )
    .expect_status(StatusCode::SEE_OTHER);
    assert_eq!(
        h.state().trust_requirements["partner-offices"].allow,
        ["198.51.100.0/24"]
    );
    let stale = h
        .post(
            "/portal/trust/partner-offices",
            &cookie,
            &[("csrf", &csrf), ("version", &version), ("allow", "")],
        )
        .expect_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        stale.text.contains("was changed by someone else"),
        "{}",
        stale.text
    );

    // Named by a tag, it cannot be deleted; once free, it can.
    let tagged = h
        .post(
            "/portal/tags",
            &cookie,
            &[
                ("csrf", &csrf),
                ("name", "users"),
                ("trust-0", "partner-offices"),
            ],
        )
        .expect_status(StatusCode::OK);
    assert!(
        tagged.text.contains("no system carries tag"),
        "{}",
        tagged.text
    );
    assert_eq!(h.state().tags["users"].trust, ["partner-offices"]);
    let refused = h
        .post(
            "/portal/trust/partner-offices/delete",
            &cookie,
            &[("csrf", &csrf)],
        )
        .expect_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.text.contains("partner-offices"));
    assert!(h.state().trust_requirements.contains_key("partner-offices"));
    h.post("/portal/tags/users/delete", &cookie, &[("csrf", &csrf)])
        .expect_status(StatusCode::OK);
    assert!(h.state().tags.is_empty());
    h.post(
        "/portal/trust/partner-offices/delete",
        &cookie,
        &[("csrf", &csrf)],
    )
    .expect_status(StatusCode::OK);
    assert!(h.state().trust_requirements.is_empty());
    let entries = h.audit();
    let mine: Vec<&str> = entries
        .iter()
        .filter(|e| e.actor == "user:alice")
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(
        mine,
        [
            "trust.create",
            "trust.update",
            "tag.create",
            "tag.delete",
            "trust.delete"
        ]
    );
}

#[test]
fn active_hours_take_days_times_and_an_iana_zone() {
    let h = Harness::new("hours");
    guide_network(&h);
    let (_, cookie) = h.sign_in(PASSWORD);
    let list = h.get("/portal/trust", &cookie);
    assert!(list
        .text
        .contains("/portal/active-hours/users%20to%20the%20office"));
    let page = h
        .get("/portal/active-hours/users%20to%20the%20office", &cookie)
        .expect_status(StatusCode::OK);
    assert!(page.text.contains("This policy is always active."));
    assert!(page
        .text
        .contains(r#"<option value="America/Los_Angeles">"#));
    assert!(page.text.contains(r#"<option value="UTC" selected>"#));
    let csrf = page.csrf();
    let version = h.state().policies["users to the office"]
        .version
        .to_string();
    let path = "/portal/active-hours/users%20to%20the%20office";

    // Monday, with `hours` in `zone`.
    let monday = |hours, zone| {
        [
            ("csrf", csrf.as_str()),
            ("version", version.as_str()),
            ("day-mon", "on"),
            ("hours", hours),
            ("zone", zone),
        ]
    };
    h.refused(
        path,
        &cookie,
        &monday("07:00-19:00", "Mars/Olympus_Mons"),
        "hours-zone",
        "unknown time zone",
    );
    let bad = h.refused(
        path,
        &cookie,
        &monday("19:00-07:00", "UTC"),
        "hours-hours",
        "bad hours window",
    );
    assert!(bad.text.contains(r#"value="19:00-07:00""#));
    assert!(h.state().policies["users to the office"]
        .active_hours
        .is_none());

    h.post(
        path,
        &cookie,
        &[
            ("csrf", &csrf),
            ("version", &version),
            ("day-mon", "on"),
            ("day-fri", "on"),
            ("hours", "07:00-12:00, 13:00-19:00"),
            ("zone", "America/Los_Angeles"),
        ],
    )
    .expect_status(StatusCode::SEE_OTHER);
    let policy = h.state().policies["users to the office"].clone();
    let hours = policy.active_hours.clone().unwrap();
    assert_eq!(hours.days, ["mon", "fri"]);
    assert_eq!(hours.hours, ["07:00-12:00", "13:00-19:00"]);
    assert_eq!(hours.zone, "America/Los_Angeles");
    // The rest of the policy is as it was.
    assert_eq!(policy.filter, gateway_policy("x").filter);
    let list = h.get("/portal/trust", &cookie);
    assert!(list.text.contains("Mon, Fri") && list.text.contains("America/Los_Angeles"));

    // Always active again.
    let version = policy.version.to_string();
    h.post(
        path,
        &cookie,
        &[("csrf", &csrf), ("version", &version), ("always", "on")],
    )
    .expect_status(StatusCode::SEE_OTHER);
    assert!(h.state().policies["users to the office"]
        .active_hours
        .is_none());
}

#[test]
fn the_tags_page_counts_systems_and_sets_requirements() {
    let h = Harness::new("tags");
    guide_network(&h);
    h.execute(Command::PutTrust {
        doc: TrustDoc {
            name: "office ip".into(),
            kind: "public_ip".into(),
            allow: vec!["198.51.100.0/24".into()],
            block: vec![],
            version: 0,
        },
        write: crate::core::Write::Create,
    });
    let (_, cookie) = h.sign_in(PASSWORD);
    let page = h.get("/portal/tags", &cookie).expect_status(StatusCode::OK);
    let row = page
        .text
        .split("<tr>")
        .find(|r| r.contains(">users<"))
        .unwrap();
    assert!(
        row.contains(r#"aria-label="1 systems with tag users">1</a>"#),
        "{row}"
    );
    assert!(row.contains("users to the office"), "{row}");

    let edit = h.get("/portal/tags/users", &cookie);
    assert!(edit.text.contains("Trust requirements of tag users"));
    assert!(edit.text.contains(r#"value="office ip""#));
    let csrf = edit.csrf();
    h.post(
        "/portal/tags",
        &cookie,
        &[
            ("csrf", &csrf),
            ("editing", "on"),
            ("name", "users"),
            ("trust-0", "office ip"),
        ],
    )
    .expect_status(StatusCode::SEE_OTHER);
    assert_eq!(h.state().tags["users"].trust, ["office ip"]);
    let page = h.get("/portal/tags", &cookie);
    assert!(page.text.contains(">office ip</a>"));

    // A bad name is refused at the name field.
    h.refused(
        "/portal/tags",
        &cookie,
        &[("csrf", &csrf), ("name", "a b")],
        "tag-name",
        "may hold only letters",
    );
}

#[test]
fn explain_answers_with_the_reasons_policy_explain_gives() {
    let h = Harness::new("explain");
    guide_network(&h);
    let (_, cookie) = h.sign_in(PASSWORD);
    let form = h
        .get("/portal/explain", &cookie)
        .expect_status(StatusCode::OK);
    assert!(form
        .text
        .contains(r#"<option value="laptop">laptop</option>"#));

    let allowed = h
        .get(
            "/portal/explain?from=laptop&to=192.168.77.20&proto=tcp&port=445&from_ip=&at=",
            &cookie,
        )
        .expect_status(StatusCode::OK);
    assert!(
        allowed.text.contains(r#"id="verdict">allowed<"#),
        "{}",
        allowed.text
    );
    assert!(allowed
        .text
        .contains("allowed: laptop -&gt; 192.168.77.20:445/tcp"));
    assert!(allowed.text.contains(
        "gateway access policy &quot;users to the office&quot;: allowed by ACL entry tcp 445 (SMB), through gw"
    ));

    let denied = h.get(
        "/portal/explain?from=laptop&to=192.168.77.10&proto=tcp&port=445",
        &cookie,
    );
    assert!(denied.text.contains(r#"id="verdict">denied<"#));
    assert!(denied
        .text
        .contains("the address is outside the policy&#39;s subnet filter"));

    let bad = h
        .get(
            "/portal/explain?from=laptop&to=192.168.77.20&proto=tcp&port=http",
            &cookie,
        )
        .expect_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.error_after("explain-port").contains("is not a port"));
    assert!(!bad.text.contains(r#"id="verdict""#));
    let bad = h.get("/portal/explain?from=laptop&to=192.168.77", &cookie);
    assert!(bad
        .error_after("explain-to")
        .contains("is not an IPv4 address"));

    // No session, no answer.
    h.get("/portal/explain?from=laptop&to=192.168.77.20", "")
        .expect_status(StatusCode::SEE_OTHER);
}

#[test]
fn problems_are_placed_by_the_last_part_of_their_field() {
    use super::super::fields::leaf;
    assert_eq!(leaf(r#"trust_requirements["a.b[1]"].allow[0]"#), "allow");
    assert_eq!(leaf(r#"policies["x \"y\"."].active_hours.zone"#), "zone");
    assert_eq!(leaf("tags[2]"), "tags");
    assert_eq!(leaf("expires"), "expires");
    assert_eq!(
        super::super::fields::items("a, b\n c\r\n,"),
        ["a", "b", "c"]
    );
}
