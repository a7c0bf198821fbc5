//! The "Menlo Park Office" fixture of the end-to-end scenarios: a sender laptop, one or two
//! gateways on a shared underlay segment, and the office LAN 192.168.77.0/24 behind them, with
//! our agents running on the laptop and the gateways.
//!
//! Definitions are templates: `KEY(laptop)`, `KEY(menlo-gw-1)` and `KEY(menlo-gw-2)` are
//! replaced by the systems' public keys.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use enclave_netns::{
    try_wait_until, wait_until, Netns, PingResult, Process, SpawnOpts, Topology, TopologySpec,
};

use crate::agents::{prepare, start_with, status, status_json, write_definition, AgentFiles};
use crate::Ctx;

/// The office LAN.
pub const LAN: &str = "192.168.77.0/24";
/// The printer.
pub const PRINTER: &str = "192.168.77.10";
/// The two domain controllers.
pub const DC1: &str = "192.168.77.20";
/// The second domain controller.
pub const DC2: &str = "192.168.77.21";
/// The laptop's virtual address.
pub const LAPTOP: &str = "100.64.0.11";
/// Gateway virtual addresses.
pub const GW_OVERLAY: [&str; 2] = ["100.64.0.2", "100.64.0.3"];
/// Gateway addresses on the LAN.
pub const GW_LAN: [&str; 2] = ["192.168.77.1", "192.168.77.2"];
/// Gateway underlay addresses.
pub const GW_UNDERLAY: [&str; 2] = ["10.10.0.1", "10.10.0.3"];
/// The laptop's underlay address.
pub const LAPTOP_UNDERLAY: &str = "10.10.0.2";

/// gw1's address on its uplink to the Internet (`eth1`), in [`Office::start_default_route`].
pub const GW_EGRESS: &str = "203.0.113.1";
/// gw1's upstream router (the node `internet`), gw1's default route in
/// [`Office::start_default_route`].
pub const UPSTREAM: &str = "203.0.113.10";
/// The laptop's address on its home LAN (`eth1`), in [`Office::start_default_route`].
pub const LAPTOP_HOME: &str = "10.20.0.1";
/// The laptop's home router (the node `home`) on that LAN.
pub const HOME_ROUTER: &str = "10.20.0.5";

/// An agent configuration line (a TOML comment) by which a scenario asks [`Office`] for the
/// WireGuard kernel module on the external data plane instead of pinning wireguard-go.
pub const KERNEL_MODULE: &str = "# enclave-scenarios: external data plane on the kernel module";

/// Whether the WireGuard kernel module is loaded here (the agent's external data plane then
/// uses it instead of a userspace program).
pub fn kernel_module_loaded() -> bool {
    std::path::Path::new("/sys/module/wireguard").exists()
}

/// The systems' names in definitions, by node.
pub const SYSTEMS: [(&str, &str); 3] = [
    ("sender", "laptop"),
    ("gw1", "menlo-gw-1"),
    ("gw2", "menlo-gw-2"),
];

/// The policy line that grants everything (any protocol, any port).
pub const ANY: &str = "acl = [{ protocol = \"any\" }]";

/// The office's plain definition: the laptop (tag `users`) is granted the whole LAN, [`ANY`],
/// through `gateways` gateways.
pub fn users_granted(gateways: usize) -> String {
    definition(gateways, "\"users\"", ANY, "")
}

/// [`users_granted`] with one gateway that serves `0.0.0.0/0` (the Internet: the laptop's
/// default route) instead of the LAN.
pub fn default_route_granted() -> String {
    users_granted(1).replace(
        &format!("subnets = [\"{LAN}\"]"),
        "subnets = [\"0.0.0.0/0\"]",
    )
}

/// A definition with one gateway whose grant to the users requires the `public_ip` trust
/// requirement "office-ips", which allows only `range`.
pub fn office_ips_definition(range: &str) -> String {
    definition(
        1,
        "\"users\"",
        "trust = [\"office-ips\"]\nacl = [{ protocol = \"any\" }]",
        &format!(
            "[[trust_requirement]]\nname = \"office-ips\"\nkind = \"public_ip\"\nallow = [\"{range}\"]\n"
        ),
    )
}

/// A definition with one gateway policy for `users` through the given gateways, with the
/// given extra policy lines (filter, acl, trust…), laptop tags, and extra top-level text.
pub fn definition(gateways: usize, laptop_tags: &str, policy_extra: &str, extra: &str) -> String {
    let mut text = format!(
        "[network]\noverlay = \"100.64.0.0/10\"\n\n\
         [[system]]\nname = \"laptop\"\npublic_key = \"KEY(laptop)\"\naddress = \"{LAPTOP}\"\ntags = [{laptop_tags}]\n\n"
    );
    let mut names = Vec::new();
    for i in 0..gateways {
        let name = format!("menlo-gw-{}", i + 1);
        text.push_str(&format!(
            "[[system]]\nname = \"{name}\"\npublic_key = \"KEY({name})\"\naddress = \"{}\"\n\
             endpoint = \"{}:51820\"\n\n[system.gateway]\nallowed = true\nsubnets = [\"{LAN}\"]\n\n",
            GW_OVERLAY[i], GW_UNDERLAY[i]
        ));
        names.push(format!("\"{name}\""));
    }
    text.push_str(&format!(
        "[[gateway_policy]]\nname = \"users to Menlo Park Office\"\nsenders = [\"users\"]\n\
         gateways = [{}]\nsubnets = [\"{LAN}\"]\n{policy_extra}\n\n{extra}\n",
        names.join(", ")
    ));
    text
}

/// A running office.
#[derive(Debug)]
pub struct Office<'c> {
    ctx: &'c Ctx,
    /// Agent processes by node; dropped before the topology.
    pub agents: BTreeMap<String, Process>,
    /// The topology.
    pub topo: Topology,
    /// The definition file every agent reads.
    pub network: PathBuf,
    /// Each node's agent files.
    pub files: BTreeMap<String, AgentFiles>,
    /// The definition template in force.
    pub template: String,
}

impl<'c> Office<'c> {
    /// Builds the topology for `gateways` gateways (1 or 2), writes keys, agent configurations
    /// (plus `extra_config[node]` lines) and `template`, and starts the gateways, then the laptop.
    pub fn start(
        ctx: &'c Ctx,
        tag: &str,
        gateways: usize,
        template: &str,
        extra_config: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::start_in(
            ctx,
            TopologySpec::new(tag),
            gateways,
            template,
            extra_config,
        )
    }

    /// [`Office::start`], then waits for the laptop's route to the LAN and for the printer to
    /// answer through the tunnel (within 3 s): the office at work, before a scenario changes
    /// something.
    pub fn start_reaching(
        ctx: &'c Ctx,
        tag: &str,
        gateways: usize,
        definition: &str,
        config: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let office = Self::start(ctx, tag, gateways, definition, config)?;
        office.wait_reaching(PRINTER, Duration::from_secs(3))?;
        Ok(office)
    }

    /// [`Office::start_reaching`] on the plain office: one gateway, [`users_granted`], and the
    /// node configuration lines `config`.
    pub fn start_granted(ctx: &'c Ctx, tag: &str, config: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_reaching(ctx, tag, 1, &users_granted(1), config)
    }

    /// [`Office::start`] with the nodes and links of `spec` added to the office's.
    pub fn start_in(
        ctx: &'c Ctx,
        mut spec: TopologySpec,
        gateways: usize,
        template: &str,
        extra_config: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        spec.node("sender").node("lan");
        let mut wan = vec![("sender", "eth0")];
        let mut lan = vec![("lan", "eth0")];
        for (i, node) in ["gw1", "gw2"].into_iter().take(gateways).enumerate() {
            spec.node(node)
                .addr(node, "eth0", &format!("{}/24", GW_UNDERLAY[i]))
                .addr(node, "lan0", &format!("{}/24", GW_LAN[i]));
            wan.push((node, "eth0"));
            lan.push((node, "lan0"));
        }
        spec.segment("wan", &wan)
            .segment("lan", &lan)
            .addr("sender", "eth0", &format!("{LAPTOP_UNDERLAY}/24"))
            .addr("lan", "eth0", &format!("{PRINTER}/24"))
            .addr("lan", "eth0", &format!("{DC1}/24"))
            .addr("lan", "eth0", &format!("{DC2}/24"));
        let topo = ctx.topology(&spec)?;
        let network = ctx.log_dir().join("network.toml");
        let mut files = BTreeMap::new();
        for (node, _) in SYSTEMS.iter().take(1 + gateways) {
            let extra = extra_config
                .iter()
                .filter(|(n, _)| n == node)
                .map(|(_, line)| *line)
                .collect::<Vec<_>>()
                .join("\n");
            files.insert(
                (*node).to_owned(),
                prepare(ctx, topo.ns(node), &network, &extra)?,
            );
        }
        let mut office = Office {
            ctx,
            agents: BTreeMap::new(),
            topo,
            network,
            files,
            template: String::new(),
        };
        office.set_definition(template)?;
        office.start_agents()?;
        Ok(office)
    }

    /// [`Office::start_in`] with one gateway on [`default_route_granted`], in `spec` and beside
    /// the office the Internet and the laptop's home: gw1 `eth1` ([`GW_EGRESS`]) is linked to
    /// `internet` `eth0` ([`UPSTREAM`]), which is gw1's default route, and the laptop's `eth1`
    /// ([`LAPTOP_HOME`]) to `home` `eth0` ([`HOME_ROUTER`]). `spec` adds what the scenario's
    /// Internet and home need beyond that.
    pub fn start_default_route(ctx: &'c Ctx, mut spec: TopologySpec) -> anyhow::Result<Self> {
        spec.node("internet")
            .node("home")
            .link(("gw1", "eth1"), ("internet", "eth0"))
            .link(("sender", "eth1"), ("home", "eth0"))
            .addr("gw1", "eth1", &format!("{GW_EGRESS}/24"))
            .addr("internet", "eth0", &format!("{UPSTREAM}/24"))
            .addr("sender", "eth1", &format!("{LAPTOP_HOME}/24"))
            .addr("home", "eth0", &format!("{HOME_ROUTER}/24"));
        let office = Self::start_in(ctx, spec, 1, &default_route_granted(), &[])?;
        office
            .ns("gw1")
            .exec(&["ip", "route", "add", "default", "via", UPSTREAM])?;
        Ok(office)
    }

    /// Starts (or starts again) every node's agent: the gateways, then the laptop.
    pub fn start_agents(&mut self) -> anyhow::Result<()> {
        let gateways = self.files.len() - 1;
        for node in ["gw1", "gw2"].into_iter().take(gateways) {
            self.start_agent(node, SpawnOpts::default())?;
        }
        self.start_agent("sender", SpawnOpts::default())
    }

    /// Stops the agent of `node` (SIGTERM, so that it cleans up) and starts it again.
    pub fn restart_agent(&mut self, node: &str) -> anyhow::Result<()> {
        self.agent(node)?.stop();
        self.start_agent(node, SpawnOpts::default())
    }

    /// Starts (or restarts) the agent of `node`.
    ///
    /// An agent on the external data plane is pinned to wireguard-go: `WG_USERSPACE_IMPLEMENTATION`
    /// names it by its full path, and the agent's log must say it started that program, so a
    /// host whose WireGuard kernel module is loaded fails the scenario instead of testing the
    /// module by accident. (The line [`KERNEL_MODULE`] in the node's extra configuration asks
    /// for the module instead: then the agent must not start a program.)
    pub fn start_agent(&mut self, node: &str, mut opts: SpawnOpts) -> anyhow::Result<()> {
        let files = &self.files[node];
        let config = std::fs::read_to_string(&files.config)?;
        let external = config.contains("dataplane = \"external\"");
        let kernel = config.contains(KERNEL_MODULE);
        let mut pinned = None;
        if external && !kernel && !opts.env.contains_key("WG_USERSPACE_IMPLEMENTATION") {
            let program = enclave_netns::which("wireguard-go").context(
                "wireguard-go is not installed; the external-data-plane scenarios need it \
                 (`cargo xtask ci` installs the test packages)",
            )?;
            let program = program.to_string_lossy().into_owned();
            opts = opts.env("WG_USERSPACE_IMPLEMENTATION", &program);
            pinned = Some(program);
        }
        // A restarted agent appends to its log: only what this start printed counts.
        let label = if node == "sender" {
            "enclave-agent"
        } else {
            "enclave-gw"
        };
        let log = self.ctx.log_dir().join(format!("{label}-{node}.log"));
        let offset = std::fs::metadata(&log).map_or(0, |m| m.len());
        let process = start_with(self.ctx, self.topo.ns(node), files, node != "sender", opts)?;
        let this_start = || {
            let text = process.log();
            text.get(usize::try_from(offset).unwrap_or(0)..)
                .unwrap_or_default()
                .to_owned()
        };
        const STARTED: &str = "started the external WireGuard";
        if let Some(program) = pinned {
            let started = wait_until(Duration::from_secs(5), || {
                this_start()
                    .lines()
                    .any(|l| l.contains(STARTED) && l.contains(&program))
            });
            anyhow::ensure!(
                started,
                "{node}'s agent did not start {program}: the external data plane must run on \
                 wireguard-go here (a loaded kernel module would be used instead); its log:\n{}",
                this_start()
            );
        }
        if external && kernel {
            anyhow::ensure!(
                !this_start().contains(STARTED),
                "{node}'s agent started a userspace WireGuard although the kernel module was \
                 asked for:\n{}",
                this_start()
            );
        }
        self.agents.insert(node.to_owned(), process);
        Ok(())
    }

    /// Writes `template` (keys filled in) as the definition.
    pub fn set_definition(&mut self, template: &str) -> anyhow::Result<()> {
        let mut text = template.to_owned();
        for (node, system) in SYSTEMS {
            if let Some(files) = self.files.get(node) {
                text = text.replace(&format!("KEY({system})"), &files.public_key);
            }
        }
        write_definition(&self.network, &text)?;
        self.template = template.to_owned();
        Ok(())
    }

    /// The namespace of `node`.
    pub fn ns(&self, node: &str) -> &Netns {
        self.topo.ns(node)
    }

    /// `enclave-agent status` of `node`.
    pub fn status(&self, node: &str) -> String {
        status(self.ctx, self.ns(node), &self.files[node])
            .unwrap_or_else(|e| format!("(no status: {e:#})"))
    }

    /// [`Office::start`] on [`office_ips_definition`] with `range`, where the laptop's public
    /// address (10.10.0.2) is not: returns once the gateway says that it suspended the grant.
    pub fn start_untrusted(ctx: &'c Ctx, tag: &str, range: &str) -> anyhow::Result<Self> {
        let office = Self::start(ctx, tag, 1, &office_ips_definition(range), &[])?;
        office.wait_for_status(
            "gw1",
            "suspended",
            Duration::from_secs(3),
            "the gateway's status does not say the grant is suspended",
        )?;
        Ok(office)
    }

    /// Checks that `node`'s status contains `text` now; the error says `what` and shows the
    /// status.
    pub fn expect_status(&self, node: &str, text: &str, what: &str) -> anyhow::Result<()> {
        let status = self.status(node);
        anyhow::ensure!(status.contains(text), "{what}:\n{status}");
        Ok(())
    }

    /// Waits up to `within` until `node`'s status contains `text`; the error says `what` was not
    /// seen and shows the status.
    pub fn wait_for_status(
        &self,
        node: &str,
        text: &str,
        within: Duration,
        what: &str,
    ) -> anyhow::Result<()> {
        if enclave_netns::wait_until(within, || self.status(node).contains(text)) {
            return Ok(());
        }
        anyhow::bail!(
            "{what} (no {text:?} within {within:?}):\n{}",
            self.status(node)
        )
    }

    /// Whether the laptop has our route to `subnet`; an error when `ip route` could not list,
    /// so that a failed listing never reads as "no route".
    pub fn sender_has_route(&self, subnet: &str) -> enclave_netns::Result<bool> {
        let routes = self.ns("sender").exec(&["ip", "route", "show", subnet])?;
        Ok(routes.contains("dev enclave0"))
    }

    /// Waits until the laptop has our route to the LAN.
    pub fn wait_for_route(&self) -> anyhow::Result<()> {
        if try_wait_until(Duration::from_secs(5), || self.sender_has_route(LAN))? {
            return Ok(());
        }
        anyhow::bail!(
            "the laptop got no route to {LAN} within 5 s; its status:\n{}",
            self.status("sender")
        )
    }

    /// Waits until the laptop has our route to the LAN and `dst` answers it through the tunnel
    /// (within `within`): the office at work again after a start or a change.
    pub fn wait_reaching(&self, dst: &str, within: Duration) -> anyhow::Result<()> {
        self.wait_for_route()?;
        self.until_reach(dst, true, within)?;
        Ok(())
    }

    /// Whether one ping from the laptop to `dst` is answered within a second; an error when
    /// ping could not run (never a "no").
    pub fn reaches(&self, dst: &str) -> anyhow::Result<bool> {
        Ok(self.ns("sender").ping_once(dst)?)
    }

    /// A "cannot reach" check with its positive control: the same probe (one ping from the
    /// laptop) must reach `allowed` and must not reach `denied`. `what` says why `denied`
    /// must stay unreachable, for the error.
    pub fn reaches_only(&self, allowed: &str, denied: &str, what: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.reaches(allowed)?,
            "positive control failed: {allowed} does not answer the laptop, so the check that \
             {denied} does not ({what}) would prove nothing; laptop status:\n{}",
            self.status("sender")
        );
        anyhow::ensure!(
            !self.reaches(denied)?,
            "{denied} answered the laptop: {what}; laptop status:\n{}",
            self.status("sender")
        );
        Ok(())
    }

    /// Pings `dst` from the laptop every 50 ms until `want` (answered or not) holds, within
    /// `timeout`; returns how long it took. A ping that could not run is an error at once.
    pub fn until_reach(
        &self,
        dst: &str,
        want: bool,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        match self.poll_reach(dst, want, timeout)? {
            Some(took) => Ok(took),
            None => anyhow::bail!(
                "{dst} {} within {} s; laptop status:\n{}",
                if want {
                    "never answered"
                } else {
                    "kept answering"
                },
                timeout.as_secs_f64(),
                self.status("sender")
            ),
        }
    }

    /// [`Office::until_reach`] that says `None` when `want` did not come within `timeout`, for
    /// checks that expect it not to; a ping that could not run is still an error.
    pub fn poll_reach(
        &self,
        dst: &str,
        want: bool,
        timeout: Duration,
    ) -> anyhow::Result<Option<Duration>> {
        let started = Instant::now();
        let argv = ["ping", "-n", "-c", "1", "-W", "0.2", dst];
        while started.elapsed() < timeout {
            let output = self.ns("sender").exec_output(&argv)?;
            let answered = PingResult::from_output(&argv.join(" "), &output)?.received > 0;
            if answered == want {
                return Ok(Some(started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(None)
    }

    /// `enclave-agent status --json` of `node`.
    pub fn status_json(&self, node: &str) -> Option<serde_json::Value> {
        status_json(self.ctx, self.ns(node), &self.files[node]).ok()
    }

    /// The gateway the laptop uses for the LAN now, from `enclave-agent status --json`.
    pub fn active_gateway(&self) -> Option<String> {
        let status = self.status_json("sender")?;
        status["routes"]
            .as_array()?
            .iter()
            .find(|r| r["subnet"] == LAN)?["gateway"]
            .as_str()
            .map(str::to_owned)
    }

    /// The agent process of `node`.
    pub fn agent(&mut self, node: &str) -> anyhow::Result<&mut Process> {
        self.agents
            .get_mut(node)
            .with_context(|| format!("no agent runs on {node}"))
    }

    /// The generation of the definition `node`'s agent has applied (`definition_generation`
    /// in `status --json`).
    pub fn definition_generation(&self, node: &str) -> Option<u64> {
        self.status_json(node)?["definition_generation"].as_u64()
    }

    /// Waits until the agents of `nodes` report that they applied a definition (their
    /// `definition_generation` is at least 1): what a "nothing happened" check waits for
    /// instead of sleeping after the start.
    pub fn wait_applied(&self, nodes: &[&str]) -> anyhow::Result<()> {
        for node in nodes {
            let applied = wait_until(Duration::from_secs(10), || {
                self.definition_generation(node).is_some_and(|g| g >= 1)
            });
            anyhow::ensure!(
                applied,
                "{node} did not report an applied definition within 10 s; its status:\n{}",
                self.status(node)
            );
        }
        Ok(())
    }

    /// Writes `template` and waits until the agents of `nodes` report they applied it (their
    /// definition generation grew), instead of sleeping.
    pub fn set_definition_applied(&mut self, template: &str, nodes: &[&str]) -> anyhow::Result<()> {
        let mut before = BTreeMap::new();
        for node in nodes {
            let generation = self
                .definition_generation(node)
                .with_context(|| format!("{node}'s status has no definition_generation"))?;
            before.insert(*node, generation);
        }
        self.set_definition(template)?;
        for (node, generation) in before {
            let applied = wait_until(Duration::from_secs(5), || {
                self.definition_generation(node)
                    .is_some_and(|now| now > generation)
            });
            if !applied {
                anyhow::bail!(
                    "{node} did not apply the edited definition within 5 s; its status:\n{}",
                    self.status(node)
                );
            }
        }
        Ok(())
    }
}
