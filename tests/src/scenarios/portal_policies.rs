//! The Policies pages in a real browser, with real agents: the managed Menlo Park office
//! (server, laptop tagged `users`, gateway `menlo-gw-1` serving 192.168.77.0/24) without a
//! policy; in headless Chromium the administrator makes the guide's gateway access policy with
//! the guide's subnet filter of two addresses (a bad CIDR is refused next to its field first);
//! then the laptop reaches 192.168.77.20 and not 192.168.77.10, and disabling the policy in the
//! list takes the access away.

use std::time::Duration;

use anyhow::{ensure, Context};
use enclave_netns::PingResult;
use serde_json::json;

use super::control_managed::{until_answered, Fixture};
use crate::office::{DC1, LAN, PRINTER};
use crate::portal_fixture::{no_password_logged, require_chromium};
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

fn policies(ctx: &Ctx) -> anyhow::Result<()> {
    require_chromium()?;
    let office = Fixture::without_policy(ctx, "ppol", 1)?;

    // Without a policy the laptop reaches nothing behind the gateway (the negative control).
    ensure!(
        !answers(office.ns("sender"), DC1)?,
        "the laptop reaches {DC1} before any policy"
    );

    let b = office.portal_browser()?;
    b.text_with("menlo-gw-1")?;

    // The guide's Remove Subnet: the gateway also discovered its underlay network, which no
    // sender should reach through it. Removed on the gateway's page, the server lists it as
    // removed and the policy form no longer offers it.
    b.visit("/portal/systems/menlo-gw-1", &[UNDERLAY])?;
    b.click(&format!("button[aria-label='Remove {UNDERLAY}']"))?;
    b.url_to("/portal/systems/menlo-gw-1")?;
    b.shot("00-gateway-subnet-removed")?;
    let rows = office.admin().json(&["subnets", "list", "--json"])?;
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
    let text = b.text_with_all(&[
        "Subnet filtering",
        "menlo-gw-1 serves",
        &format!("{LAN} via menlo-gw-1"),
    ])?;
    ensure!(
        !text.contains(&format!("{UNDERLAY} via")),
        "the form offers the removed {UNDERLAY}:\n{text}"
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
    b.field_error("filter", &["192.168.77.0/33"])?;
    let typed = b.value_of("filter")?;
    ensure!(
        typed == "192.168.77.20\n192.168.77.0/33",
        "the filter lost what was typed: {typed:?}"
    );
    b.script("document.getElementById('filter').scrollIntoView({block: 'center'});")?;
    b.shot("04-bad-cidr")?;
    let list = office.admin().json(&["policies", "list", "--json"])?;
    ensure!(
        list.as_array().is_some_and(Vec::is_empty),
        "a refused form made a policy: {list}"
    );

    // Fixed: the guide's filter, the two domain controllers.
    b.submit(&[("#filter", GUIDE_FILTER)], "#save-policy")?;
    b.url_to("/portal/policies")?;
    b.text_with_all(&[POLICY, &format!("Subnet filter: {GUIDE_FILTER}"), "enabled"])?;
    b.shot("05-policies-list")?;
    let list = office.admin().json(&["policies", "list", "--json"])?;
    let policy = list
        .as_array()
        .and_then(|l| l.iter().find(|p| p["name"] == POLICY))
        .with_context(|| format!("no policy {POLICY:?} on the server: {list}"))?;
    ensure!(
        policy["kind"] == "gateway"
            && policy["senders"] == json!(["users"])
            && policy["gateways"] == json!(["menlo-gw-1"])
            && policy["subnets"] == json!([LAN])
            && policy["filter"] == json!([GUIDE_FILTER]),
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
    b.text_with_all(&["Delete policy", "Gateway access policy"])?;
    b.shot("06-policy-page")?;
    // At a phone's width the form fits: wide tables scroll in their box, not the page.
    b.window(400, 800)?;
    b.text_with("Subnet filtering")?;
    b.shot("07-policy-phone-width")?;
    b.fits_width("the policy's page")?;
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
    b.activity(&["policy.create", "user:alice", "policy.update"])?;
    b.shot("09-activity")?;

    // The other kind's form: receiver tags instead of gateways, subnets and a filter.
    let text = b.visit("/portal/new-policy?kind=direct", &["Receiver tags"])?;
    ensure!(
        !text.contains("Subnet filtering"),
        "the direct access policy's form:\n{text}"
    );
    b.shot("10-new-direct-policy")?;
    drop(b);
    no_password_logged(&office.server)
}
