//! What a gateway forwards beyond the tunnel (issue 9, findings 1 and 8): `enclave-gw` turns
//! IPv4 forwarding on for the whole host, so a neighbour on the underlay that routes the LAN via
//! the gateway, or a LAN host that routes the underlay via it, must still get nothing through
//! unless the host forwarded before the agent started; and a gateway agent killed with SIGKILL
//! (its tunnel interface gone, forwarding still on) must forward nothing of that kind either.
//!
//! The topology is the office's with one more node, `nb`, on the underlay segment:
//!
//! ```text
//!   sender (laptop, 10.10.0.2) ─┐
//!   nb (neighbour, 10.10.0.9)  ─┼─ wan ── gw1 (10.10.0.1 | 192.168.77.1) ── lan ── printer (192.168.77.10)
//! ```
//!
//! `nb` has a route to the LAN via the gateway's underlay address, and the printer a route to
//! the underlay via the gateway's LAN address. The laptop reaches the printer through the tunnel:
//! the positive control of every check.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use enclave_netns::{
    try_wait_until, wait_until, Netns, Process, SpawnOpts, Topology, TopologySpec,
};

use crate::agents::{prepare, start_with, write_definition, AgentFiles};
use crate::office::{users_granted, GW_LAN, GW_UNDERLAY, LAN, LAPTOP_UNDERLAY, PRINTER, SYSTEMS};
use crate::{support, Ctx, Scenario};

/// The underlay neighbour.
const NEIGHBOUR: &str = "10.10.0.9";
/// The underlay segment.
const UNDERLAY: &str = "10.10.0.0/24";
/// The echo servers' port on the printer and on the neighbour.
const PORT: u16 = 7000;
const SHORT: Duration = Duration::from_millis(800);

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "forwarding-underlay-nftables",
            about: "nat = nftables: an underlay neighbour and the LAN get nothing through the gateway either way, also after kill -9; the tunnel does",
            run: underlay_nftables,
        },
        Scenario {
            name: "forwarding-underlay-iptables",
            about: "nat = iptables: an underlay neighbour and the LAN get nothing through the gateway either way, also after kill -9; the tunnel does",
            run: underlay_iptables,
        },
        Scenario {
            name: "forwarding-host-forwarded",
            about: "a gateway host that forwarded before the agent keeps forwarding between its other interfaces, and after stop",
            run: host_forwarded,
        },
    ]
}

/// The gateway, the laptop, the printer and the neighbour, with agents on the first two.
struct Site<'c> {
    ctx: &'c Ctx,
    /// Dropped before the topology.
    agents: std::collections::BTreeMap<&'static str, Process>,
    files: std::collections::BTreeMap<&'static str, AgentFiles>,
    _echo: [enclave_netns::EchoServer; 2],
    topo: Topology,
}

impl<'c> Site<'c> {
    /// Builds the topology (the gateway host forwarding already when `host_forwards`) and checks
    /// that the probes can succeed: with forwarding on and no agent, the neighbour and the
    /// printer reach each other. Then forwarding is put back and the agents start, the
    /// gateway with `nat = BACKEND`.
    fn start(ctx: &'c Ctx, tag: &str, backend: &str, host_forwards: bool) -> anyhow::Result<Self> {
        let mut spec = TopologySpec::new(tag);
        spec.node("sender")
            .node("gw1")
            .node("lan")
            .node("nb")
            .segment(
                "wan",
                &[("sender", "eth0"), ("gw1", "eth0"), ("nb", "eth0")],
            )
            .segment("lan", &[("gw1", "lan0"), ("lan", "eth0")])
            .addr("sender", "eth0", &format!("{LAPTOP_UNDERLAY}/24"))
            .addr("gw1", "eth0", &format!("{}/24", GW_UNDERLAY[0]))
            .addr("gw1", "lan0", &format!("{}/24", GW_LAN[0]))
            .addr("lan", "eth0", &format!("{PRINTER}/24"))
            .addr("nb", "eth0", &format!("{NEIGHBOUR}/24"))
            .route("nb", &format!("{LAN} via {}", GW_UNDERLAY[0]))
            .route("lan", &format!("{UNDERLAY} via {}", GW_LAN[0]));
        let topo = ctx.topology(&spec)?;
        let echo = [
            topo.ns("lan").echo_server(PORT)?,
            topo.ns("nb").echo_server(PORT)?,
        ];
        let network = ctx.log_dir().join(format!("network-{tag}.toml"));
        let mut files = std::collections::BTreeMap::new();
        files.insert("sender", prepare(ctx, topo.ns("sender"), &network, "")?);
        files.insert(
            "gw1",
            prepare(ctx, topo.ns("gw1"), &network, &format!("nat = {backend:?}"))?,
        );
        let mut text = users_granted(1);
        for (node, system) in SYSTEMS {
            if let Some(f) = files.get(node) {
                text = text.replace(&format!("KEY({system})"), &f.public_key);
            }
        }
        write_definition(&network, &text)?;
        let mut site = Site {
            ctx,
            agents: Default::default(),
            files,
            _echo: echo,
            topo,
        };

        // The probes can succeed: the same checks pass with plain forwarding and no agent.
        site.set_forwarding(true)?;
        let open = site.crossing()?;
        ensure!(
            open.neighbour_to_lan && open.lan_to_neighbour,
            "with forwarding on and no agent the neighbour and the printer should reach each other: {open:?}"
        );
        site.set_forwarding(host_forwards)?;

        site.start_agent("gw1")?;
        site.start_agent("sender")?;
        Ok(site)
    }

    fn ns(&self, node: &str) -> &Netns {
        self.topo.ns(node)
    }

    fn start_agent(&mut self, node: &'static str) -> anyhow::Result<()> {
        let process = start_with(
            self.ctx,
            self.topo.ns(node),
            &self.files[node],
            node == "gw1",
            SpawnOpts::default(),
        )?;
        self.agents.insert(node, process);
        Ok(())
    }

    fn agent(&mut self, node: &str) -> anyhow::Result<&mut Process> {
        self.agents
            .get_mut(node)
            .with_context(|| format!("no agent runs on {node}"))
    }

    /// Stops the gateway's agent cleanly; it must exit with success.
    fn stop_gateway_agent(&mut self) -> anyhow::Result<()> {
        let status = self
            .agent("gw1")?
            .stop()
            .context("could not reap the gateway agent")?;
        ensure!(status.success(), "the gateway agent exited with {status}");
        Ok(())
    }

    fn set_forwarding(&self, on: bool) -> anyhow::Result<()> {
        support::set_forwarding(self.ns("gw1"), on)
    }

    fn forwarding(&self) -> anyhow::Result<bool> {
        support::forwarding(self.ns("gw1"))
    }

    /// Whether the laptop reaches the printer through the tunnel (ping and TCP), within
    /// `timeout`.
    /// A probe that could not run is an error.
    fn tunnel_reaches_printer(&self, timeout: Duration) -> anyhow::Result<bool> {
        let sender = self.ns("sender");
        let mut failure = None;
        let reached = wait_until(timeout, || {
            let reached = sender
                .ping_once(PRINTER)
                .map_err(anyhow::Error::from)
                .and_then(|pinged| Ok(pinged && tcp_reaches(sender, PRINTER)?));
            reached.unwrap_or_else(|err| {
                failure = Some(err);
                true
            })
        });
        match failure {
            Some(err) => Err(err),
            None => Ok(reached),
        }
    }

    /// What crosses the gateway without the tunnel, each way, by ping and by TCP; and the
    /// controls that the neighbour and the printer are up and reach the gateway itself.
    fn crossing(&self) -> anyhow::Result<Crossing> {
        let (nb, lan) = (self.ns("nb"), self.ns("lan"));
        for (ns, target) in [(nb, GW_UNDERLAY[0]), (lan, GW_LAN[0])] {
            let control = ns.ping(target, 1)?;
            ensure!(
                control.all_answered(),
                "control: {} cannot ping the gateway's own address {target}, so its probes prove nothing:\n{}",
                ns.node(),
                control.output
            );
        }
        let pings = |from: &Netns, to: &str| -> anyhow::Result<bool> {
            let result = from.ping(to, 1)?;
            ensure!(
                result.transmitted == 1,
                "ping from {} to {to} did not run:\n{}",
                from.node(),
                result.output
            );
            Ok(result.received > 0)
        };
        Ok(Crossing {
            neighbour_to_lan: pings(nb, PRINTER)? | tcp_reaches(nb, PRINTER)?,
            lan_to_neighbour: pings(lan, NEIGHBOUR)? | tcp_reaches(lan, NEIGHBOUR)?,
        })
    }

    /// Nothing crosses, while the tunnel does (when `tunnel_up`).
    fn check_closed(&self, when: &str, tunnel_up: bool) -> anyhow::Result<()> {
        if tunnel_up {
            ensure!(
                self.tunnel_reaches_printer(Duration::from_secs(5))?,
                "{when}: positive control failed: the laptop does not reach {PRINTER} through the tunnel"
            );
        }
        let crossing = self.crossing()?;
        ensure!(
            !crossing.neighbour_to_lan,
            "{when}: the underlay neighbour {NEIGHBOUR} reached the LAN host {PRINTER} through the gateway"
        );
        ensure!(
            !crossing.lan_to_neighbour,
            "{when}: the LAN host {PRINTER} reached the underlay neighbour {NEIGHBOUR} through the gateway"
        );
        Ok(())
    }

    /// Our rules as the kernel lists them, without counters.
    fn rules(&self, backend: &str) -> anyhow::Result<String> {
        let gw = self.ns("gw1");
        Ok(match backend {
            "nftables" => gw
                .exec(&["nft", "list", "table", "ip", "enclave"])?
                .lines()
                .map(strip_counter)
                .collect::<Vec<_>>()
                .join("\n"),
            _ => {
                let mut out = String::new();
                for table in ["nat", "filter"] {
                    let saved = gw.exec(&["iptables-save", "-t", table])?;
                    for line in saved.lines().filter(|l| l.contains("ENCLAVE")) {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
                out
            }
        })
    }
}

/// What went through the gateway without the tunnel.
#[derive(Debug)]
struct Crossing {
    neighbour_to_lan: bool,
    lan_to_neighbour: bool,
}

/// Whether a TCP connection from `from` to the echo server at `ip` goes through; a timeout is
/// "no", any other failure means the probe could not run and is an error.
fn tcp_reaches(from: &Netns, ip: &str) -> anyhow::Result<bool> {
    let dst: SocketAddr = format!("{ip}:{PORT}").parse()?;
    match from.tcp_request(dst, SHORT) {
        Ok(_) => Ok(true),
        Err(enclave_netns::Error::Unreachable { source, .. })
            if source.kind() == std::io::ErrorKind::TimedOut
                || source.kind() == std::io::ErrorKind::WouldBlock =>
        {
            Ok(false)
        }
        Err(e) => Err(e).with_context(|| format!("TCP probe from {} to {dst}", from.node())),
    }
}

/// `counter packets 3 bytes 252` → `counter`.
fn strip_counter(line: &str) -> String {
    match line.find("counter packets ") {
        Some(at) => {
            let rest = &line[at + "counter ".len()..];
            let tail = rest.splitn(5, ' ').nth(4).unwrap_or_default();
            format!("{}counter {tail}", &line[..at])
        }
        None => line.to_owned(),
    }
}

/// The drop rule's packet counter in `nft list` text, if the rule is there.
fn drop_counter(listing: &str) -> Option<u64> {
    let line = listing
        .lines()
        .find(|l| l.contains(enclave_nat::OTHER_FORWARDING_COMMENT))?;
    let at = line.find("counter packets ")? + "counter packets ".len();
    line[at..].split(' ').next()?.parse().ok()
}

fn underlay_nftables(ctx: &Ctx) -> anyhow::Result<()> {
    underlay(ctx, "fwdnft", "nftables")
}

fn underlay_iptables(ctx: &Ctx) -> anyhow::Result<()> {
    underlay(ctx, "fwdipt", "iptables")
}

/// The host did not forward: while the gateway runs, after it is killed, after its restart.
fn underlay(ctx: &Ctx, tag: &str, backend: &str) -> anyhow::Result<()> {
    let mut site = Site::start(ctx, tag, backend, false)?;
    site.check_closed("while the gateway runs", true)?;
    ensure!(site.forwarding()?, "the gateway does not forward");
    let gw = site.ns("gw1");
    if backend == "nftables" {
        let listing = gw.exec(&["nft", "list", "table", "ip", "enclave"])?;
        ensure!(
            drop_counter(&listing).is_some_and(|n| n > 0),
            "the drop of other forwarding did not count the probes:\n{listing}"
        );
    } else {
        let tables = gw.exec(&["nft", "list", "tables"])?;
        ensure!(
            !tables.contains("table ip enclave"),
            "the nftables backend ran too: {tables}"
        );
        let save = gw.exec(&["iptables-save", "-c", "-t", "filter"])?;
        let line = save
            .lines()
            .find(|l| l.contains(enclave_nat::OTHER_FORWARDING_COMMENT))
            .with_context(|| format!("no drop of other forwarding in ENCLAVE-FORWARD:\n{save}"))?;
        ensure!(
            !line.starts_with("[0:"),
            "the drop of other forwarding did not count the probes: {line}"
        );
    }
    let applied = site.rules(backend)?;

    // kill -9: no reset runs, the tunnel interface goes with the process, forwarding stays on.
    let pid = site.agent("gw1")?.pid();
    site.agent("gw1")?.kill9();
    let gw = site.ns("gw1");
    let gone = try_wait_until(Duration::from_secs(5), || Ok(!gw.has_link("enclave0")?))?;
    ensure!(gone, "enclave0 outlived the gateway agent (pid {pid})");
    ensure!(
        site.forwarding()?,
        "forwarding went off with the killed agent; this check needs it left on"
    );
    ensure!(
        site.rules(backend)? == applied,
        "the rules changed when the agent was killed"
    );
    site.check_closed("after kill -9 of the gateway agent", false)?;

    // A restarted agent replaces its own rules: the same ones, none twice.
    site.start_agent("gw1")?;
    ensure!(
        site.tunnel_reaches_printer(Duration::from_secs(10))?,
        "after the restart the laptop does not reach {PRINTER} through the tunnel"
    );
    let now = site.rules(backend)?;
    ensure!(
        now == applied,
        "after the restart the rules differ:\n--- before kill -9\n{applied}\n--- after restart\n{now}"
    );
    if backend == "nftables" {
        let ruleset = site.ns("gw1").exec(&["nft", "list", "ruleset"])?;
        ensure!(
            ruleset.matches("table ip enclave").count() == 1
                && ruleset
                    .matches(enclave_nat::OTHER_FORWARDING_COMMENT)
                    .count()
                    == 1,
            "duplicates after the restart:\n{ruleset}"
        );
    } else {
        ensure!(
            now.matches("-A FORWARD -j ENCLAVE-FORWARD").count() == 1
                && now.matches("-A POSTROUTING -j ENCLAVE").count() == 1
                && now.matches(enclave_nat::OTHER_FORWARDING_COMMENT).count() == 1,
            "duplicates after the restart:\n{now}"
        );
    }
    site.check_closed("after the gateway agent restarted", true)?;

    // A clean stop: forwarding back off, then our rules gone.
    site.stop_gateway_agent()?;
    ensure!(
        !site.forwarding()?,
        "forwarding is on after a clean stop; it was off before the first start"
    );
    let left = site.rules(backend).unwrap_or_default();
    ensure!(
        !left.contains("ENCLAVE") && !left.contains("table ip enclave"),
        "a clean stop left rules of ours:\n{left}"
    );
    Ok(())
}

/// The host forwarded before the agent: its forwarding between other interfaces stays exactly
/// as it was, while the gateway runs and after it stops.
fn host_forwarded(ctx: &Ctx) -> anyhow::Result<()> {
    let mut site = Site::start(ctx, "fwdhost", "nftables", true)?;
    ensure!(
        site.tunnel_reaches_printer(Duration::from_secs(5))?,
        "positive control failed: the laptop does not reach {PRINTER} through the tunnel"
    );
    let crossing = site.crossing()?;
    ensure!(
        crossing.neighbour_to_lan && crossing.lan_to_neighbour,
        "the agent changed the host's own forwarding between the underlay and the LAN: {crossing:?}"
    );
    let listing = site
        .ns("gw1")
        .exec(&["nft", "list", "table", "ip", "enclave"])?;
    ensure!(
        drop_counter(&listing).is_none(),
        "a host that forwarded got a drop for its other interfaces:\n{listing}"
    );
    site.stop_gateway_agent()?;
    ensure!(
        site.forwarding()?,
        "a clean stop turned off the forwarding the host had before the agent"
    );
    let crossing = site.crossing()?;
    if !(crossing.neighbour_to_lan && crossing.lan_to_neighbour) {
        bail!("after stop the host's own forwarding is not as before: {crossing:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_and_stripped() {
        let line = "\t\tiifname != \"enclave0\" oifname != \"enclave0\" counter packets 12 bytes 1008 drop comment \"x\"";
        assert_eq!(
            strip_counter(line),
            "\t\tiifname != \"enclave0\" oifname != \"enclave0\" counter drop comment \"x\""
        );
        let listing = format!(
            "counter packets 12 bytes 1008 drop comment \"{}\"",
            enclave_nat::OTHER_FORWARDING_COMMENT
        );
        assert_eq!(drop_counter(&listing), Some(12));
        assert_eq!(drop_counter("counter packets 1 bytes 2 accept"), None);
    }
}
