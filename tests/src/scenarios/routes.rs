//! The route manager on a real kernel: routes appear and disappear on a tunnel stand-in (a dummy
//! device), foreign routes are left alone and conflicts reported, the interface may vanish, a
//! default route keeps the marked UDP to the peer and the LAN working (wg-quick's scheme), a
//! restart finds exactly its own, and reset leaves the namespace's routes and rules as they were.
//! After a crash (the manager gone without reset, the tunnel deleted) the default route's kill
//! switch refuses what would have gone into the tunnel: nothing leaves in clear.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{ensure, Context};
use enclave_netns::{Netns, Process, SpawnOpts, TopologySpec};
use enclave_route::{
    Config, ConflictKind, DefaultRoute, Desired, Ipv4Net, Report, Route, RouteManager, TABLE_MAIN,
};

use crate::support::{expect_tcp_source, start_wireguard_go};
use crate::{Ctx, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "routes-appear-and-disappear",
            about: "routes on the tunnel follow the wanted set; foreign routes untouched; conflicts reported; the interface may vanish",
            run: appear_and_disappear,
        },
        Scenario {
            name: "routes-default-route",
            about: "a default route through the tunnel keeps marked UDP to the peer and the LAN reachable, and reset restores everything",
            run: default_route,
        },
        Scenario {
            name: "routes-restart-no-duplicates",
            about: "a manager that dies without cleaning up and restarts finds its own routes and rules and duplicates none",
            run: restart_no_duplicates,
        },
        Scenario {
            name: "routes-kill-switch",
            about: "after a crash the default route's traffic is refused, never sent in clear; LAN and marked UDP still work; a restart keeps it, reset removes it",
            run: kill_switch,
        },
    ]
}

/// The tunnel stand-in's name.
pub(crate) const TUNNEL: &str = "enctun0";

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("a literal subnet")
}

/// Creates the tunnel stand-in: a TUN device held open by wireguard-go (no peers, so whatever
/// is routed into it is counted and dropped), up. The kernel has no dummy driver here, and a
/// TUN nobody reads has no carrier.
pub(crate) fn add_tunnel(ns: &Netns) -> anyhow::Result<Process> {
    let process = start_wireguard_go(ns, TUNNEL)?;
    ns.exec(&["ip", "link", "set", TUNNEL, "up"])?;
    Ok(process)
}

/// The manager's configuration for a scenario, with its state in the scenario's log dir.
pub(crate) fn config(ctx: &Ctx, node: &str) -> anyhow::Result<Config> {
    let dir: PathBuf = ctx.log_dir().join(format!("route-state-{node}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(Config {
        interface: TUNNEL.to_string(),
        state_dir: Some(dir),
    })
}

/// Runs `desired` through a fresh manager inside `ns` (every netlink socket and every sysctl
/// write lives in the namespace). A fresh manager each time is what a restarted agent is.
pub(crate) fn apply(ns: &Netns, config: &Config, desired: &Desired) -> anyhow::Result<Report> {
    let report = ns.run_in(|| -> enclave_route::Result<Report> {
        RouteManager::new(config.clone())?.apply(desired)
    })??;
    Ok(report)
}

fn reset(ns: &Netns, config: &Config) -> anyhow::Result<Report> {
    let report = ns.run_in(|| -> enclave_route::Result<Report> {
        RouteManager::new(config.clone())?.reset()
    })??;
    Ok(report)
}

/// `ip route show proto 69 table all` as a set of lines.
fn ours(ns: &Netns) -> anyhow::Result<BTreeSet<String>> {
    let out = ns.exec(&["ip", "-4", "route", "show", "proto", "69", "table", "all"])?;
    Ok(out.lines().map(|l| l.trim().to_string()).collect())
}

/// Everything routing: the routes of every table (IPv4 and IPv6), the rules of both families,
/// `src_valid_mark`. Waits first for IPv6 duplicate address detection to end, since the kernel
/// adds the link-local addresses' local routes when it does (nothing of ours).
fn routing_dump(ns: &Netns) -> anyhow::Result<String> {
    let settled = enclave_netns::wait_until(Duration::from_secs(10), || {
        ns.exec(&["ip", "-6", "addr", "show", "tentative"])
            .is_ok_and(|out| out.trim().is_empty())
    });
    ensure!(settled, "IPv6 addresses in {} stay tentative", ns.node());
    Ok(format!(
        "{}\n--- rules\n{}\n--- rules v6\n{}\n--- src_valid_mark {}",
        ns.exec(&["ip", "route", "show", "table", "all"])?,
        ns.exec(&["ip", "-4", "rule", "show"])?,
        ns.exec(&["ip", "-6", "rule", "show"])?,
        ns.exec(&["cat", "/proc/sys/net/ipv4/conf/all/src_valid_mark"])?
            .trim()
    ))
}

/// The IPv4 part of [`routing_dump`], for a namespace whose tunnel was deleted and made again
/// (a new TUN gets new IPv6 link-local routes; we never touch IPv6).
fn routing_dump_v4(ns: &Netns) -> anyhow::Result<String> {
    Ok(format!(
        "{}\n--- rules\n{}\n--- src_valid_mark {}",
        ns.exec(&["ip", "-4", "route", "show", "table", "all"])?,
        ns.exec(&["ip", "-4", "rule", "show"])?,
        ns.exec(&["cat", "/proc/sys/net/ipv4/conf/all/src_valid_mark"])?
            .trim()
    ))
}

fn expect_lines(got: &BTreeSet<String>, want: &[&str]) -> anyhow::Result<()> {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    ensure!(
        *got == want,
        "routes of ours differ\n got: {got:#?}\nwant: {want:#?}"
    );
    Ok(())
}

/// A gateway `gw` and a `peer` on one link, 10.10.0.0/24.
fn gw_and_peer(name: &str) -> TopologySpec {
    let mut spec = TopologySpec::new(name);
    spec.node("gw")
        .node("peer")
        .link(("gw", "eth0"), ("peer", "eth0"))
        .addr("gw", "eth0", "10.10.0.2/24")
        .addr("peer", "eth0", "10.10.0.1/24");
    spec
}

fn appear_and_disappear(ctx: &Ctx) -> anyhow::Result<()> {
    let spec = gw_and_peer("rtappear");
    let topo = ctx.topology(&spec)?;
    let gw = topo.ns("gw");
    let tunnel = add_tunnel(gw)?;
    let cfg = config(ctx, "gw")?;
    let before = routing_dump_v4(gw)?;

    // 1. Three routes in two tables appear, ours by protocol 69, on the tunnel.
    let mut want = Desired::default();
    want.routes.insert(Route::main(net("10.1.0.0/16")));
    want.routes.insert(Route {
        dst: net("10.2.0.0/16"),
        table: TABLE_MAIN,
        metric: 10,
    });
    want.routes.insert(Route {
        dst: net("10.3.0.0/24"),
        table: 100,
        metric: 0,
    });
    let r = apply(gw, &cfg, &want)?;
    ensure!(
        r.added == 3 && r.removed == 0 && r.interface_present,
        "{r:?}"
    );
    expect_lines(
        &ours(gw)?,
        &[
            "10.1.0.0/16 dev enctun0 scope link",
            "10.2.0.0/16 dev enctun0 scope link metric 10",
            "10.3.0.0/24 dev enctun0 table 100 scope link",
        ],
    )?;
    // The kernel forwards by them.
    let get = gw.exec(&["ip", "route", "get", "10.1.2.3"])?;
    ensure!(get.contains("dev enctun0"), "ip route get 10.1.2.3: {get}");

    // 2. A foreign route on the tunnel, an equal and a more specific one elsewhere.
    gw.exec(&["ip", "route", "add", "10.4.0.0/16", "dev", TUNNEL])?;
    want.routes.insert(Route::main(net("10.10.0.0/24"))); // eth0's own subnet: equal
    want.routes.insert(Route::main(net("10.0.0.0/8"))); // eth0's 10.10.0.0/24 inside
    want.routes.insert(Route::main(net("10.4.0.0/16"))); // the foreign one on the tunnel
    let r = apply(gw, &cfg, &want)?;
    ensure!(
        r.added == 1,
        "only 10.0.0.0/8 is new and installable: {r:?}"
    );
    let kinds: Vec<(String, String, ConflictKind)> = r
        .conflicts
        .iter()
        .map(|c| (c.ours.dst.to_string(), c.theirs.dst.to_string(), c.kind))
        .collect();
    ensure!(
        kinds.contains(&(
            "10.10.0.0/24".into(),
            "10.10.0.0/24".into(),
            ConflictKind::Equal
        )) && kinds.contains(&(
            "10.4.0.0/16".into(),
            "10.4.0.0/16".into(),
            ConflictKind::Equal
        )) && kinds.contains(&(
            "10.0.0.0/8".into(),
            "10.10.0.0/24".into(),
            ConflictKind::MoreSpecific
        )),
        "conflicts: {kinds:?}"
    );
    let eth0_route = gw.exec(&["ip", "route", "get", "10.10.0.1"])?;
    ensure!(
        eth0_route.contains("dev eth0"),
        "the foreign connected route still wins: {eth0_route}"
    );

    // 3. Shrink the wanted set: ours go, the foreign route on the tunnel stays.
    let small = Desired {
        routes: [Route::main(net("10.1.0.0/16"))].into_iter().collect(),
        default_route: None,
    };
    let r = apply(gw, &cfg, &small)?;
    ensure!(r.removed == 3 && r.added == 0, "{r:?}");
    expect_lines(&ours(gw)?, &["10.1.0.0/16 dev enctun0 scope link"])?;
    let foreign = gw.exec(&["ip", "-4", "route", "show", "10.4.0.0/16"])?;
    ensure!(
        foreign.contains("dev enctun0"),
        "the foreign route was touched: {foreign:?}"
    );

    gw.exec(&["ip", "route", "del", "10.4.0.0/16", "dev", TUNNEL])?;

    // 4. The interface goes down (the kernel flushes its routes): nothing of ours, no error;
    // up again: ours are back.
    gw.exec(&["ip", "link", "set", TUNNEL, "down"])?;
    let r = apply(gw, &cfg, &small)?;
    ensure!(!r.interface_present && r.added == 0, "{r:?}");
    expect_lines(&ours(gw)?, &[])?;
    gw.exec(&["ip", "link", "set", TUNNEL, "up"])?;
    let r = apply(gw, &cfg, &small)?;
    ensure!(r.interface_present && r.added == 1, "{r:?}");
    expect_lines(&ours(gw)?, &["10.1.0.0/16 dev enctun0 scope link"])?;

    // 5. The interface vanishes: no error, nothing of ours left; it comes back: so do ours.
    gw.exec(&["ip", "link", "del", TUNNEL])?;
    drop(tunnel);
    let r = apply(gw, &cfg, &small)?;
    ensure!(!r.interface_present && r.added == 0, "{r:?}");
    expect_lines(&ours(gw)?, &[])?;
    let _tunnel = add_tunnel(gw)?;
    let r = apply(gw, &cfg, &small)?;
    ensure!(r.interface_present && r.added == 1, "{r:?}");
    expect_lines(&ours(gw)?, &["10.1.0.0/16 dev enctun0 scope link"])?;

    // 6. Reset: back to exactly what was there.
    let r = reset(gw, &cfg)?;
    ensure!(r.removed == 1, "{r:?}");
    let after = routing_dump_v4(gw)?;
    ensure!(
        after == before,
        "routes or rules differ after reset\nbefore:\n{before}\nafter:\n{after}"
    );
    Ok(())
}

const PEER_ENDPOINT: &str = "198.51.100.1";
const ECHO_PORT: u16 = 7777;

/// Sends one datagram from a socket marked with `mark` (none when `None`) and returns the answer,
/// or `None` when nothing came back in time. Runs inside `ns`.
fn udp_from(ns: &Netns, mark: Option<u32>) -> anyhow::Result<Option<String>> {
    let dst: SocketAddr = format!("{PEER_ENDPOINT}:{ECHO_PORT}").parse()?;
    let answer = ns.run_in(|| -> std::io::Result<Option<String>> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        if let Some(mark) = mark {
            enclave_route::set_fwmark(&socket, mark)?;
        }
        socket.set_read_timeout(Some(Duration::from_millis(700)))?;
        socket.send_to(b"probe\n", dst)?;
        let mut buf = [0u8; 256];
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => Ok(Some(String::from_utf8_lossy(&buf[..n]).trim().to_string())),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    })??;
    Ok(answer)
}

fn tx_packets(ns: &Netns, dev: &str) -> anyhow::Result<u64> {
    let out = ns.exec(&["ip", "-j", "-s", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("ip -j -s link")?;
    v[0]["stats64"]["tx"]["packets"]
        .as_u64()
        .context("no tx packet counter in ip -j -s link")
}

/// A host with an uplink `eth0` to `peer` (its default gateway) and a LAN `lan0` with
/// `lanbox` on it: the setting of the default route scenarios.
fn host_with_lan_and_uplink(name: &str) -> TopologySpec {
    let mut spec = TopologySpec::new(name);
    spec.node("host")
        .node("peer")
        .node("lanbox")
        .link(("host", "eth0"), ("peer", "eth0"))
        .segment("lan", &[("host", "lan0"), ("lanbox", "eth0")])
        .addr("host", "eth0", "10.10.0.2/24")
        .addr("peer", "eth0", "10.10.0.1/24")
        .addr("host", "lan0", "192.168.77.1/24")
        .addr("lanbox", "eth0", "192.168.77.10/24")
        .route("host", "default via 10.10.0.1");
    spec
}

fn default_route(ctx: &Ctx) -> anyhow::Result<()> {
    let spec = host_with_lan_and_uplink("rtdefault");
    let topo = ctx.topology(&spec)?;
    let (host, peer, lanbox) = (topo.ns("host"), topo.ns("peer"), topo.ns("lanbox"));
    // The peer's endpoint is beyond the host's default gateway, as on the Internet.
    peer.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{PEER_ENDPOINT}/32"),
        "dev",
        "lo",
    ])?;
    let _echo = peer.echo_server(ECHO_PORT)?;
    let _tunnel = add_tunnel(host)?;
    host.exec(&["ip", "addr", "add", "100.64.0.2/32", "dev", TUNNEL])?;
    host.exec(&["sysctl", "-qw", "net.ipv4.conf.all.src_valid_mark=0"])?;
    let root_svm_before = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/src_valid_mark")?;

    // Before: the endpoint answers over the underlay.
    ensure!(
        udp_from(host, None)?.is_some(),
        "the peer's endpoint must answer before any change"
    );
    let cfg = config(ctx, "host")?;
    let before = routing_dump(host)?;

    let dr = DefaultRoute::default();
    let want = Desired {
        routes: BTreeSet::new(),
        default_route: Some(dr),
    };
    let r = apply(host, &cfg, &want)?;
    ensure!(
        r.added == 2 && r.rules_added == 2 && r.kill_switch,
        "the route through the tunnel, the kill switch and two rules: {r:?}"
    );
    let rules = host.exec(&["ip", "-4", "rule", "show"])?;
    let table = dr.table.to_string();
    ensure!(
        rules.contains(&format!(
            "{}:\tfrom all lookup main suppress_prefixlength 0 proto 69",
            dr.priority
        )) && rules.contains(&format!(
            "{}:\tnot from all fwmark {:#x} lookup {table} proto 69",
            dr.priority + 1,
            dr.fwmark
        )),
        "rules:\n{rules}"
    );
    let svm = host.exec(&["cat", "/proc/sys/net/ipv4/conf/all/src_valid_mark"])?;
    ensure!(svm.trim() == "1", "src_valid_mark is {svm}");

    // `ip route get`: unmarked traffic into the tunnel, marked traffic over the underlay, the
    // LAN and the underlay's own subnet stay on their interfaces.
    let get = |args: &[&str]| -> anyhow::Result<String> {
        let mut argv = vec!["ip", "route", "get"];
        argv.extend_from_slice(args);
        Ok(host.exec(&argv)?)
    };
    let unmarked = get(&[PEER_ENDPOINT])?;
    ensure!(
        unmarked.contains(&format!("dev {TUNNEL} table {table}")),
        "unmarked: {unmarked}"
    );
    let mark = format!("{:#x}", dr.fwmark);
    let marked = get(&[PEER_ENDPOINT, "mark", &mark])?;
    ensure!(
        marked.contains("via 10.10.0.1 dev eth0"),
        "marked: {marked}"
    );
    let lan = get(&["192.168.77.10"])?;
    ensure!(lan.contains("dev lan0"), "LAN: {lan}");
    let internet = get(&["203.0.113.9"])?;
    ensure!(
        internet.contains(&format!("dev {TUNNEL}")),
        "Internet: {internet}"
    );

    // Real traffic: the marked socket (the data plane's) still reaches the peer's endpoint; an
    // unmarked one goes into the tunnel (its counter moves) and gets no answer; the LAN answers.
    let answer = udp_from(host, Some(dr.fwmark))?;
    ensure!(
        answer
            .as_deref()
            .is_some_and(|a| a.starts_with("10.10.0.2:")),
        "marked UDP to the endpoint: {answer:?}"
    );
    let tx_before = tx_packets(host, TUNNEL)?;
    let lost = udp_from(host, None)?;
    ensure!(lost.is_none(), "unmarked UDP bypassed the tunnel: {lost:?}");
    let tx_after = tx_packets(host, TUNNEL)?;
    ensure!(
        tx_after > tx_before,
        "the tunnel's tx counter did not move ({tx_before} -> {tx_after})"
    );
    let ping = host.ping("192.168.77.10", 3)?;
    ensure!(ping.all_answered(), "LAN ping: {ping:?}");
    let ping = lanbox.ping("192.168.77.1", 1)?;
    ensure!(ping.all_answered(), "LAN to host ping: {ping:?}");

    // Reset: routes, rules and src_valid_mark exactly as before; the root namespace untouched.
    let r = reset(host, &cfg)?;
    ensure!(
        r.removed == 2 && r.rules_removed == 2 && !r.kill_switch,
        "{r:?}"
    );
    let after = routing_dump(host)?;
    ensure!(
        after == before,
        "routes or rules differ after reset\nbefore:\n{before}\nafter:\n{after}"
    );
    ensure!(
        udp_from(host, None)?.is_some(),
        "unmarked UDP reaches the endpoint again after reset"
    );
    let root_svm_after = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/src_valid_mark")?;
    ensure!(
        root_svm_before == root_svm_after,
        "the root namespace's src_valid_mark changed"
    );
    Ok(())
}

fn restart_no_duplicates(ctx: &Ctx) -> anyhow::Result<()> {
    let mut spec = gw_and_peer("rtrestart");
    spec.route("gw", "default via 10.10.0.1");
    let topo = ctx.topology(&spec)?;
    let gw = topo.ns("gw");
    let _tunnel = add_tunnel(gw)?;
    gw.exec(&["sysctl", "-qw", "net.ipv4.conf.all.src_valid_mark=0"])?;
    let cfg = config(ctx, "gw")?;
    let before = routing_dump(gw)?;

    let mut want = Desired {
        routes: BTreeSet::new(),
        default_route: Some(DefaultRoute::default()),
    };
    for i in 0..50u8 {
        want.routes
            .insert(Route::main(net(&format!("10.{}.0.0/16", 100 + i))));
    }
    let first = apply(gw, &cfg, &want)?;
    // 50 routes, the default route through the tunnel and its kill switch.
    ensure!(first.added == 52 && first.rules_added == 2, "{first:?}");
    let installed = routing_dump(gw)?;

    // The first manager is gone without a reset (as after kill -9); a new one starts with the
    // same wanted state: it finds its own, adds nothing, removes nothing.
    let second = apply(gw, &cfg, &want)?;
    ensure!(
        second.added == 0
            && second.removed == 0
            && second.rules_added == 0
            && second.rules_removed == 0,
        "restart changed things: {second:?}"
    );
    let again = routing_dump(gw)?;
    ensure!(
        again == installed,
        "a restart changed routes or rules\nbefore:\n{installed}\nafter:\n{again}"
    );
    ensure!(ours(gw)?.len() == 52, "expected 52 routes of ours");

    // A restart with a smaller wanted set removes what is no longer wanted, once.
    want.routes.retain(|r| r.dst != net("10.100.0.0/16"));
    let third = apply(gw, &cfg, &want)?;
    ensure!(third.removed == 1 && third.added == 0, "{third:?}");

    // Reset by yet another manager restores src_valid_mark from the saved state.
    let r = reset(gw, &cfg)?;
    ensure!(r.removed == 51 && r.rules_removed == 2, "{r:?}");
    let after = routing_dump(gw)?;
    ensure!(
        after == before,
        "routes or rules differ after reset\nbefore:\n{before}\nafter:\n{after}"
    );
    Ok(())
}

/// A `tcpdump` of every packet to or from one host on one interface of a namespace (`any` for
/// all of them), running until [`Capture::finish`].
pub(crate) struct Capture {
    process: Process,
    what: String,
}

impl Capture {
    /// Starts the capture and waits until tcpdump says it listens, so that nothing sent after
    /// this returns can be missed.
    pub(crate) fn start(ns: &Netns, interface: &str, host: &str) -> anyhow::Result<Self> {
        // A log of its own per capture: logs of one label are appended to.
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let label = format!(
            "tcpdump{}-{}-{interface}-{host}",
            NEXT.fetch_add(1, Ordering::Relaxed),
            ns.node()
        );
        let mut process = ns.spawn(
            &label,
            &[
                "tcpdump",
                "-i",
                interface,
                "-n",
                "-l",
                "--immediate-mode",
                "host",
                host,
            ],
            SpawnOpts::default(),
        )?;
        process.wait_for_log("listening on", Duration::from_secs(10))?;
        Ok(Capture {
            process,
            what: format!("{interface} of {} to or from {host}", ns.node()),
        })
    }

    /// Stops tcpdump (SIGTERM, so that it prints its counts) and returns how many packets
    /// matched (the kernel's count, which includes any tcpdump had not read yet) and what it
    /// printed. An error when the count cannot be read: a capture that did not run proves
    /// nothing.
    pub(crate) fn finish(mut self) -> anyhow::Result<(u64, String)> {
        self.process.stop();
        let log = self.process.log();
        let count = |suffix: &str| {
            log.lines()
                .find_map(|l| l.strip_suffix(suffix))
                .and_then(|n| n.trim().parse::<u64>().ok())
        };
        let matched = count(" packets received by filter")
            .or(count(" packet received by filter"))
            .with_context(|| format!("tcpdump on {} printed no count:\n{log}", self.what))?;
        let captured = count(" packets captured")
            .or(count(" packet captured"))
            .unwrap_or(0);
        Ok((matched.max(captured), log))
    }
}

/// The internet host: beyond the host's default gateway, as anything on the Internet is.
const INTERNET: &str = "203.0.113.9";
const INTERNET_PORT: u16 = 80;

/// What the kernel says about sending to `dst` from `ns` without a mark: `Ok(text)` with the
/// route, or `Err(text)` with the refusal (`ip route get` fails on an unreachable route).
fn route_get(ns: &Netns, dst: &str) -> anyhow::Result<Result<String, String>> {
    let out = ns.exec_output(&["ip", "route", "get", dst])?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Ok(if out.status.success() {
        Ok(stdout)
    } else {
        Err(stderr)
    })
}

/// Asserts that `ns` sends nothing to `dst`: a capture on every interface of `ns` sees no
/// packet to or from it, the echo server at `dst:port` sees no connection, and the attempts
/// fail with the kill switch's answer, "no route to host" (`ip route get`, ping, TCP), not with
/// a timeout. The capture and the echo server are judged first: they say what went out.
pub(crate) fn expect_refused(
    ns: &Netns,
    dst: &str,
    port: u16,
    echo: &enclave_netns::EchoServer,
) -> anyhow::Result<()> {
    let capture = Capture::start(ns, "any", dst)?;
    let seen_before = echo.seen().len();
    let get = route_get(ns, dst)?;
    let ping = ns.exec_output(&["ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", dst])?;
    let ping_text = format!(
        "{}{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );
    let to: SocketAddr = format!("{dst}:{port}").parse()?;
    let tcp = ns.tcp_connect(to, Duration::from_secs(2));
    let (captured, log) = capture.finish()?;
    let seen = echo.seen()[seen_before..].to_vec();

    ensure!(
        captured == 0,
        "{captured} packets to or from {dst} left {} in clear:\n{log}",
        ns.node()
    );
    ensure!(
        seen.is_empty(),
        "{dst} saw connections from {}: {seen:?}",
        ns.node()
    );
    ensure!(
        get.as_ref().is_err_and(|e| e.contains("No route to host")),
        "ip route get {dst} should be refused by the kill switch: {get:?}"
    );
    ensure!(
        !ping.status.success() && ping_text.contains("No route to host"),
        "ping {dst} should fail with \"No route to host\":\n{ping_text}"
    );
    match tcp {
        Ok(()) => anyhow::bail!("TCP to {to} connected"),
        Err(enclave_netns::Error::Unreachable { source, .. })
            if source.kind() == std::io::ErrorKind::HostUnreachable => {}
        Err(other) => anyhow::bail!("TCP to {to}: expected \"no route to host\", got {other:#}"),
    }
    Ok(())
}

/// [`expect_refused`] for the internet host, beside the positive controls: the LAN answers,
/// and the data plane's marked UDP still reaches the peer's endpoint over the underlay.
fn nothing_in_clear(
    host: &Netns,
    internet_echo: &enclave_netns::EchoServer,
    fwmark: u32,
) -> anyhow::Result<()> {
    expect_refused(host, INTERNET, INTERNET_PORT, internet_echo)?;
    let lan = host.ping("192.168.77.10", 2)?;
    ensure!(lan.all_answered(), "the LAN must stay reachable: {lan:?}");
    let get_lan = route_get(host, "192.168.77.10")?;
    ensure!(
        get_lan.as_ref().is_ok_and(|r| r.contains("dev lan0")),
        "LAN: {get_lan:?}"
    );
    let answer = udp_from(host, Some(fwmark))?;
    ensure!(
        answer
            .as_deref()
            .is_some_and(|a| a.starts_with("10.10.0.2:")),
        "the marked UDP to the peer's endpoint must still go out on the underlay: {answer:?}"
    );
    Ok(())
}

/// Ends the tunnel stand-in's process; its TUN goes with it, as the agent's does when it dies.
fn crash_tunnel(host: &Netns, mut tunnel: Process) -> anyhow::Result<()> {
    tunnel.kill9();
    if host.has_link(TUNNEL)? {
        host.exec(&["ip", "link", "del", TUNNEL])?;
    }
    Ok(())
}

fn kill_switch(ctx: &Ctx) -> anyhow::Result<()> {
    let spec = host_with_lan_and_uplink("rtkill");
    let topo = ctx.topology(&spec)?;
    let (host, peer) = (topo.ns("host"), topo.ns("peer"));
    // The peer's endpoint and the internet host are beyond the host's default gateway.
    for address in [PEER_ENDPOINT, INTERNET] {
        peer.exec(&["ip", "addr", "add", &format!("{address}/32"), "dev", "lo"])?;
    }
    let _echo = peer.echo_server(ECHO_PORT)?;
    let internet_echo = peer.echo_server(INTERNET_PORT)?;
    host.exec(&["sysctl", "-qw", "net.ipv4.conf.all.src_valid_mark=0"])?;
    let cfg = config(ctx, "host")?;
    let dr = DefaultRoute::default();
    let table = dr.table.to_string();
    let want = Desired {
        routes: [Route::main(net("10.1.0.0/16"))].into_iter().collect(),
        default_route: Some(dr),
    };

    // Before: the internet host answers in clear, and a capture sees it (the probe works).
    let before = routing_dump_v4(host)?;
    let capture = Capture::start(host, "any", INTERNET)?;
    let ping = host.ping(INTERNET, 2)?;
    ensure!(ping.all_answered(), "before any change: {ping:?}");
    let (captured, log) = capture.finish()?;
    ensure!(
        captured >= 4,
        "the capture saw {captured} packets of 2 pings in clear; it cannot be trusted:\n{log}"
    );

    // 1. The default route through the tunnel, with its kill switch. (What was installed is
    // checked after the crash, so that a missing kill switch shows first as what it causes.)
    let tunnel = add_tunnel(host)?;
    host.exec(&["ip", "addr", "add", "100.64.0.2/32", "dev", TUNNEL])?;
    let installed = apply(host, &cfg, &want)?;
    let installed_routes = ours(host)?;
    let get = route_get(host, INTERNET)?;
    ensure!(
        get.as_ref()
            .is_ok_and(|r| r.contains(&format!("dev {TUNNEL} table {table}"))),
        "with the tunnel, the internet goes into it: {get:?}"
    );

    // 2. The crash: the manager is gone without a reset (the helper drops it, and a
    // RouteManager does nothing on drop, as after kill -9), and the tunnel goes with its
    // process. The kernel drops the routes through it; the rules and the kill switch stay.
    crash_tunnel(host, tunnel)?;
    nothing_in_clear(host, &internet_echo, dr.fwmark)?;
    ensure!(
        installed.added == 3
            && installed.rules_added == 2
            && installed.kill_switch
            && installed.interface_present,
        "{installed:?}"
    );
    let kill_switch_line = format!("unreachable default table {table} metric 4294967295");
    expect_lines(
        &installed_routes,
        &[
            "10.1.0.0/16 dev enctun0 scope link",
            &format!("default dev enctun0 table {table} scope link"),
            &kill_switch_line,
        ],
    )?;
    expect_lines(&ours(host)?, &[&kill_switch_line])?;
    let rules = host.exec(&["ip", "-4", "rule", "show"])?;
    ensure!(
        rules.matches("proto 69").count() == 2,
        "both rules must stay after the crash:\n{rules}"
    );

    // 3. A manager started while the tunnel is still missing finds the kill switch and keeps
    // it: nothing added, nothing removed, still nothing in clear.
    let r = apply(host, &cfg, &want)?;
    ensure!(
        !r.interface_present
            && r.kill_switch
            && r.added == 0
            && r.removed == 0
            && r.rules_added == 0
            && r.rules_removed == 0,
        "a restart without the tunnel changed things: {r:?}"
    );
    expect_lines(&ours(host)?, &[&kill_switch_line])?;
    nothing_in_clear(host, &internet_echo, dr.fwmark)?;

    // 4. The tunnel is back: a new manager puts the routes through it back beside the kill
    // switch it found, and duplicates nothing.
    let tunnel = add_tunnel(host)?;
    let r = apply(host, &cfg, &want)?;
    ensure!(
        r.interface_present && r.added == 2 && r.removed == 0 && r.rules_added == 0,
        "{r:?}"
    );
    expect_lines(
        &ours(host)?,
        &[
            "10.1.0.0/16 dev enctun0 scope link",
            &format!("default dev enctun0 table {table} scope link"),
            &kill_switch_line,
        ],
    )?;
    let r = apply(host, &cfg, &want)?;
    ensure!(r.added == 0 && r.removed == 0, "not settled: {r:?}");

    // 5. Crash again, then a clean reset by yet another manager while the tunnel is missing:
    // nothing of ours is left, src_valid_mark is back, and the internet answers in clear again
    // (what the user asked for by stopping the agent), seen by the same capture.
    crash_tunnel(host, tunnel)?;
    let r = reset(host, &cfg)?;
    ensure!(
        r.removed == 1 && r.rules_removed == 2 && !r.kill_switch,
        "{r:?}"
    );
    expect_lines(&ours(host)?, &[])?;
    let rules = host.exec(&["ip", "-4", "rule", "show"])?;
    ensure!(!rules.contains("proto 69"), "rules of ours left:\n{rules}");
    let after = routing_dump_v4(host)?;
    ensure!(
        after == before,
        "routes or rules differ after reset\nbefore:\n{before}\nafter:\n{after}"
    );
    let capture = Capture::start(host, "any", INTERNET)?;
    expect_tcp_source(
        host,
        (INTERNET, INTERNET_PORT),
        "10.10.0.2",
        "the host's own uplink address",
        "after reset the Internet host",
    )?;
    let (captured, log) = capture.finish()?;
    ensure!(
        captured > 0,
        "the capture saw nothing of a TCP exchange in clear; it cannot be trusted:\n{log}"
    );

    // 6. Once more, and this time recovered by hand with the commands of docs/routes.md, as
    // an administrator would who does not start the agent again.
    let tunnel = add_tunnel(host)?;
    let r = apply(host, &cfg, &want)?;
    ensure!(r.added == 3 && r.kill_switch, "{r:?}");
    crash_tunnel(host, tunnel)?;
    expect_refused(host, INTERNET, INTERNET_PORT, &internet_echo)?;
    let saved = cfg
        .state_dir
        .as_ref()
        .context("the scenario's manager has a state dir")?
        .join("src_valid_mark.saved");
    let saved = saved.to_string_lossy();
    let low = dr.priority.to_string();
    let high = (dr.priority + 1).to_string();
    host.exec(&["ip", "rule", "del", "priority", &low])?;
    host.exec(&["ip", "rule", "del", "priority", &high])?;
    host.exec(&["ip", "route", "flush", "table", "all", "proto", "69"])?;
    host.exec(&[
        "sh",
        "-c",
        "sysctl -qw net.ipv4.conf.all.src_valid_mark=\"$(cat \"$0\")\" && rm \"$0\"",
        &saved,
    ])?;
    let after = routing_dump_v4(host)?;
    ensure!(
        after == before,
        "routes or rules differ after the recovery by hand\nbefore:\n{before}\nafter:\n{after}"
    );
    let ping = host.ping(INTERNET, 2)?;
    ensure!(ping.all_answered(), "after the recovery by hand: {ping:?}");
    // A manager started later finds nothing of ours and nothing to restore.
    let r = reset(host, &cfg)?;
    ensure!(r == Report::default(), "{r:?}");
    Ok(())
}
