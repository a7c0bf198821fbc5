//! The sender's kill switch end to end, with our agents: a laptop whose Internet traffic goes
//! through a default-route gateway sends nothing in clear after its agent is killed with
//! SIGKILL, keeps its own LAN, gets the Internet back through the tunnel when the agent is
//! restarted (and sends nothing in clear while it starts), and in clear again only after a
//! clean stop (the user turned the VPN off).
//!
//! ```text
//!   internet (198.51.100.77 on lo) ── eth0 203.0.113.10 ─── gw1 eth1 203.0.113.1 (egress, SNAT)
//!        eth1 192.0.2.10                                     gw1 eth0 10.10.0.1 (underlay)
//!          │                                                      │ wan
//!   home eth1 192.0.2.1 (the laptop's home router, forwards)   sender eth0 10.10.0.2
//!   home eth0 10.20.0.5 ───────────────────────────────────── sender eth1 10.20.0.1
//!                                                 (main: default via 10.20.0.5, in clear)
//! ```

use std::time::Duration;

use anyhow::{ensure, Context};
use enclave_netns::{try_wait_until, wait_until, EchoServer, Netns, SpawnOpts, TopologySpec};

use super::routes::{expect_refused, Capture};
use crate::office::{Office, GW_EGRESS, GW_UNDERLAY, HOME_ROUTER, LAPTOP_HOME};
use crate::support::expect_tcp_source;
use crate::{Ctx, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "agent-killswitch-default-route",
        about: "kill -9 of a laptop's agent sends nothing in clear (kill switch), keeps its LAN; restart restores the tunnel; a clean stop lifts it",
        run: killswitch_default_route,
    }]
}

/// A host on the Internet, beyond the gateway's upstream router and the laptop's home router.
const INTERNET_HOST: &str = "198.51.100.77";
const INTERNET_PORT: u16 = 80;
/// The default route's table and mark (the agent's default `fwmark`).
const TABLE: &str = "17731";
const FWMARK: &str = "0x4543";

/// The routes of ours on the laptop (`ip route show table all proto 69`), one per line.
fn ours(sender: &Netns) -> anyhow::Result<Vec<String>> {
    let out = sender.exec(&["ip", "-4", "route", "show", "table", "all", "proto", "69"])?;
    Ok(out.lines().map(|l| l.trim().to_owned()).collect())
}

/// The rules of ours on the laptop.
fn our_rules(sender: &Netns) -> anyhow::Result<Vec<String>> {
    let out = sender.exec(&["ip", "-4", "rule", "show"])?;
    Ok(out
        .lines()
        .filter(|l| l.contains("proto 69"))
        .map(|l| l.trim().to_owned())
        .collect())
}

fn is_kill_switch(line: &str) -> bool {
    line.starts_with("unreachable default") && line.contains(&format!("table {TABLE}"))
}

fn is_tunnel_default(line: &str) -> bool {
    line.starts_with(&format!("default dev enclave0 table {TABLE}"))
}

/// Waits until the laptop's default route goes through the tunnel again and the Internet host
/// answers through it, seen from the gateway's egress address.
fn internet_through_tunnel(office: &Office<'_>, echo: &EchoServer) -> anyhow::Result<()> {
    let sender = office.ns("sender");
    let routed = wait_until(Duration::from_secs(10), || {
        ours(sender).is_ok_and(|r| r.iter().any(|l| is_tunnel_default(l)))
    });
    ensure!(
        routed,
        "no default route through the tunnel:\n{:?}\n{}",
        ours(sender),
        office.status("sender")
    );
    office.until_reach(INTERNET_HOST, true, Duration::from_secs(5))?;
    // Nothing of it in clear on the laptop's home link meanwhile.
    let capture = Capture::start(sender, "eth1", INTERNET_HOST)?;
    let before = echo.seen().len();
    expect_tcp_source(
        sender,
        (INTERNET_HOST, INTERNET_PORT),
        GW_EGRESS,
        "the gateway's egress address",
        "the Internet host",
    )?;
    ensure!(
        echo.seen().len() > before,
        "the echo server recorded nothing"
    );
    let (captured, log) = capture.finish()?;
    ensure!(
        captured == 0,
        "with the tunnel up, {captured} packets to the Internet host went out in clear on eth1:\n{log}"
    );
    Ok(())
}

/// With the agent dead: the Internet host gets nothing from the laptop, in clear or otherwise,
/// and the refusals are the kill switch's ("no route to host"); beside it, the positive
/// controls: the home LAN still answers and the tunnel's marked UDP would still leave on the
/// underlay.
fn nothing_in_clear(office: &Office<'_>, echo: &EchoServer) -> anyhow::Result<()> {
    let sender = office.ns("sender");
    expect_refused(sender, INTERNET_HOST, INTERNET_PORT, echo)?;
    let home = sender.ping(HOME_ROUTER, 2)?;
    ensure!(home.all_answered(), "the laptop lost its own LAN: {home:?}");
    let underlay = sender.exec(&["ip", "route", "get", GW_UNDERLAY[0], "mark", FWMARK])?;
    ensure!(
        underlay.contains("dev eth0"),
        "the tunnel's marked UDP would go {underlay}"
    );
    Ok(())
}

fn killswitch_default_route(ctx: &Ctx) -> anyhow::Result<()> {
    // The home router's own uplink to the Internet, beside the office's.
    let mut spec = TopologySpec::new("killsw");
    spec.link(("home", "eth1"), ("internet", "eth1"))
        .addr("internet", "eth1", "192.0.2.10/24")
        .addr("internet", "lo", &format!("{INTERNET_HOST}/32"))
        .addr("home", "eth1", "192.0.2.1/24")
        .route("internet", "10.20.0.0/24 via 192.0.2.1")
        .route("home", "default via 192.0.2.10")
        .sysctl("home", "net.ipv4.ip_forward", "1")
        // The laptop's own way to the Internet, in clear: its home router.
        .route("sender", &format!("default via {HOME_ROUTER}"));
    let mut office = Office::start_default_route(ctx, spec)?;
    let echo = office.ns("internet").echo_server(INTERNET_PORT)?;

    // 1. The agent up: the Internet through the tunnel, the kill switch already in place
    // behind the route through the tunnel, in the same table.
    internet_through_tunnel(&office, &echo)?;
    let routes_first = ours(office.ns("sender"))?;
    let rules_first = our_rules(office.ns("sender"))?;
    ensure!(rules_first.len() == 2, "rules of ours: {rules_first:#?}");

    // 2. SIGKILL to the agent's PID: its TUN device vanishes with it, the kill switch stays.
    let pid = office.agent("sender")?.pid();
    ensure!(pid != 0, "the laptop's agent has no PID");
    office.agent("sender")?.kill9();
    let gone = try_wait_until(Duration::from_secs(5), || {
        Ok(!office.ns("sender").has_link("enclave0")?)
    })?;
    ensure!(gone, "enclave0 outlived its agent (PID {pid})");
    nothing_in_clear(&office, &echo)?;
    ensure!(
        routes_first.iter().filter(|l| is_kill_switch(l)).count() == 1,
        "the kill switch must have been installed with the default route:\n{routes_first:#?}"
    );
    let routes = ours(office.ns("sender"))?;
    ensure!(
        routes.len() == 1 && is_kill_switch(&routes[0]),
        "after the crash only the kill switch is left of our routes:\n{routes:#?}"
    );
    ensure!(
        our_rules(office.ns("sender"))? == rules_first,
        "the rules must stay after the crash"
    );

    // 3. Restart: the Internet through the tunnel again, nothing duplicated, and nothing in
    // clear across the restart window either. A ping every 10 ms from the laptop's home
    // address runs from before the start until the tunnel carries the Internet again; its
    // source keeps ping going while the kill switch refuses it (without one it would stop at
    // its first "no route"), and a capture on the home link watches all of it. (An agent that
    // asked for the default route only once a gateway answered lifted the kill switch from its
    // first reconcile until then, about 0.1 s: a few of these pings left in clear.)
    let watch = Capture::start(office.ns("sender"), "eth1", INTERNET_HOST)?;
    let mut pings = office.ns("sender").spawn(
        "restart-window-pings",
        &["ping", "-n", "-i", "0.01", "-I", LAPTOP_HOME, INTERNET_HOST],
        SpawnOpts::default(),
    )?;
    ensure!(pings.is_running(), "ping did not start:\n{}", pings.log());
    office.start_agent("sender", Default::default())?;
    internet_through_tunnel(&office, &echo)?;
    ensure!(
        pings.is_running(),
        "the pings stopped before the tunnel was back; they watched only part of the restart:\n{}",
        pings.log()
    );
    // SIGINT (to its PID): ping prints what it sent (the sends the kill switch refused are
    // not counted).
    office
        .ns("sender")
        .exec(&["kill", "-INT", &pings.pid().to_string()])?;
    pings.wait_for_log("packets transmitted", Duration::from_secs(3))?;
    let (captured, log) = watch.finish()?;
    let sent = pings.log();
    ensure!(
        sent.contains(" packets transmitted") && !sent.contains("\n0 packets transmitted"),
        "the pings across the restart sent nothing:\n{sent}"
    );
    ensure!(
        captured == 0,
        "{captured} packets to the Internet host left in clear on eth1 while the agent restarted:\n{log}"
    );
    let routes = ours(office.ns("sender"))?;
    ensure!(
        routes.iter().filter(|l| is_kill_switch(l)).count() == 1
            && routes.iter().filter(|l| is_tunnel_default(l)).count() == 1,
        "one default route through the tunnel and one kill switch after the restart:\n{routes:#?}"
    );
    let rules = our_rules(office.ns("sender"))?;
    ensure!(
        rules == rules_first,
        "the rules changed across the restart:\n{rules:#?}"
    );

    // 4. A clean stop (SIGTERM): the user turned the VPN off. Nothing of ours stays, and the
    // laptop reaches the Internet in clear through its home router, which the same capture
    // sees (so the captures above could have seen it too).
    let status = office
        .agent("sender")?
        .stop()
        .context("could not reap the laptop's agent")?;
    ensure!(status.success(), "the laptop's agent exited with {status}");
    let routes = ours(office.ns("sender"))?;
    ensure!(
        routes.is_empty(),
        "routes of ours after a clean stop:\n{routes:#?}"
    );
    let rules = our_rules(office.ns("sender"))?;
    ensure!(
        rules.is_empty(),
        "rules of ours after a clean stop:\n{rules:#?}"
    );
    let sender = office.ns("sender");
    let capture = Capture::start(sender, "eth1", INTERNET_HOST)?;
    expect_tcp_source(
        sender,
        (INTERNET_HOST, INTERNET_PORT),
        LAPTOP_HOME,
        "the laptop's home address",
        "after a clean stop the Internet host",
    )?;
    let (captured, log) = capture.finish()?;
    ensure!(
        captured > 0,
        "the capture on eth1 saw nothing of a TCP exchange in clear; it cannot be trusted:\n{log}"
    );
    Ok(())
}
