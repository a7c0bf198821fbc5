//! Failover between two gateways of the office: a gateway killed, a gateway's LAN link down,
//! and no flapping back when the first gateway returns.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use enclave_netns::SpawnOpts;

use crate::office::{users_granted, Office, PRINTER};
use crate::{Ctx, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "agent-failover-gateway-killed",
            about: "the active gateway is killed: traffic moves to the other, and stays when it returns",
            run: gateway_killed,
        },
        Scenario {
            name: "agent-failover-lan-down",
            about: "the active gateway's LAN link goes down: it withdraws the subnet and senders move",
            run: lan_down,
        },
    ]
}

fn node_of(system: &str) -> anyhow::Result<&'static str> {
    match system {
        "menlo-gw-1" => Ok("gw1"),
        "menlo-gw-2" => Ok("gw2"),
        other => anyhow::bail!("unexpected gateway {other:?}"),
    }
}

/// Starts the two-gateway office and returns it with the active gateway's system name.
fn office<'c>(ctx: &'c Ctx, tag: &str) -> anyhow::Result<(Office<'c>, String)> {
    let office = Office::start_reaching(ctx, tag, 2, &users_granted(2), &[])?;
    enclave_netns::wait_until(Duration::from_secs(2), || office.active_gateway().is_some());
    let active = office
        .active_gateway()
        .with_context(|| format!("no active gateway; status:\n{}", office.status("sender")))?;
    Ok((office, active))
}

/// Waits until the laptop uses a gateway other than `old` and returns it.
fn wait_for_move(office: &Office<'_>, old: &str) -> anyhow::Result<String> {
    let moved = enclave_netns::wait_until(Duration::from_secs(5), || {
        office.active_gateway().is_some_and(|g| g != old)
    });
    ensure!(
        moved,
        "the laptop still uses {old}:\n{}",
        office.status("sender")
    );
    office
        .active_gateway()
        .context("the active gateway vanished")
}

fn gateway_killed(ctx: &Ctx) -> anyhow::Result<()> {
    let (mut office, first) = office(ctx, "fokill")?;
    let first_node = node_of(&first)?;
    let killed_at = Instant::now();
    office.agent(first_node)?.kill9();
    let took = office.until_reach(PRINTER, true, Duration::from_secs(10))?;
    let second = wait_for_move(&office, &first)?;
    // The goal is under a second (measured by `cargo xtask bench failover`); WireGuard's own
    // timers would take 15 s or more, which this bound tells apart.
    ensure!(
        took < Duration::from_secs(5),
        "traffic came back only {took:?} after the kill"
    );
    office.expect_status(
        "sender",
        &format!("failed over from {first}"),
        "status does not say why the gateway changed",
    )?;
    eprintln!(
        "traffic flowed again {:?} after the kill",
        took.min(killed_at.elapsed())
    );

    // The first gateway returns (kill -9 left its NAT table behind; the restart takes it
    // over): the laptop sees it come up and stays where it is.
    office.start_agent(first_node, SpawnOpts::default())?;
    let probed = enclave_netns::wait_until(Duration::from_secs(5), || {
        office.status_json("sender").is_some_and(|s| {
            s["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["name"] == first.as_str() && p["rtt_ms"].is_number())
        })
    });
    ensure!(
        probed,
        "the laptop does not see {first} answer again:\n{}",
        office.status("sender")
    );
    // A window, not a synchronisation: the first gateway answers again (waited for above),
    // and the laptop must keep the second one for a while (its hold-down), not flap back.
    std::thread::sleep(Duration::from_secs(2));
    ensure!(
        office.active_gateway().as_deref() == Some(second.as_str()),
        "the laptop flapped back to {first}:\n{}",
        office.status("sender")
    );
    ensure!(
        office.reaches(PRINTER)?,
        "the LAN is unreachable after {first} returned"
    );
    Ok(())
}

fn lan_down(ctx: &Ctx) -> anyhow::Result<()> {
    let (office, first) = office(ctx, "folan")?;
    let first_node = node_of(&first)?;
    office
        .ns(first_node)
        .exec(&["ip", "link", "set", "lan0", "down"])?;
    let second = wait_for_move(&office, &first)?;
    ensure!(second != first, "still on {first}");
    let took = office.until_reach(PRINTER, true, Duration::from_secs(5))?;
    ensure!(
        took < Duration::from_secs(5),
        "traffic came back only after {took:?}"
    );
    let gw_status = office.status(first_node);
    ensure!(
        !gw_status.contains("Acting as gateway for: 192.168.77.0/24"),
        "{first} still claims the subnet with its LAN link down:\n{gw_status}"
    );
    Ok(())
}
