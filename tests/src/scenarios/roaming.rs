//! Roaming survives reconfiguration: a laptop without a configured endpoint, whose address
//! the gateway learnt from its packets, loses nothing while the definition is edited around it
//! (issue 9, item 4). Before, each apply re-added every peer: the gateway forgot the learnt
//! endpoint (and, with a public-IP requirement, suspended the grant it could no longer judge),
//! and wireguard-go forgot the session as well.

use std::time::Duration;

use anyhow::ensure;
use enclave_netns::PingResult;

use crate::office::{definition, Office, ANY, PRINTER};
use crate::{Ctx, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "agent-roaming-survives-edit",
            about: "a trusted laptop pinging through our gateway 5 times a second loses no ping across two unrelated edits",
            run: userspace,
        },
        Scenario {
            name: "agent-roaming-survives-edit-external",
            about: "the same on wireguard-go (dataplane = external) on both sides: no ping lost across two unrelated edits",
            run: external,
        },
    ]
}

/// A system that has nothing to do with the laptop; the gateway gets it as a new peer.
const UNRELATED: &str = "[[system]]\nname = \"printer-admin\"\n\
    public_key = \"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=\"\n\
    address = \"100.64.0.21\"\ntags = [\"users\"]\n";

fn userspace(ctx: &Ctx) -> anyhow::Result<()> {
    // The laptop is trusted by its public address, judged at the gateway: a wiped endpoint
    // would suspend the grant as well.
    let trust = "[[trust_requirement]]\nname = \"office-ips\"\nkind = \"public_ip\"\n\
                 allow = [\"10.10.0.0/24\"]\n";
    let policy = format!("trust = [\"office-ips\"]\n{ANY}");
    survives_edits(ctx, "roam", &policy, trust, &[])
}

fn external(ctx: &Ctx) -> anyhow::Result<()> {
    // No public-IP requirement: the external data plane cannot judge one (see
    // docs/user-guide.md, "Trust requirements"), it would stay suspended.
    let external = "dataplane = \"external\"";
    survives_edits(
        ctx,
        "roamext",
        ANY,
        "",
        &[("sender", external), ("gw1", external)],
    )
}

fn survives_edits(
    ctx: &Ctx,
    tag: &str,
    policy: &str,
    extra: &str,
    config: &[(&str, &str)],
) -> anyhow::Result<()> {
    let base = definition(1, "\"users\"", policy, extra);
    let edited = definition(1, "\"users\"", policy, &format!("{extra}\n{UNRELATED}"));
    let mut office = Office::start(ctx, tag, 1, &base, config)?;
    office.wait_reaching(PRINTER, Duration::from_secs(5))?;
    // The gateway has learnt the laptop's endpoint (the definition gives none); its status
    // shows counters refreshed every 200 ms.
    office.wait_for_status(
        "gw1",
        "Udp/10.10.0.2:",
        Duration::from_secs(2),
        "the gateway has not learnt the laptop's endpoint",
    )?;

    // 40 pings, 0.2 s apart: 8 s, across two edits that the agents apply.
    let count = 40;
    let mut ping = office.ns("sender").spawn(
        "roaming-ping",
        &[
            "ping",
            "-n",
            "-i",
            "0.2",
            "-W",
            "1",
            "-c",
            &count.to_string(),
            PRINTER,
        ],
        Default::default(),
    )?;
    let replies = |log: &str| log.lines().filter(|l| l.contains("bytes from")).count();
    ensure!(
        enclave_netns::wait_until(Duration::from_secs(5), || replies(&ping.log()) >= 5),
        "the laptop's pings were not answered before the edit:\n{}",
        ping.log()
    );
    office.set_definition_applied(&edited, &["gw1", "sender"])?;
    ensure!(
        office.status("gw1").contains("Peer: printer-admin"),
        "the gateway did not take the edit:\n{}",
        office.status("gw1")
    );
    office.set_definition_applied(&base, &["gw1", "sender"])?;
    ensure!(
        enclave_netns::wait_until(Duration::from_secs(15), || !ping.is_running()),
        "ping did not end"
    );
    let result = PingResult::parse(&ping.log());
    ensure!(
        result.transmitted == count,
        "ping sent {} of {count}:\n{}",
        result.transmitted,
        result.output
    );
    ensure!(
        result.received == result.transmitted,
        "{} of {} pings were lost across edits that did not concern the laptop; gateway status:\n{}\nping:\n{}",
        result.transmitted - result.received,
        result.transmitted,
        office.status("gw1"),
        result.output
    );
    Ok(())
}
