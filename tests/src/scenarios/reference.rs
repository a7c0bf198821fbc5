//! The reference topology with the reference implementation: wireguard-go on the sender and the
//! gateway, configured with `wg`, forwarding and one SNAT rule set on the gateway with `nft`.
//! It proves the bench itself, and it is the baseline that our own parts are compared against.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context};
use enclave_netns::Reached;

use crate::support::{
    configure_reference_tunnel, expect_all_answered, reference_topology, snat_to_lan,
    start_wireguard_go, GATEWAY_LAN, GATEWAY_OVERLAY, LAN_HOST, OVERLAY,
};
use crate::{Ctx, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "reference-wireguard-go-gateway",
        about:
            "wireguard-go sender reaches a LAN host through a wireguard-go gateway with nft SNAT",
        run: reference_gateway,
    }]
}

fn reference_gateway(ctx: &Ctx) -> anyhow::Result<()> {
    let topo = ctx.topology(&reference_topology("ref"))?;
    let (sender, gw, lan) = (topo.ns("sender"), topo.ns("gw"), topo.ns("lan"));

    let _sender_wg = start_wireguard_go(sender, "wg0")?;
    let _gw_wg = start_wireguard_go(gw, "wg0")?;
    configure_reference_tunnel(ctx.log_dir(), "ref", sender, gw)?;
    snat_to_lan(gw, "enclave-ref", Some(OVERLAY))?;
    let echo = lan.echo_server(7777)?;

    // The first ping starts the handshake; after it every request must be answered.
    let overlay = sender.ping(GATEWAY_OVERLAY, 3)?;
    ensure!(
        overlay.received > 0,
        "no reply from the gateway's overlay address:\n{}",
        overlay.output
    );
    expect_all_answered(sender, LAN_HOST, 3, "ping through the gateway lost replies")?;

    let lan_addr: SocketAddr = format!("{LAN_HOST}:7777").parse()?;
    let seen = sender.tcp_request(lan_addr, Duration::from_secs(3))?;
    ensure!(
        seen.starts_with(&format!("{GATEWAY_LAN}:")),
        "the LAN host saw the TCP connection come from {seen}, not from the gateway's LAN address"
    );
    let seen = sender.udp_probe(lan_addr, Duration::from_secs(3))?;
    ensure!(
        seen.starts_with(&format!("{GATEWAY_LAN}:")),
        "the LAN host saw the UDP datagram come from {seen}, not from the gateway's LAN address"
    );
    ensure!(
        echo.seen().len() == 2,
        "the echo server saw {:?}",
        echo.seen()
    );

    let handshakes = gw.exec(&["wg", "show", "wg0", "latest-handshakes"])?;
    let stamp: u64 = handshakes
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("`wg show wg0 latest-handshakes` printed no time")?;
    ensure!(stamp > 0, "the gateway reports no handshake: {handshakes}");

    // The counter of the SNAT rule moved, and without the rule the LAN host cannot answer.
    let ruleset = gw.exec(&["nft", "list", "table", "ip", "enclave-ref"])?;
    ensure!(
        !ruleset.contains("counter packets 0 "),
        "the SNAT rule's counter did not move:\n{ruleset}"
    );
    gw.exec(&["nft", "delete", "table", "ip", "enclave-ref"])?;
    ensure!(
        !sender
            .tcp_request(lan_addr, Duration::from_secs(1))
            .reached()?,
        "the LAN host answered without SNAT: the test would not notice a missing SNAT rule"
    );
    Ok(())
}
