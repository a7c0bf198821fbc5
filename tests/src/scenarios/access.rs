//! Access control end to end: tags, subnet filters, ACLs, trust requirements, active hours and
//! live edits of the definition, each through our agents in the office fixture.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::ensure;
use enclave_netns::{try_wait_until, Reached, SpawnOpts};

use crate::office::{
    definition, office_ips_definition, users_granted, Office, ANY, DC1, DC2, GW_OVERLAY,
    GW_UNDERLAY, LAN, PRINTER,
};
use crate::{Ctx, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "agent-untagged-sender-refused",
            about: "a sender without the policy's tag gets no route and cannot reach the LAN",
            run: untagged_sender_refused,
        },
        Scenario {
            name: "agent-subnet-filter",
            about: "a subnet filter passes the domain controllers .20/.21 and stops the printer .10",
            run: subnet_filter,
        },
        Scenario {
            name: "agent-icmp-only-acl",
            about: "an ICMP-only ACL lets ping through and stops TCP",
            run: icmp_only_acl,
        },
        Scenario {
            name: "agent-trust-public-ip",
            about: "a public-IP trust requirement refuses a sender from a non-matching underlay address",
            run: trust_public_ip,
        },
        Scenario {
            name: "agent-active-hours",
            about: "active hours at the real time: a live edit to a window without now stops access within a second, and back",
            run: active_hours,
        },
        Scenario {
            name: "agent-live-edit",
            about: "an edit revokes access within a second and restores it; a broken edit is refused",
            run: live_edit,
        },
    ]
}

/// [`Office::start`] with one gateway, the laptop tagged `laptop_tags` (TOML strings) and the
/// policy lines `policy` (filter, ACL) in the gateway policy for `users`.
fn one_gateway<'c>(
    ctx: &'c Ctx,
    tag: &str,
    laptop_tags: &str,
    policy: &str,
) -> anyhow::Result<Office<'c>> {
    Office::start(ctx, tag, 1, &definition(1, laptop_tags, policy, ""), &[])
}

fn untagged_sender_refused(ctx: &Ctx) -> anyhow::Result<()> {
    let office = one_gateway(ctx, "untagged", "\"guests\"", ANY)?;
    // Nothing may happen: wait until both agents say they applied the definition.
    office.wait_applied(&["gw1", "sender"])?;
    ensure!(
        !office.sender_has_route(LAN)?,
        "a sender without the tag got a route:\n{}",
        office.status("sender")
    );
    // The positive control: the same ping from the laptop reaches the gateway's underlay.
    office.reaches_only(
        GW_UNDERLAY[0],
        PRINTER,
        "a sender without the tag reached the LAN",
    )?;
    // Even with a route added by hand, nothing passes: the laptop has no peer for the LAN and
    // the gateway no grant for the laptop.
    office
        .ns("sender")
        .exec(&["ip", "route", "add", LAN, "dev", "enclave0"])?;
    office.reaches_only(
        GW_UNDERLAY[0],
        PRINTER,
        "a hand-made route let an untagged sender through",
    )?;
    ensure!(
        !office.reaches(GW_OVERLAY[0])?,
        "an untagged sender reached the gateway"
    );
    Ok(())
}

fn subnet_filter(ctx: &Ctx) -> anyhow::Result<()> {
    let policy = format!("filter = [\"{DC1}-{DC2}\"]\n{ANY}");
    let office = one_gateway(ctx, "filter", "\"users\"", &policy)?;
    office.wait_reaching(DC1, Duration::from_secs(3))?;
    ensure!(
        office.reaches(DC2)?,
        "the second domain controller is not reachable"
    );
    ensure!(
        !office.reaches(PRINTER)?,
        "the printer is reachable despite the subnet filter"
    );
    office.expect_status(
        "sender",
        &format!("{DC1}-{DC2}"),
        "status does not show the filtered destination",
    )?;

    // At -v 5 the laptop's agent traces each packet's decision: the printer's ping is filtered
    // on the laptop already, the controller's is sent.
    let mut office = office;
    office.agent("sender")?.stop();
    office.start_agent(
        "sender",
        SpawnOpts::default().env("ENCLAVE_TEST_VERBOSITY", "5"),
    )?;
    office.wait_reaching(DC1, Duration::from_secs(3))?;
    ensure!(!office.reaches(PRINTER)?, "the printer became reachable");
    let log = office.agent("sender")?.log();
    ensure!(
        log.lines().any(|l| l.contains("outbound packet filtered")
            && l.contains(&format!("packet=icmp 100.64.0.11 -> {PRINTER}"))),
        "no trace of the printer's ping being filtered at -v 5"
    );
    ensure!(
        log.contains(&format!(
            "outbound packet sent packet=icmp 100.64.0.11 -> {DC1}"
        )),
        "no trace of the controller's ping being sent at -v 5"
    );
    // The printer's ping is counted against the gateway it would have gone through.
    let counted = enclave_netns::wait_until(Duration::from_secs(2), || {
        office
            .status("sender")
            .lines()
            .any(|l| l.contains("Drops") && l.contains("filter:no-rule"))
    });
    ensure!(
        counted,
        "status does not count the filtered pings:\n{}",
        office.status("sender")
    );
    Ok(())
}

fn icmp_only_acl(ctx: &Ctx) -> anyhow::Result<()> {
    let acl = "acl = [{ protocol = \"icmp\" }]";
    let office = one_gateway(ctx, "icmponly", "\"users\"", acl)?;
    office.wait_for_route()?;
    let _echo = office.ns("lan").echo_server(445)?;
    office.until_reach(DC1, true, Duration::from_secs(3))?;
    let dst: SocketAddr = format!("{DC1}:445").parse()?;
    ensure!(
        !office
            .ns("sender")
            .tcp_connect(dst, Duration::from_secs(1))
            .reached()?,
        "TCP passed an ICMP-only ACL"
    );
    // The same office with tcp 445 added lets it through: the refusal above was the ACL's.
    let mut office = office;
    let acl =
        "acl = [{ protocol = \"icmp\" }, { protocol = \"tcp\", ports = 445, label = \"SMB\" }]";
    office.set_definition(&definition(1, "\"users\"", acl, ""))?;
    let opened = try_wait_until(Duration::from_secs(2), || {
        office
            .ns("sender")
            .tcp_connect(dst, Duration::from_millis(300))
            .reached()
    })?;
    ensure!(opened, "tcp 445 stayed closed after the ACL allowed it");
    Ok(())
}

fn trust_public_ip(ctx: &Ctx) -> anyhow::Result<()> {
    // The laptop's underlay address is 10.10.0.2: the gateway judges it as its public address.
    // The control probes reach the gateway whatever the policy says, so it learns the laptop's
    // address, judges it, and suspends the grant; the gateway reachability rule belongs to the
    // same grant and is suspended with it.
    let mut office = Office::start_untrusted(ctx, "trustip", "198.51.100.0/24")?;
    office.reaches_only(
        GW_UNDERLAY[0],
        PRINTER,
        "a sender from 10.10.0.2 passed a requirement allowing only 198.51.100.0/24",
    )?;
    // The gateway's acknowledgements leave the suspended grant's subnets out, so the laptop
    // does not take it as active for the LAN: no route (it gets one once trusted, below).
    let no_route = enclave_netns::try_wait_until(Duration::from_secs(3), || {
        Ok(!office.sender_has_route(LAN)?)
    })?;
    ensure!(
        no_route,
        "a suspended sender was told the gateway serves it:\n{}",
        office.status("sender")
    );
    ensure!(
        !office.reaches(GW_OVERLAY[0])?,
        "a suspended sender reached the gateway"
    );
    office.set_definition(&office_ips_definition("10.10.0.0/24"))?;
    office.wait_for_route()?;
    printer_within(&office, true, Duration::from_secs(2), "access came back")?;
    Ok(())
}

/// Active hours judged at the real time (the agents have no test clock): the window is
/// computed from the time now in a fixed-offset IANA zone where it is about noon, so the day
/// and the hour never wrap during the test.
fn active_hours(ctx: &Ctx) -> anyhow::Result<()> {
    let utc_hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        / 3600
        % 24;
    // Etc/GMT-N is UTC+N (POSIX signs): with N = 12 - hour, it is 12:xx there now.
    let offset = 12 - i64::try_from(utc_hour)?;
    let zone = match offset {
        0 => "Etc/GMT".to_owned(),
        n if n > 0 => format!("Etc/GMT-{n}"),
        n => format!("Etc/GMT+{}", -n),
    };
    let hours = |window: &str| {
        format!(
            "{ANY}\n\n[gateway_policy.active_hours]\n\
             days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]\n\
             hours = [\"{window}\"]\nzone = \"{zone}\""
        )
    };
    // 10:00-14:00 holds noon (the test takes seconds); 15:00-16:00 does not.
    let inside = definition(1, "\"users\"", &hours("10:00-14:00"), "");
    let outside = definition(1, "\"users\"", &hours("15:00-16:00"), "");
    let mut office = Office::start_reaching(ctx, "hours", 1, &inside, &[])?;

    office.set_definition(&outside)?;
    printer_within(&office, false, Duration::from_secs(1), "access stopped")?;
    let status = office.status("gw1");
    ensure!(
        status.contains("suspended") || status.contains("outside"),
        "the gateway's status does not say the grant is outside its hours:\n{status}"
    );
    office.set_definition(&inside)?;
    printer_within(&office, true, Duration::from_secs(2), "access resumed")?;
    Ok(())
}

/// Waits up to 3 s for the printer to answer the laptop (`answers`) or to stop answering, and
/// checks that the change came within `limit`; `what` names the change for the error
/// ("access came back" only after ...).
fn printer_within(
    office: &Office<'_>,
    answers: bool,
    limit: Duration,
    what: &str,
) -> anyhow::Result<()> {
    let took = office.until_reach(PRINTER, answers, Duration::from_secs(3))?;
    ensure!(took < limit, "{what} only after {took:?}");
    Ok(())
}

fn live_edit(ctx: &Ctx) -> anyhow::Result<()> {
    let granted = users_granted(1);
    let mut office = Office::start_reaching(ctx, "liveedit", 1, &granted, &[])?;

    // Revoke: the laptop loses the tag.
    office.set_definition(&definition(1, "\"guests\"", ANY, ""))?;
    printer_within(
        &office,
        false,
        Duration::from_secs(1),
        "the revoked grant stopped working",
    )?;

    // Restore.
    office.set_definition(&granted)?;
    printer_within(
        &office,
        true,
        Duration::from_secs(2),
        "the restored grant came back",
    )?;

    // A broken edit is refused with its position, and the last good definition stays.
    office.set_definition(&format!(
        "{granted}\n[[system]]\nname = \"broken\"\naddress = \"not an address\"\n"
    ))?;
    // The agent's answer to the edit is its status reporting the refusal: wait for that, not
    // for a fixed time, then check that access held.
    let refused = enclave_netns::wait_until(Duration::from_secs(5), || {
        let status = office.status("sender");
        status.contains("network.toml:") && status.contains("last good definition stays in force")
    });
    ensure!(
        refused,
        "the sender's status does not report the refused edit with its position:\n{}",
        office.status("sender")
    );
    ensure!(office.reaches(PRINTER)?, "a broken edit cut access");
    Ok(())
}
