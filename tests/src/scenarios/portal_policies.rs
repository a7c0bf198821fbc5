//! The Policies pages in a real browser, with real agents: the managed Menlo Park office
//! (server, laptop tagged `users`, gateway `menlo-gw-1` serving 192.168.77.0/24) without a
//! policy; in headless Chromium the administrator makes the guide's gateway access policy with
//! the guide's subnet filter of two addresses (a bad CIDR is refused next to its field first);
//! then the laptop reaches 192.168.77.20 and not 192.168.77.10, and disabling the policy in the
//! list takes the access away.

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use enclave_netns::PingResult;
use serde_json::Value;

use super::control_managed::{until_answered, Fixture};
use super::portal::{require_chromium, start_chromedriver, Browser, PASSWORD};
use crate::office::{DC1, LAN, PRINTER};
use crate::{Ctx, Scenario};

const POLICY: &str = "users to Menlo Park Office";
/// The guide's subnet filter: the two domain controllers, .20 and .21.
const GUIDE_FILTER: &str = "192.168.77.20-192.168.77.21";
/// The office's underlay, which the gateway discovers on its WAN side.
const UNDERLAY: &str = "10.10.0.0/24";

pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "portal-policies",
        about: "the Policies pages in headless Chromium over a managed office: the guide's gateway access policy (users -> menlo-gw-1's 192.168.77.0/24, subnet filter 192.168.77.20-192.168.77.21, the two domain controllers) made in the portal after a bad CIDR is refused next to its field; the laptop then reaches .20 and not .10; Disable in the list takes the access away",
        run: policies,
    }]
}

/// Whether `dst` answers one of three pings from `ns`.
fn answers(ns: &enclave_netns::Netns, dst: &str) -> anyhow::Result<bool> {
    let argv = ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", dst];
    let output = ns.exec_output(&argv)?;
    Ok(PingResult::from_output(&argv.join(" "), &output)?.received > 0)
}

/// The server's policies, through the CLI.
fn policies_json(office: &Fixture<'_>) -> anyhow::Result<Value> {
    let text = office.cli(&["policies", "list", "--json"])?;
    serde_json::from_str(&text).with_context(|| format!("policies list --json printed {text}"))
}

fn policies(ctx: &Ctx) -> anyhow::Result<()> {
    require_chromium()?;
    let office = Fixture::without_policy(ctx, "ppol", 1)?;
    let ctl = office.ns("ctl");

    // Without a policy the laptop reaches nothing behind the gateway (the negative control).
    ensure!(
        !answers(office.ns("sender"), DC1)?,
        "the laptop reaches {DC1} before any policy"
    );

    // A portal account, made on the server host.
    let password_file = ctx.log_dir().join("portal-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n"))?;
    let made = ctl.exec(&[
        office.control.to_str().context("path is not UTF-8")?,
        "admin",
        "user",
        "create",
        "alice",
        "--database",
        &office.database,
        "--password-file",
        password_file.to_str().context("path is not UTF-8")?,
    ])?;
    ensure!(
        made.contains("made portal account alice"),
        "user create printed {made:?}"
    );

    let driver_process = start_chromedriver(ctl)?;
    let b = Browser::start(
        ctl,
        ctx.log_dir().to_path_buf(),
        office.server.at.url.clone(),
    )?;

    b.open("/portal/signin")?;
    b.type_into("#name", "alice")?;
    b.type_into("#password", PASSWORD)?;
    b.click("#signin")?;
    b.url_to("/portal/systems")?;
    b.text_with("menlo-gw-1")?;

    // The guide's Remove Subnet: the gateway also discovered its underlay network, which no
    // sender should reach through it. Removed on the gateway's page, the server lists it as
    // removed and the policy form no longer offers it.
    b.open("/portal/systems/menlo-gw-1")?;
    b.text_with(UNDERLAY)?;
    b.click(&format!("button[aria-label='Remove {UNDERLAY}']"))?;
    b.url_to("/portal/systems/menlo-gw-1")?;
    b.shot("00-gateway-subnet-removed")?;
    let subnets = office.cli(&["subnets", "list", "--json"])?;
    let rows: Value = serde_json::from_str(&subnets)
        .with_context(|| format!("subnets list --json printed {subnets}"))?;
    let removed = rows.as_array().is_some_and(|rows| {
        rows.iter().any(|r| {
            r["system"] == "menlo-gw-1" && r["subnet"] == UNDERLAY && r["state"] == "removed"
        })
    });
    ensure!(removed, "{UNDERLAY} is not removed on the server: {rows}");

    // The Policies page: none yet.
    b.click("nav a[href='/portal/policies']")?;
    b.url_to("/portal/policies")?;
    b.text_with("No policies yet")?;
    b.shot("01-policies-empty")?;

    // A new gateway access policy: the gateway and the subnet it discovered are offered.
    b.click("#new-gateway-policy")?;
    let text = b.text_with("Subnet filtering")?;
    ensure!(
        text.contains("menlo-gw-1 serves")
            && text.contains(&format!("{LAN} via menlo-gw-1"))
            && !text.contains(&format!("{UNDERLAY} via")),
        "the form does not offer the gateway and its subnet:\n{text}"
    );
    b.shot("02-new-policy")?;
    b.type_into("#name", POLICY)?;
    b.type_into("#senders", "users")?;
    b.click("input[name=gateways][value='menlo-gw-1']")?;
    b.click(&format!("input[name=subnets][value='{LAN}']"))?;
    b.click("#filtering")?;
    // A CIDR with a prefix longer than 32 first: refused next to the filter.
    b.type_into("#filter", "192.168.77.20\n192.168.77.0/33")?;
    b.shot("03-new-policy-filled")?;
    b.click("#save-policy")?;
    b.text_with("Nothing was saved")?;
    let error = b.find("#filter ~ .field-error")?;
    let message = b.call("GET", &format!("/element/{error}/text"), None)?;
    ensure!(
        message
            .as_str()
            .is_some_and(|m| m.contains("192.168.77.0/33")),
        "the filter's error says {message}"
    );
    let typed = b.script("return document.getElementById('filter').value;")?;
    ensure!(
        typed.as_str() == Some("192.168.77.20\n192.168.77.0/33"),
        "the filter lost what was typed: {typed}"
    );
    b.script("document.getElementById('filter').scrollIntoView({block: 'center'});")?;
    b.shot("04-bad-cidr")?;
    ensure!(
        policies_json(&office)?
            .as_array()
            .is_some_and(Vec::is_empty),
        "a refused form made a policy"
    );

    // Fixed: the guide's filter, the two domain controllers.
    b.type_into("#filter", GUIDE_FILTER)?;
    b.click("#save-policy")?;
    b.url_to("/portal/policies")?;
    let text = b.text_with(POLICY)?;
    ensure!(
        text.contains(&format!("Subnet filter: {GUIDE_FILTER}")) && text.contains("enabled"),
        "the Policies page:\n{text}"
    );
    b.shot("05-policies-list")?;
    let list = policies_json(&office)?;
    let policy = list
        .as_array()
        .and_then(|l| l.iter().find(|p| p["name"] == POLICY))
        .with_context(|| format!("no policy {POLICY:?} on the server: {list}"))?;
    ensure!(
        policy["kind"] == "gateway"
            && policy["senders"] == serde_json::json!(["users"])
            && policy["gateways"] == serde_json::json!(["menlo-gw-1"])
            && policy["subnets"] == serde_json::json!([LAN])
            && policy["filter"] == serde_json::json!([GUIDE_FILTER]),
        "the server holds {policy}"
    );

    // The laptop reaches the domain controller and not the printer (the same LAN, the same
    // namespace: only the filter keeps it out).
    let took = until_answered(office.ns("sender"), DC1, Duration::from_secs(10))?;
    println!(
        "    the laptop reaches {DC1} {:.2} s after the policy was saved in the portal",
        took.as_secs_f64()
    );
    ensure!(
        !answers(office.ns("sender"), PRINTER)?,
        "the laptop reaches {PRINTER}, outside the subnet filter"
    );

    // The policy's page shows it as saved.
    b.click(&format!(
        "a[href='/portal/policies/{}']",
        POLICY.replace(' ', "%20")
    ))?;
    let text = b.text_with("Delete policy")?;
    ensure!(
        text.contains("Gateway access policy"),
        "the policy's page:\n{text}"
    );
    b.shot("06-policy-page")?;
    // At a phone's width the form fits: wide tables scroll in their box, not the page.
    b.window(400, 800)?;
    b.text_with("Subnet filtering")?;
    let sideways = b.sideways()?;
    b.shot("07-policy-phone-width")?;
    ensure!(
        sideways == 0,
        "the policy's page is {sideways} px too wide for a phone"
    );
    b.window(1200, 900)?;

    // Disable in the list: the laptop loses the domain controller.
    b.open("/portal/policies")?;
    b.click(&format!("button[aria-label='Disable {POLICY}']"))?;
    b.text_with("disabled")?;
    b.shot("08-policy-disabled")?;
    let stopped = enclave_netns::wait_until(Duration::from_secs(5), || {
        answers(office.ns("sender"), DC1).is_ok_and(|a| !a)
    });
    ensure!(
        stopped,
        "the laptop still reaches {DC1} 5 s after the policy was disabled"
    );

    // Activity: the changes are alice's.
    b.open("/portal/activity")?;
    let text = b.text_with("policy.create")?;
    ensure!(
        text.contains("user:alice") && text.contains("policy.update"),
        "the Activity page:\n{text}"
    );
    b.shot("09-activity")?;

    // The other kind's form: receiver tags instead of gateways, subnets and a filter.
    b.open("/portal/new-policy?kind=direct")?;
    let text = b.text_with("Receiver tags")?;
    ensure!(
        !text.contains("Subnet filtering"),
        "the direct access policy's form:\n{text}"
    );
    b.shot("10-new-direct-policy")?;
    drop(b);
    drop(driver_process);
    if office.server.process.log().contains(PASSWORD) {
        bail!("the server's log holds the password");
    }
    Ok(())
}
