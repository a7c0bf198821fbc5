//! The portal in a real browser (headless Chromium, see [`crate::portal_fixture`]) against a
//! real `enclave-control` in a namespace: the Systems pages, signing in and out, and live
//! updates of an open page. Screenshots of each page are kept in the scenario's log directory.

use std::time::Duration;

use anyhow::{ensure, Context};

use crate::control_fixture::{enrol_request as enrol, KEY_A};
use crate::office::LAN;
use crate::portal_fixture::{no_password_logged, require_chromium, Browser, Portal, PASSWORD};
use crate::{Ctx, Scenario};

/// The Enrolment keys, Tags, Trust requirements and Explain pages.
#[path = "portal_admin.rs"]
pub(super) mod admin;

/// The label of the gateway toggle on a system's page.
const GATEWAY_TOGGLE: &str = "Allow this system to act as a gateway";

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "portal-browser",
            about: "the portal in headless Chromium: a wrong password refused, sign in, Approve a pending system, allow it as a gateway, a bad subnet refused next to its field, Activity, a form without its CSRF token refused, sign out",
            run: browser,
        },
        Scenario {
            name: "portal-live",
            about: "the portal's Systems page left open in headless Chromium while the laptop's active gateway is killed -9: without a reload it shows the gateway disconnected and the laptop on the other gateway; the laptop's page shows since when, and its peers",
            run: live,
        },
    ]
}

fn browser(ctx: &Ctx) -> anyhow::Result<()> {
    let portal = Portal::start(ctx, "portal")?;
    let admin = portal.admin();
    let key = admin.create_key(&["--approval", "manual"])?;
    let (status, enrolled) = enrol(portal.ns(), &portal.server.at, &key, KEY_A, Some("laptop"))?;
    ensure!(
        status == 201 && enrolled["approval"] == "pending",
        "{status} {enrolled}"
    );

    let b = portal.browser(ctx)?;
    // Without a session, the portal sends the browser to sign in.
    let sent_to_sign_in = || -> anyhow::Result<()> {
        b.open("/portal/systems")?;
        b.url_to("/portal/signin")
    };
    sent_to_sign_in()?;
    b.shot("01-signin")?;

    // A wrong password: refused, no session.
    b.sign_in_with("not the password")?;
    b.text_with("Wrong name or password.")?;
    b.shot("02-wrong-password")?;
    sent_to_sign_in()?;

    // The right one: the Systems page with the pending laptop.
    b.sign_in_with(PASSWORD)?;
    b.url_to("/portal/systems")?;
    b.text_with_all(&["laptop", "pending", "100.64.0.1"])?;
    b.shot("03-systems-pending")?;

    // Approve.
    let laptop_page = || b.visit("/portal/systems/laptop", &[GATEWAY_TOGGLE]);
    b.click("#approve-laptop")?;
    let text = b.text_with("approved")?;
    ensure!(!text.contains("pending"), "after Approve:\n{text}");
    let laptop = admin.system("laptop")?;
    ensure!(laptop["approval"] == "approved", "the server says {laptop}");
    b.shot("04-systems-approved")?;
    // At a phone's width too.
    b.window(400, 800)?;
    laptop_page()?;
    b.shot("04-system-phone-width")?;
    b.fits_width("the laptop's page")?;
    b.window(1200, 900)?;

    // The details page: allow it to act as a gateway.
    laptop_page()?;
    b.click("#gateway-allowed")?;
    b.click("#save-gateway")?;
    b.text_with("approved Gateway")?;
    let laptop = admin.system("laptop")?;
    ensure!(
        laptop["gateway"]["allowed"] == true,
        "the server says {laptop}"
    );
    b.shot("05-system-gateway")?;

    // A subnet with host bits set is refused next to its field; nothing changes.
    b.submit(&[("#subnet", "192.168.77.1/24")], "#add-subnet")?;
    b.field_error(
        "subnet",
        &[
            "192.168.77.1/24 has host bits set",
            "did you mean 192.168.77.0/24?",
        ],
    )?;
    b.shot("06-bad-subnet")?;
    // A good one is added.
    b.submit(&[("#subnet", "0.0.0.0/0")], "#add-subnet")?;
    b.text_with("0.0.0.0/0 added")?;
    let laptop = admin.system("laptop")?;
    ensure!(
        laptop["gateway"]["subnets"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x == "0.0.0.0/0")),
        "the server says {laptop}"
    );

    // A form posted without its CSRF token is refused, and changes nothing.
    laptop_page()?;
    b.script(
        "document.querySelectorAll('input[name=csrf]').forEach(e => e.remove()); \
         document.getElementById('gateway-allowed').checked = false;",
    )?;
    b.click("#save-gateway")?;
    b.text_with("security token is missing or wrong")?;
    b.shot("07-no-csrf-token")?;
    let laptop = admin.system("laptop")?;
    ensure!(
        laptop["gateway"]["allowed"] == true,
        "a form without its token changed the server: {laptop}"
    );

    // Activity: the portal's changes, by user:alice.
    b.activity(&["system.approve", "user:alice", "system.gateway"])?;
    b.shot("08-activity")?;

    // Sign out: the pages send the browser to sign in again.
    b.click("#signout")?;
    b.url_to("/portal/signin")?;
    sent_to_sign_in()?;
    b.shot("09-signed-out")?;
    drop(b);
    no_password_logged(&portal.server)
}

/// The text of each element of `selectors` (empty when there is none) and whether the page
/// still carries `window.enclaveMarker` (set once; a reload would lose it).
fn texts(b: &Browser<'_>, selectors: &[&str]) -> anyhow::Result<(Vec<String>, bool)> {
    let list = serde_json::to_string(selectors)?;
    let answer = b.script(&format!(
        "return [{list}.map(s => {{ const e = document.querySelector(s); return e ? e.textContent : ''; }}), \
         window.enclaveMarker === 'kept'];"
    ))?;
    let texts = answer[0]
        .as_array()
        .context("no texts")?
        .iter()
        .map(|t| t.as_str().unwrap_or("").to_owned())
        .collect();
    Ok((texts, answer[1] == true))
}

fn live(ctx: &Ctx) -> anyhow::Result<()> {
    use super::control_managed::{active_gateway, Fixture, GATEWAYS};

    require_chromium()?;
    // The managed Menlo Park office: the laptop reaches the LAN through one of two gateways.
    let mut office = Fixture::start(ctx, "plv", 2)?;
    let first = active_gateway(&office).context("the laptop names no active gateway")?;
    let name_of = |node: &str| {
        GATEWAYS
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, name)| *name)
            .unwrap_or("")
    };
    let other = if first == "gw1" { "gw2" } else { "gw1" };
    let (first_name, other_name) = (name_of(first), name_of(other));

    // Killed by its PID while the browser borrows the fixture's namespace.
    let first_pid = office.agent(first)?.pid();
    let b = office.portal_browser()?;

    // The Systems page: both gateways connected, the laptop on the first.
    let in_use = "#system-laptop .in-use";
    let first_presence = format!("#system-{first_name} .presence");
    let before = format!("{first_name} for {LAN}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (t, _) = texts(&b, &[in_use, &first_presence])?;
        if t[0].contains(&before) && t[1].contains("connected") {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the Systems page never showed the laptop on {first_name}: {t:?}\n{}",
            b.text()?
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    b.text_with_all(&["Gateway in use", "Platform"])?;
    let status = b.script("return document.getElementById('live-status').textContent;")?;
    ensure!(
        status.as_str().is_some_and(|s| s.starts_with("Live")),
        "the page says no live updates: {status}"
    );
    b.shot("10-live-systems-before")?;

    // The page stays open; a reload would drop this marker. The keyboard focus is on the
    // laptop's link, inside the part that changes: it must stay there.
    b.script(
        "window.enclaveMarker = 'kept'; \
         document.querySelector('#system-laptop a').focus();",
    )?;
    let killed = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(first_pid)?),
        nix::sys::signal::Signal::SIGKILL,
    )
    .with_context(|| format!("killing {first_name}'s agent"))?;
    let after = format!("{other_name} for {LAN}");
    let deadline = killed + Duration::from_secs(20);
    let shown = loop {
        let (t, kept) = texts(&b, &[in_use, &first_presence])?;
        ensure!(
            kept,
            "the page was reloaded: live updates must change it in place"
        );
        if t[0].contains(&after) && !t[1].contains("connected") {
            break killed.elapsed();
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "20 s after {first_name} was killed the open Systems page shows {t:?}; the laptop's status: {:?}",
            active_gateway(&office)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(
        active_gateway(&office) == Some(other),
        "the page shows {other_name} but the laptop's status says {:?}",
        active_gateway(&office)
    );
    let focused = b.script(
        "const a = document.activeElement; \
         return a && a.closest('#system-laptop') ? a.getAttribute('href') : String(a && a.outerHTML);",
    )?;
    ensure!(
        focused == "/portal/systems/laptop",
        "the update moved the keyboard focus from the laptop's link to {focused}"
    );
    println!(
        "    the open Systems page showed the failover to {other_name} {:.2} s after {first_name} was killed -9, without a reload",
        shown.as_secs_f64()
    );
    b.script("document.getElementById('system-laptop').scrollIntoView({block: 'center'});")?;
    b.shot("11-live-systems-after-failover")?;

    // The laptop's page: the gateway in use since the failover, and its peers.
    let text = b.visit("/portal/systems/laptop", &["Gateways in use"])?;
    let (t, _) = texts(&b, &["#active-gateways tbody tr"])?;
    ensure!(
        t[0].contains(LAN) && t[0].contains(other_name) && t[0].contains(" UTC"),
        "the laptop's page shows {t:?} as the gateway in use:\n{text}"
    );
    ensure!(
        text.contains("Peers") && text.contains(other_name) && text.contains("connected"),
        "the laptop's page shows no peers:\n{text}"
    );
    b.shot("12-live-laptop")?;
    b.script("document.getElementById('peers').scrollIntoView();")?;
    b.shot("12-live-laptop-peers")?;

    // At a phone's width: nothing wider than the screen.
    b.window(400, 800)?;
    for (path, shot) in [
        ("/portal/systems/laptop", "13-live-laptop-phone"),
        ("/portal/systems", "14-live-systems-phone"),
    ] {
        b.visit(path, &["laptop"])?;
        b.fits_width(path)?;
        b.shot(shot)?;
    }
    drop(b);
    Ok(())
}
