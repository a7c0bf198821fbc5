//! The product end to end: our agents (`enclave-agent run`, `enclave-gw run`) with our data
//! plane, routes and NAT, in the reference topology.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context};
use enclave_netns::{wait_until, Netns, Reached, TopologySpec};

use crate::agents::{prepare, start, status, write_definition, AgentFiles};
use crate::support::{
    expect_all_answered, expect_tcp_source, forwarding, reference_without_forwarding, OneGateway,
    GATEWAY_LAN, LAN_HOST,
};
use crate::{Ctx, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "agent-gateway-basics",
            about: "sender reaches the LAN through enclave-gw: overlay ping, SNAT, one way, status, clean stop",
            run: gateway_basics,
        },
        Scenario {
            name: "agent-psk",
            about: "a pre-shared key pair works; a gateway with a different key never completes a handshake, one with a missing file refuses the peer",
            run: psk_userspace,
        },
        Scenario {
            name: "agent-psk-external",
            about: "the same with wireguard-go (dataplane = external) on both sides",
            run: psk_external,
        },
    ]
}

const LAPTOP_OVERLAY: &str = "100.64.0.11";
const GW_OVERLAY: &str = "100.64.0.2";

/// Sender, gateway and LAN as in the reference topology, but forwarding left off on the
/// gateway (the agent must turn it on, and back off when it stops), and the LAN host given a
/// route to the overlay through the gateway, so that only the gateway's one-way filter stops
/// it from opening connections to the sender.
fn topology() -> TopologySpec {
    let mut spec = reference_without_forwarding("agentgw");
    spec.route("lan", &format!("100.64.0.0/10 via {GATEWAY_LAN}"));
    spec
}

fn definition(laptop: &AgentFiles, gw: &AgentFiles, acl: &str) -> String {
    OneGateway {
        laptop_key: &laptop.public_key,
        laptop_address: LAPTOP_OVERLAY,
        gateway: "menlo-gw-1",
        gateway_key: &gw.public_key,
        gateway_address: GW_OVERLAY,
        policy: "users to Menlo Park Office",
        acl,
    }
    .definition()
}

fn route_present(ns: &Netns, subnet: &str) -> bool {
    ns.exec(&["ip", "route", "show", subnet])
        .map(|out| out.contains("dev enclave0"))
        .unwrap_or(false)
}

fn gateway_basics(ctx: &Ctx) -> anyhow::Result<()> {
    let topo = ctx.topology(&topology())?;
    let (sender, gw, lan) = (topo.ns("sender"), topo.ns("gw"), topo.ns("lan"));
    let network = ctx.log_dir().join("network.toml");
    let laptop_files = prepare(ctx, sender, &network, "")?;
    let gw_files = prepare(ctx, gw, &network, "")?;
    write_definition(
        &network,
        &definition(&laptop_files, &gw_files, r#"{ protocol = "any" }"#),
    )?;
    ensure!(
        !forwarding(gw)?,
        "the topology should start without forwarding"
    );
    let rules_before = sender.exec(&["ip", "rule", "show"])?;

    let mut gw_agent = start(ctx, gw, &gw_files, true)?;
    let mut laptop_agent = start(ctx, sender, &laptop_files, false)?;

    // Step 2 of the guide's checklist: the sender pings the gateway's virtual address.
    let ping = sender.ping(GW_OVERLAY, 5)?;
    ensure!(
        ping.received > 0,
        "no reply from the gateway's virtual address:\n{}",
        ping.output
    );

    // The route appears once the gateway has answered a probe and advertised the subnet.
    ensure!(
        wait_until(Duration::from_secs(5), || route_present(
            sender,
            "192.168.77.0/24"
        )),
        "the sender got no route to 192.168.77.0/24; status:\n{}",
        status(ctx, sender, &laptop_files).unwrap_or_default()
    );
    expect_all_answered(sender, LAN_HOST, 3, "ping through the gateway lost replies")?;
    ensure!(forwarding(gw)?, "the gateway did not enable forwarding");

    // SNAT: the LAN host sees the gateway's LAN address.
    let echo = lan.echo_server(7777)?;
    let whom = "the gateway's LAN address";
    expect_tcp_source(sender, (LAN_HOST, 7777), GATEWAY_LAN, whom, "the LAN host")?;
    drop(echo);

    // One way: the LAN host cannot open a connection to the sender, though it has a route.
    let _sender_echo = sender.echo_server(8888)?;
    let back: SocketAddr = format!("{LAPTOP_OVERLAY}:8888").parse()?;
    // The positive control: the same probe from the LAN host opens a connection to the
    // gateway, so the refusal below is the policy's, not a broken probe's.
    let _gateway_echo = gw.echo_server(8888)?;
    lan.tcp_connect(
        format!("{GATEWAY_LAN}:8888").parse()?,
        Duration::from_secs(1),
    )?;
    ensure!(
        !lan.tcp_connect(back, Duration::from_secs(1)).reached()?,
        "the LAN host opened a connection to the sender: one-way access is broken"
    );

    // Status shows the guide's block with "Gateway for".
    let text = status(ctx, sender, &laptop_files)?;
    ensure!(text.contains("Peer: menlo-gw-1"), "status:\n{text}");
    ensure!(
        text.contains("Gateway for . . . . : 192.168.77.0/24 (active)"),
        "status does not show the gateway for the subnet:\n{text}"
    );
    ensure!(text.contains("Peer state. . . . . : Up"), "status:\n{text}");

    // The gateway's NAT table counts what went through.
    let ruleset = gw.exec(&["nft", "list", "table", "ip", "enclave"])?;
    ensure!(
        ruleset.contains("chain ENCLAVE"),
        "no ENCLAVE chain:\n{ruleset}"
    );
    ensure!(
        ruleset.contains(&format!("snat to {GATEWAY_LAN}")),
        "no SNAT to the LAN address:\n{ruleset}"
    );

    // A clean stop leaves the hosts as they were.
    let code = laptop_agent
        .stop()
        .context("the sender's agent could not be reaped")?;
    ensure!(
        code.success(),
        "the sender's agent exited with {code}:\n{}",
        laptop_agent.log()
    );
    let code = gw_agent
        .stop()
        .context("the gateway's agent could not be reaped")?;
    ensure!(
        code.success(),
        "the gateway's agent exited with {code}:\n{}",
        gw_agent.log()
    );
    ensure!(
        !route_present(sender, "192.168.77.0/24"),
        "the sender's route stayed"
    );
    ensure!(
        sender.exec(&["ip", "rule", "show"])? == rules_before,
        "the sender's rules changed"
    );
    ensure!(!forwarding(gw)?, "forwarding was not restored");
    let tables = gw.exec(&["nft", "list", "tables"])?;
    ensure!(
        !tables.contains("enclave"),
        "the gateway's nft table stayed: {tables}"
    );
    Ok(())
}

/// Pre-shared keys per pair: laptop and gateway with the same key file work; the gateway
/// given another key never completes a handshake with the laptop; given a missing file, it
/// refuses that peer and says so; given the same key again, it works again.
fn psk_userspace(ctx: &Ctx) -> anyhow::Result<()> {
    psk(ctx, "psk", &[])
}

fn psk_external(ctx: &Ctx) -> anyhow::Result<()> {
    let external = "dataplane = \"external\"";
    psk(ctx, "pskext", &[("sender", external), ("gw1", external)])
}

fn psk(ctx: &Ctx, tag: &str, config: &[(&str, &str)]) -> anyhow::Result<()> {
    use crate::office::{definition, users_granted, Office, ANY, PRINTER};
    use crate::support::write_key;

    let dir = ctx.log_dir().join(format!("{tag}-keys"));
    std::fs::create_dir_all(&dir)?;
    let with_file = |path: &std::path::Path| {
        definition(
            1,
            "\"users\"",
            ANY,
            &format!(
                "[[preshared_key]]\nsystems = [\"laptop\", \"menlo-gw-1\"]\nfile = \"{}\"\n",
                path.display()
            ),
        )
    };
    let genpsk = |ns: &Netns| -> anyhow::Result<String> {
        Ok(ns.exec(&["wg", "genpsk"])?.trim().to_owned())
    };

    let mut office = Office::start(ctx, tag, 1, &users_granted(1), config)?;
    let key_a = genpsk(office.ns("sender"))?;
    let key_b = genpsk(office.ns("sender"))?;
    let file_a = write_key(&dir, "a.key", &key_a)?;
    let file_b = write_key(&dir, "b.key", &key_b)?;
    office.set_definition_applied(&with_file(&file_a), &["gw1", "sender"])?;
    // Peers whose key changed need a new handshake: restart both with the key in place.
    for node in ["gw1", "sender"] {
        office.agent(node)?.stop();
    }
    office.start_agents()?;
    office.wait_reaching(PRINTER, Duration::from_secs(5))?;
    let keys = office
        .ns("sender")
        .exec(&["wg", "show", "enclave0", "preshared-keys"])?;
    ensure!(
        keys.contains(&key_a),
        "the laptop's tunnel does not use the pre-shared key of its file"
    );

    // The gateway reads another definition that names another key file for the pair.
    let gw_network = ctx.log_dir().join(format!("{tag}-gw-network.toml"));
    let gw_config = office.files["gw1"].config.clone();
    let shared_path = office.network.clone();
    let shared = shared_path.to_string_lossy().into_owned();
    let config = std::fs::read_to_string(&gw_config)?;
    std::fs::write(
        &gw_config,
        config.replace(&shared, &gw_network.to_string_lossy()),
    )?;
    let gw_definition = |file: &std::path::Path| -> anyhow::Result<()> {
        let text = std::fs::read_to_string(&shared_path)?;
        write_definition(
            &gw_network,
            &text.replace(
                &file_a.to_string_lossy().into_owned(),
                &file.to_string_lossy(),
            ),
        )
    };
    gw_definition(&file_b)?;
    office.restart_agent("gw1")?;
    ensure!(
        office
            .poll_reach(PRINTER, true, Duration::from_secs(6))?
            .is_none(),
        "the LAN answered although the gateway's pre-shared key differs"
    );
    let handshakes = office
        .ns("gw1")
        .exec(&["wg", "show", "enclave0", "latest-handshakes"])?;
    let laptop_key = office.files["sender"].public_key.clone();
    ensure!(
        handshakes
            .lines()
            .any(|l| l.starts_with(laptop_key.as_str()) && l.trim_end().ends_with("\t0")),
        "the gateway completed a handshake with the laptop despite different pre-shared keys:\n{handshakes}"
    );

    // A missing key file: the gateway refuses the peer and says why.
    gw_definition(&dir.join("missing.key"))?;
    office.restart_agent("gw1")?;
    let refused = wait_until(Duration::from_secs(3), || {
        office
            .status("gw1")
            .contains("peer laptop gets no tunnel: its pre-shared key file")
    });
    ensure!(
        refused,
        "the gateway does not say it refused the laptop:\n{}",
        office.status("gw1")
    );
    ensure!(
        !office
            .ns("gw1")
            .exec(&["wg", "show", "enclave0", "peers"])?
            .contains(laptop_key.as_str()),
        "the gateway gave the laptop a tunnel without its pre-shared key"
    );

    // Positive control: the same key on both sides again, the same restart: it works.
    gw_definition(&file_a)?;
    office.restart_agent("gw1")?;
    office.wait_reaching(PRINTER, Duration::from_secs(10))?;

    // Rotation: a new key in the file on both hosts, and SIGHUP: both tunnels take it.
    let key_c = genpsk(office.ns("sender"))?;
    write_key(&dir, "a.key", &key_c)?;
    for node in ["gw1", "sender"] {
        let pid = office.agent(node)?.pid();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid)?),
            nix::sys::signal::Signal::SIGHUP,
        )?;
    }
    for node in ["gw1", "sender"] {
        let rotated = wait_until(Duration::from_secs(3), || {
            office
                .ns(node)
                .exec(&["wg", "show", "enclave0", "preshared-keys"])
                .is_ok_and(|keys| keys.contains(&key_c))
        });
        ensure!(
            rotated,
            "{node} did not take the rotated pre-shared key on SIGHUP"
        );
    }
    Ok(())
}
