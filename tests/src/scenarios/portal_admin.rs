//! The portal's Enrolment keys, Tags, Trust requirements and Explain pages in headless
//! Chromium, against a real `enclave-control` in a namespace (a child of the `portal` scenario
//! module). Each change is checked on the server through the API; screenshots are kept in the
//! scenario's log directory.

use anyhow::ensure;
use serde_json::{json, Value};

use crate::control_fixture::{enrol as agent_enrol, enrol_request as enrol};
use crate::portal_fixture::{no_password_logged, Browser, Portal};
use crate::{Ctx, Scenario};

const KEY_GW: &str = "CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=";
const POLICY: &str = "users to the office";

pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "portal-admin-pages",
        about: "the portal's Enrolment keys, Tags, Trust requirements and Explain pages in headless Chromium: a key created and shown once, a system enrolled with it, a bad range refused next to its field, a trust requirement and active hours saved, explain answered with its reasons; labels on every control, a CSRF token in every form, keyboard only",
        run: admin_pages,
    }]
}

impl Browser<'_> {
    /// Every control of the page has a label, and every `POST` form its CSRF token.
    fn check_form_rules(&self, page: &str) -> anyhow::Result<()> {
        let unlabelled = self.script(
            "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
               .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                            && !(e.tagName === 'BUTTON' && e.textContent.trim()))
               .map(e => e.outerHTML);",
        )?;
        ensure!(
            unlabelled.as_array().is_some_and(Vec::is_empty),
            "{page}: controls without a label: {unlabelled}"
        );
        let tokenless = self.script(
            "return [...document.querySelectorAll('form')]
               .filter(f => f.method === 'post' && !f.querySelector('input[name=csrf]'))
               .map(f => f.action);",
        )?;
        ensure!(
            tokenless.as_array().is_some_and(Vec::is_empty),
            "{page}: POST forms without a CSRF token: {tokenless}"
        );
        let unreachable = self.script(
            "return [...document.querySelectorAll('[tabindex]')]
               .filter(e => e.tabIndex < 0).map(e => e.outerHTML);",
        )?;
        ensure!(
            unreachable.as_array().is_some_and(Vec::is_empty),
            "{page}: taken out of the keyboard's reach: {unreachable}"
        );
        Ok(())
    }

    /// Presses keys as a keyboard does (WebDriver key actions); `\u{E004}` is Tab,
    /// `\u{E007}` Enter.
    fn press(&self, keys: &str) -> anyhow::Result<()> {
        let mut actions = Vec::new();
        for key in keys.chars() {
            actions.push(json!({ "type": "keyDown", "value": key.to_string() }));
            actions.push(json!({ "type": "keyUp", "value": key.to_string() }));
        }
        self.call(
            "POST",
            "/actions",
            Some(json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": actions }] })),
        )?;
        Ok(())
    }

    fn active_id(&self) -> anyhow::Result<String> {
        Ok(self
            .script("return document.activeElement ? document.activeElement.id : '';")?
            .as_str()
            .unwrap_or("")
            .to_owned())
    }
}

#[allow(clippy::too_many_lines)] // One story, step by step, as an administrator goes.
fn admin_pages(ctx: &Ctx) -> anyhow::Result<()> {
    let portal = Portal::start(ctx, "padmin")?;
    let (ns, at, admin) = (portal.ns(), &portal.server.at, portal.admin());
    let b = portal.signed_in(ctx)?;

    // ---- Enrolment keys: create one, see it once, enrol a system with it. ----
    b.click("a[href='/portal/keys']")?;
    b.text_with("Create an enrolment key")?;
    b.check_form_rules("Enrolment keys")?;
    // A bad expiry first: refused next to its field.
    b.submit(
        &[("#key-tags", "users"), ("#key-expires", "next week")],
        "#create-key",
    )?;
    b.field_error("key-expires", &["\"next week\" is not a duration", "7d"])?;
    b.type_into("#key-expires", "7d")?;
    b.click("#approval-auto")?;
    b.submit(&[("#key-uses", "2")], "#create-key")?;
    b.text_with("shown only this once")?;
    let key = b.value_of("new-key")?;
    ensure!(key.starts_with("enk_"), "the page shows the key {key:?}");
    b.shot("10-key-created")?;
    let text = b.visit(
        "/portal/keys",
        &["Uses left", "2 of 2", "automatic", "valid"],
    )?;
    let source = b.script("return document.documentElement.outerHTML;")?;
    ensure!(
        !text.contains(&key) && !source.as_str().unwrap_or("").contains(&key),
        "the key is shown a second time"
    );
    b.shot("11-keys")?;
    let read = |path: &str| admin.api("GET", path, &Value::Null, 200);
    let keys = read("/api/v1/keys")?;
    ensure!(
        keys.as_array()
            .is_some_and(|k| k.iter().any(|k| k["created_by"] == "user:alice"
                && k["approval"] == "auto"
                && k["uses_allowed"] == 2)),
        "the server's keys: {keys}"
    );
    // The agent enrols with the key the portal showed (`enclave-agent enrol`, which makes its
    // key pair on the host).
    let enrolment = agent_enrol(ctx, ns, false, at, &key, "laptop")?;
    ensure!(
        enrolment.output.contains("approved"),
        "enclave-agent enrol with the portal's key printed:\n{}",
        enrolment.output
    );
    let laptop = read("/api/v1/systems/laptop")?;
    ensure!(
        laptop["approval"] == "approved" && laptop["tags"] == json!(["users"]),
        "the laptop enrolled with the portal's key: {laptop}"
    );

    // The guide's gateway and policy, through the API.
    let gw_key = admin.create_key(&["--approval", "auto"])?;
    let (status, answer) = enrol(ns, at, &gw_key, KEY_GW, Some("gw"))?;
    ensure!(status == 201, "{status} {answer}");
    admin.api(
        "PUT",
        "/api/v1/systems/gw/gateway",
        &json!({ "allowed": true }),
        200,
    )?;
    admin.api(
        "POST",
        "/api/v1/subnets",
        &json!({ "system": "gw", "subnet": "192.168.77.0/24" }),
        200,
    )?;
    admin.api(
        "POST",
        "/api/v1/policies",
        &json!({ "name": POLICY, "kind": "gateway", "senders": ["users"], "gateways": ["gw"],
                 "subnets": ["192.168.77.0/24"], "filter": ["192.168.77.20", "192.168.77.21"],
                 "acl": [{ "protocol": "tcp", "ports": 445, "label": "SMB" }, { "protocol": "icmp" }] }),
        201,
    )?;

    // ---- Tags: the system the key enrolled carries its tag. ----
    b.click("a[href='/portal/tags']")?;
    b.text_with_all(&["Set requirements", "users", POLICY])?;
    let count = b.find("a[aria-label='1 systems with tag users']")?;
    ensure!(!count.is_empty(), "no count of the users tag");
    b.check_form_rules("Tags")?;
    b.shot("12-tags")?;

    // ---- Trust requirements: a bad range refused next to its field, then a good one. ----
    b.click("a[href='/portal/trust']")?;
    b.text_with("Create a trust requirement")?;
    b.check_form_rules("Trust requirements")?;
    b.submit(
        &[
            ("#create-name", "partner-offices"),
            ("#create-allow", "198.51.100.1/24"),
        ],
        "#create-trust",
    )?;
    b.field_error(
        "create-allow",
        &[
            "198.51.100.1/24 has host bits set",
            "did you mean 198.51.100.0/24?",
        ],
    )?;
    b.shot("13-trust-bad-range")?;
    let list = read("/api/v1/trust-requirements")?;
    ensure!(
        list.as_array().is_some_and(Vec::is_empty),
        "a refused form stored {list}"
    );
    b.submit(
        &[
            ("#create-allow", "198.51.100.0/24"),
            ("#create-block", "198.51.100.128/25"),
        ],
        "#create-trust",
    )?;
    b.text_with("nothing yet")?;
    let list = read("/api/v1/trust-requirements")?;
    ensure!(
        list[0]["name"] == "partner-offices"
            && list[0]["allow"] == json!(["198.51.100.0/24"])
            && list[0]["block"] == json!(["198.51.100.128/25"]),
        "the server's trust requirements: {list}"
    );
    b.shot("14-trust")?;
    // Edited: the block range goes.
    b.click("a[aria-label='Edit partner-offices']")?;
    b.text_with("Delete partner-offices")?;
    b.check_form_rules("A trust requirement")?;
    b.type_into("#edit-block", "203.0.113.0/24")?;
    b.shot("14-trust-edit")?;
    b.click("#save-trust")?;
    b.url_to("/portal/trust")?;
    b.text_with("203.0.113.0/24")?;
    let list = read("/api/v1/trust-requirements")?;
    ensure!(
        list[0]["block"] == json!(["203.0.113.0/24"]),
        "the server's trust requirements after the edit: {list}"
    );

    // Active hours of the policy: weekdays, office hours, Los Angeles time.
    b.click("a[aria-label='Set the active hours of users to the office']")?;
    b.text_with("This policy is always active.")?;
    b.check_form_rules("Active hours")?;
    b.type_into("#hours-hours", "07:00-19:00")?;
    b.select("hours-zone", "America/Los_Angeles")?;
    b.shot("15-active-hours")?;
    b.click("#save-hours")?;
    b.url_to("#active-hours")?;
    b.text_with_all(&["America/Los_Angeles", "Mon, Tue, Wed, Thu, Fri"])?;
    let policy = read("/api/v1/policies/users%20to%20the%20office")?;
    ensure!(
        policy["active_hours"]
            == json!({ "days": ["mon", "tue", "wed", "thu", "fri"], "hours": ["07:00-19:00"],
                       "zone": "America/Los_Angeles" })
            && policy["filter"] == json!(["192.168.77.20", "192.168.77.21"]),
        "the server's policy: {policy}"
    );

    // ---- Explain: on a Saturday the active hours deny; on a Wednesday morning they allow. ----
    b.click("a[href='/portal/explain']")?;
    b.text_with("Would this system reach this address?")?;
    b.check_form_rules("Explain")?;
    b.select("explain-from", "laptop")?;
    b.select("explain-proto", "tcp")?;
    b.submit(
        &[
            ("#explain-to", "192.168.77.20"),
            ("#explain-port", "445"),
            ("#explain-at", "2026-11-28T18:00:00Z"),
        ],
        "#explain",
    )?;
    b.text_with_all(&[
        "No: denied",
        "outside active hours (it is",
        "America/Los_Angeles",
    ])?;
    b.shot("16-explain-saturday")?;
    b.submit(&[("#explain-at", "2026-11-25T18:00:00Z")], "#explain")?;
    b.text_with_all(&[
        "Yes: allowed",
        "allowed by ACL entry tcp 445 (SMB), through gw",
    ])?;

    // Always active again, then now, by keyboard alone: type, Tab to Explain, Enter.
    b.open("/portal/active-hours/users%20to%20the%20office")?;
    b.click("#always-active")?;
    b.url_to("#active-hours")?;
    b.visit(
        "/portal/explain",
        &["Would this system reach this address?"],
    )?;
    b.select("explain-from", "laptop")?;
    b.click("#explain-to")?;
    b.press("192.168.77.10")?;
    let mut tabs = 0;
    while b.active_id()? != "explain" {
        ensure!(tabs < 12, "Tab never reached the Explain button");
        b.press("\u{E004}")?;
        tabs += 1;
    }
    b.press("\u{E007}")?;
    b.text_with_all(&["No: denied", "outside the policy's subnet filter", "now ("])?;
    b.script("document.getElementById('answer').scrollIntoView({block: 'start'});")?;
    b.shot("17-explain-now-denied")?;
    b.visit(
        "/portal/explain?from=laptop&to=192.168.77.20&proto=icmp&port=&from_ip=&at=#answer",
        &["Yes: allowed", "allowed by ACL entry icmp, through gw"],
    )?;
    b.shot("18-explain-now-allowed")?;

    // A phone's width: no page scrolls sideways.
    b.window(400, 800)?;
    for (path, shot) in [
        ("/portal/keys", "19-keys-phone"),
        ("/portal/trust", "19-trust-phone"),
        ("/portal/tags", "19-tags-phone"),
        ("/portal/explain", "19-explain-phone"),
    ] {
        b.visit(path, &["Signed in as"])?;
        b.fits_width(path)?;
        b.shot(shot)?;
    }

    // Activity: the portal's changes, by user:alice.
    b.activity(&["key.create", "trust.create", "policy.update"])?;
    drop(b);

    no_password_logged(&portal.server)?;
    ensure!(
        !portal.server.process.log().contains(&key),
        "the server's log holds the enrolment key"
    );
    Ok(())
}
