//! Trust is judged on proven addresses (issue 9, item 3): a sender whose public address is
//! blocked cannot pass a public-IP requirement by forging the outer source of its one-way
//! traffic, because the gateway takes a public address only once it has shown a return path.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use enclave_netns::Reached;

use crate::office::{Office, GW_UNDERLAY, LAN, LAPTOP, PRINTER};
use crate::support::{start_wireguard_go, wg_configure, WgPeer};
use crate::{Ctx, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "agent-trust-forged-source",
        about: "a blocked sender that forges an allowed outer source delivers nothing through the gateway; one really at that address does",
        run: forged_source,
    }]
}

/// The only public address the requirement allows; no host has it until the positive control.
const ALLOWED: &str = "10.10.0.66";

fn forged_source(ctx: &Ctx) -> anyhow::Result<()> {
    // The laptop at 10.10.0.2 is not allowed: the gateway suspends its grant.
    let mut office = Office::start_untrusted(ctx, "forged", &format!("{ALLOWED}/32"))?;

    // The attacker holds the laptop's key and runs a plain WireGuard (wireguard-go) that routes
    // the LAN into the tunnel whatever the gateway says.
    office.agent("sender")?.stop();
    let key_file = office.files["sender"]
        .config
        .parent()
        .context("the agent configuration has a directory")?
        .join("private.key");
    let gateway_key = office.files["gw1"].public_key.clone();
    let sender = office.ns("sender");
    let _wireguard_go = start_wireguard_go(sender, "wgatk")?;
    wg_configure(
        sender,
        "wgatk",
        &key_file,
        &format!("{LAPTOP}/10"),
        &WgPeer {
            public_key: &gateway_key,
            allowed_ips: &format!("100.64.0.2/32,{LAN}"),
            endpoint: Some(format!("{}:51820", GW_UNDERLAY[0])),
        },
    )?;
    sender.exec(&["ip", "route", "add", LAN, "dev", "wgatk"])?;
    // A handshake from the real (blocked) address.
    sender.ping("100.64.0.2", 1)?;
    let handshaken = enclave_netns::wait_until(Duration::from_secs(5), || {
        sender
            .exec(&["wg", "show", "wgatk", "latest-handshakes"])
            .is_ok_and(|out| out.split_whitespace().nth(1).is_some_and(|t| t != "0"))
    });
    ensure!(
        handshaken,
        "the attacker's WireGuard never completed a handshake with the gateway"
    );

    // Then its WireGuard packets leave with the allowed address as their outer source: the
    // gateway sees ALLOWED, its answers go nowhere.
    sender.exec(&["nft", "add", "table", "ip", "forge"])?;
    sender.exec(&[
        "nft",
        "add",
        "chain",
        "ip",
        "forge",
        "post",
        "{ type filter hook postrouting priority 300 ; }",
    ])?;
    sender.exec(&[
        "nft",
        "add",
        "rule",
        "ip",
        "forge",
        "post",
        "ip",
        "daddr",
        GW_UNDERLAY[0],
        "udp",
        "dport",
        "51820",
        "ip",
        "saddr",
        "set",
        ALLOWED,
    ])?;
    let echo = office.ns("lan").echo_server(9999)?;
    let target: SocketAddr = format!("{PRINTER}:9999").parse()?;
    let rx_before = laptop_rx(&office)?;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        // No answer is expected; a probe that could not run is still an error.
        sender
            .udp_probe(target, Duration::from_millis(100))
            .reached()?;
    }
    // The probe ran: the gateway received the forged traffic and took it as the laptop's.
    let rx_after = laptop_rx(&office)?;
    ensure!(
        rx_after > rx_before,
        "the forged traffic never reached the gateway (rx {rx_before} -> {rx_after}): this proves nothing"
    );
    office.expect_status(
        "gw1",
        &format!("Udp/{ALLOWED}:"),
        "the gateway did not see the forged source",
    )?;
    ensure!(
        echo.seen().is_empty(),
        "the LAN host received {} datagrams from a blocked sender that forged its outer source ({:?}); gateway status:\n{}",
        echo.seen().len(),
        echo.seen(),
        office.status("gw1")
    );

    // Positive control: the same sender, really at the allowed address, gets through once the
    // gateway has proven it (its handshake towards the new address is answered).
    sender.exec(&["nft", "delete", "table", "ip", "forge"])?;
    sender.exec(&["ip", "addr", "del", "10.10.0.2/24", "dev", "eth0"])?;
    sender.exec(&["ip", "addr", "add", &format!("{ALLOWED}/24"), "dev", "eth0"])?;
    let delivered = enclave_netns::try_wait_until(Duration::from_secs(15), || {
        sender
            .udp_probe(target, Duration::from_millis(100))
            .reached()?;
        Ok(!echo.seen().is_empty())
    })?;
    ensure!(
        delivered,
        "a sender really at the allowed address got nothing through; gateway status:\n{}",
        office.status("gw1")
    );
    Ok(())
}

/// The bytes the gateway received from the laptop's key, from its `status --json`.
fn laptop_rx(office: &Office<'_>) -> anyhow::Result<u64> {
    let status = office
        .status_json("gw1")
        .context("no status from the gateway")?;
    status["peers"]
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["name"] == "laptop"))
        .and_then(|p| p["rx_bytes"].as_u64())
        .context("the gateway's status has no laptop peer")
}
