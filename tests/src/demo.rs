//! `cargo xtask demo`: the product shown live, step by step, in network namespaces.
//!
//! A sender laptop, the two gateways of the "Menlo Park Office" (`menlo-gw-1`, `menlo-gw-2`) on
//! the office LAN 192.168.77.0/24 with a printer (.10) and two domain controllers (.20, .21),
//! and `egress-gw`, which carries the laptop's default route to an "internet" host. The control
//! server `enclave-control` runs in a namespace of its own, and the demo walks the guide's steps
//! with it: enrolment keys, each system enrolled from its own host (its key pair made there),
//! the gateways approved and allowed to act as gateways, their discovered subnets, the gateway
//! access policies with the subnet filter; then the agents get their views from the server.
//! Each step prints `==> step N: …`, then the real commands it runs and their output, indented;
//! a step that does not do what it claims fails the demo and says why.
//!
//! Ctrl-C (SIGINT) or SIGTERM at any point sets a flag that every wait checks; the demo then
//! unwinds, and dropping the topology ends the agents and removes the namespaces. A second
//! Ctrl-C exits at once (`enclave-scenarios clean` then removes what was left).
//!
//! With `--keep` the demo stays up after its steps, the killed gateway started again, until
//! Ctrl-C: it makes a portal account and forwards a port on the host's 127.0.0.1 to the
//! server's port in its namespace ([`crate::forward`]: no route, address or firewall rule on
//! the host), and prints the address and the sign-in.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use enclave_netns::{Netns, Process, SpawnOpts, Topology, TopologySpec};

use crate::agents::{self, AgentFiles};
use crate::control_fixture::{
    admin_token, cli_output, enrol, enrolment_key, start_server_on, Server,
};
use crate::Ctx;

/// The office LAN.
const LAN: &str = "192.168.77.0/24";
/// The printer, outside the subnet filter.
const PRINTER: &str = "192.168.77.10";
/// The domain controllers, inside the subnet filter.
const DCS: [&str; 2] = ["192.168.77.20", "192.168.77.21"];
/// The "internet" host behind `egress-gw`.
const INTERNET_HOST: &str = "198.51.100.10";
/// The control server's node and its address on the underlay.
const CONTROL: &str = "ctl";
const CONTROL_ADDR: &str = "10.10.0.200";
const CONTROL_PORT: u16 = 8443;
/// The policy file the administrator writes (the guide's step 4).
const POLICY_FILE: &str = "policies.toml";

/// One system of the demo: its node in the topology, its name on the control server, its
/// underlay address. Its virtual address is the one the server allocates when it enrols.
struct System {
    node: &'static str,
    name: &'static str,
    underlay: &'static str,
}

const LAPTOP: System = System {
    node: "laptop",
    name: "laptop",
    underlay: "10.10.0.100",
};
const GATEWAYS: [System; 3] = [
    System {
        node: "gw1",
        name: "menlo-gw-1",
        underlay: "10.10.0.1",
    },
    System {
        node: "gw2",
        name: "menlo-gw-2",
        underlay: "10.10.0.2",
    },
    System {
        node: "egress",
        name: "egress-gw",
        underlay: "10.10.0.3",
    },
];
/// The Menlo Park gateways' addresses on the office LAN, in the order of [`GATEWAYS`].
const GW_LAN: [&str; 2] = ["192.168.77.1", "192.168.77.2"];
/// `egress-gw`'s address on the "internet" side.
const EGRESS_OUT: &str = "198.51.100.1";

/// The portal account `--keep` makes.
const PORTAL_USER: &str = "admin";
/// The host's port `--keep` forwards to the server (another free one when it is taken).
const PORTAL_PORT: u16 = 8443;

/// Runs the demo. Returns an error naming the step that did not do what it claims, or the
/// interruption; everything it made is removed either way.
pub fn run(ctx: &Ctx) -> anyhow::Result<()> {
    run_with(ctx, false)
}

/// [`run`]; with `keep`, keeps the demo running after its steps until Ctrl-C, with its portal
/// open to the host's browser.
pub fn run_with(ctx: &Ctx, keep: bool) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // The first signal sets the flag; a second one, while the flag is set, exits at once.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
            .context("cannot install the signal handlers")?;
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install the signal handlers")?;
    }
    let mut demo = Demo {
        ctx,
        stop,
        steps: Vec::new(),
        keep,
        portal_password: None,
    };
    println!(
        "Enclave gateway demo: a control server enrols a laptop and three gateways; the laptop \
         reaches the Menlo Park Office through two of them, and the Internet through the third \
         (logs in {})",
        ctx.log_dir().display()
    );
    let outcome = demo.play();
    println!("\n==> what was shown");
    for (number, (title, result)) in demo.steps.iter().enumerate() {
        let verdict = match result {
            Some(Ok(())) => "ok".to_owned(),
            Some(Err(reason)) => format!("FAILED: {reason}"),
            None => "not finished".to_owned(),
        };
        println!("    step {:2}: {title:72} {verdict}", number + 1);
    }
    if outcome.is_ok() && keep {
        println!("\nevery step did what it claims; after Ctrl-C everything was torn down");
    } else if outcome.is_ok() {
        println!("\nevery step did what it claims; everything was torn down");
    } else if demo.stop.load(Ordering::Relaxed) {
        println!("\ninterrupted: the agents were ended and the namespaces removed");
    }
    outcome
}

struct Demo<'c> {
    ctx: &'c Ctx,
    stop: Arc<AtomicBool>,
    /// Each step's title and outcome (`None` while it runs, or when it was interrupted).
    steps: Vec<(String, Option<Result<(), String>>)>,
    /// Keep running after the steps, until Ctrl-C (`--keep`).
    keep: bool,
    /// The portal account's password, made with `--keep`.
    portal_password: Option<String>,
}

/// What the setup made: the topology, the control server and the running agents.
struct Stage {
    /// Agent processes by node; dropped (ended) first, then the server, then the topology.
    agents: BTreeMap<&'static str, Process>,
    server: Server,
    /// The admin token and the server's binary, for `enclave-control` commands.
    token: String,
    control: PathBuf,
    files: BTreeMap<&'static str, AgentFiles>,
    /// Virtual addresses by node, as the server allocated them.
    overlay: BTreeMap<&'static str, String>,
    topo: Topology,
}

impl Stage {
    fn ns(&self, node: &str) -> &Netns {
        self.topo.ns(node)
    }
}

impl Demo<'_> {
    fn play(&mut self) -> anyhow::Result<()> {
        let mut stage = self.setup()?;
        let mut outcome = self.scenes(&mut stage);
        if outcome.is_ok() && self.keep {
            outcome = self.kept(&mut stage);
        }
        let teardown = self.teardown(stage);
        outcome.and(teardown)
    }

    /// Starts step `title`: prints its progress line and records it.
    fn begin(&mut self, title: &str) -> anyhow::Result<()> {
        self.interrupted()?;
        self.steps.push((title.to_owned(), None));
        println!("\n==> step {}: {title}", self.steps.len());
        Ok(())
    }

    /// Ends the current step: records its outcome and turns a failure into an error that names
    /// the step.
    fn end<T>(&mut self, outcome: anyhow::Result<T>) -> anyhow::Result<T> {
        let number = self.steps.len();
        let Some((title, result)) = self.steps.last_mut() else {
            return outcome;
        };
        match outcome {
            Ok(value) => {
                *result = Some(Ok(()));
                println!("    ok");
                Ok(value)
            }
            Err(err) if self.stop.load(Ordering::Relaxed) => {
                Err(err.context(format!("interrupted during step {number} ({title})")))
            }
            Err(err) => {
                // The summary keeps the reason's first line; the error has it all.
                let reason = format!("{err:#}");
                *result = Some(Err(reason.lines().next().unwrap_or_default().to_owned()));
                Err(err.context(format!("step {number} ({title}) did not do what it claims")))
            }
        }
    }

    /// An error when Ctrl-C (or SIGTERM) arrived.
    fn interrupted(&self) -> anyhow::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted (SIGINT/SIGTERM)");
        }
        Ok(())
    }

    /// Polls `condition` every 50 ms until it holds (true) or `timeout` passes (false); an
    /// interruption is an error.
    fn wait(&self, timeout: Duration, mut condition: impl FnMut() -> bool) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            self.interrupted()?;
            if condition() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `argv` in `ns`, showing the command and its output indented; returns its exit
    /// success and standard output.
    fn show(&self, ns: &Netns, argv: &[&str]) -> anyhow::Result<(bool, String)> {
        self.interrupted()?;
        println!("    [{}]# {}", ns.node(), shown(argv));
        let output = ns.exec_output(argv)?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        indent(&stdout);
        indent(&String::from_utf8_lossy(&output.stderr));
        self.interrupted()?;
        Ok((output.status.success(), stdout))
    }

    // ----- --keep -----

    /// `admin user create` with a fresh random password, which it returns.
    fn portal_account(
        &self,
        ns: &Netns,
        control: &Path,
        database: &str,
        state: &Path,
    ) -> anyhow::Result<String> {
        use base64::Engine as _;
        let mut random = [0u8; 12];
        getrandom(&mut random)?;
        let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
        let file = state.join("portal-password");
        std::fs::write(&file, format!("{password}\n"))?;
        println!(
            "    [{CONTROL}]# enclave-control admin user create {PORTAL_USER} --database {database} --password-file {}",
            file.display()
        );
        let made = crate::control_fixture::create_portal_account(
            ns,
            control,
            database,
            PORTAL_USER,
            &file,
        );
        // The file held the password only for the command.
        let _ = std::fs::remove_file(&file);
        indent(&made?);
        Ok(password)
    }

    /// After the steps: the killed gateway started again, the portal forwarded to the host's
    /// loopback, then waits for Ctrl-C.
    fn kept(&mut self, stage: &mut Stage) -> anyhow::Result<()> {
        self.begin("keep running: start the killed gateway again, open the portal to this host")?;
        let outcome = self.restart_killed(stage);
        self.end(outcome)?;
        let target: SocketAddr = format!("{CONTROL_ADDR}:{CONTROL_PORT}").parse()?;
        let forwarder = crate::forward::Forwarder::start(stage.ns(CONTROL), target, PORTAL_PORT)?;
        let port = forwarder.port();
        let password = self.portal_password.clone().unwrap_or_default();
        let namespace = stage.ns(CONTROL).name();
        let fingerprint = &stage.server.at.fingerprint;
        println!("\n==> the demo keeps running: open its portal in this host's browser\n");
        println!("    https://127.0.0.1:{port}/portal/\n");
        println!("    sign in as {PORTAL_USER}, password {password}\n");
        println!("    The certificate is the server's own, self-signed: check that your browser");
        println!("    shows the fingerprint {fingerprint}");
        println!(
            "    before you accept it. 127.0.0.1:{port} is forwarded by this process into the"
        );
        println!("    namespace {namespace} (to {target}); nothing on this host's routes or");
        println!("    firewall was changed.");
        println!("    Try it: the Systems page updates by itself; kill an office gateway's agent");
        println!(
            "    (kill -9 PID, the PIDs are below) and watch the laptop move to the other one."
        );
        for (node, process) in &stage.agents {
            println!("      {node:7} agent PID {}", process.pid());
        }
        println!("\n    Ctrl-C stops the demo and removes everything it made.");
        while !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("\n==> Ctrl-C: closing the portal's port {port}");
        drop(forwarder);
        Ok(())
    }

    /// Starts again the agent of the office gateway that the failover step killed.
    fn restart_killed(&self, stage: &mut Stage) -> anyhow::Result<()> {
        for system in &GATEWAYS {
            let running = stage
                .agents
                .get_mut(system.node)
                .is_some_and(Process::is_running);
            if running {
                continue;
            }
            let process = self.start_agent(stage, system.node, true)?;
            println!(
                "    {} enclave-gw run again (PID {})",
                system.name,
                process.pid()
            );
            stage.agents.insert(system.node, process);
        }
        Ok(())
    }

    // ----- setup -----

    fn setup(&mut self) -> anyhow::Result<Stage> {
        self.begin(
            "build the namespaces: control server, laptop, 3 gateways, office LAN, internet host",
        )?;
        let built = self.build();
        let topo = self.end(built)?;

        self.begin(
            "start enclave-control in its own namespace (SQLite, a self-signed certificate)",
        )?;
        let started = self.start_control(&topo);
        let (server, token, control) = self.end(started)?;
        let mut stage = Stage {
            agents: BTreeMap::new(),
            server,
            token,
            control,
            files: BTreeMap::new(),
            overlay: BTreeMap::new(),
            topo,
        };

        self.begin("guide step 1: create enrolment keys for users (automatic approval) and gateways (manual)")?;
        let keys = self.enrolment_keys(&stage);
        let (user_key, gateway_key) = self.end(keys)?;

        self.begin("enrol the laptop and the three gateways, each from its own host")?;
        let outcome = self.enrol_all(&mut stage, &user_key, &gateway_key);
        self.end(outcome)?;

        self.begin("approve the gateways")?;
        let outcome = self.approve_gateways(&stage);
        self.end(outcome)?;

        self.begin("start enclave-gw on the three gateways, then enclave-agent on the laptop")?;
        let outcome = self.start_agents(&mut stage);
        self.end(outcome)?;

        self.begin(
            "guide step 2: allow the gateways to act as gateways; their subnets are discovered",
        )?;
        let outcome = self.allow_gateways(&stage);
        self.end(outcome)?;

        self.begin(
            "guide step 3: Remove Subnet (the office gateways' underlay), Add subnet 0.0.0.0/0 to egress-gw",
        )?;
        let outcome = self.edit_subnets(&stage);
        self.end(outcome)?;

        self.begin("guide step 4: the gateway access policies, with the subnet filter")?;
        let outcome = self.policies(&stage);
        self.end(outcome)?;
        Ok(stage)
    }

    /// `admin token create` on the database, then `enclave-control run`.
    fn start_control(&mut self, topo: &Topology) -> anyhow::Result<(Server, String, PathBuf)> {
        let ns = topo.ns(CONTROL);
        let control = self.ctx.bin("enclave-control")?;
        let state = self.ctx.log_dir().join("control");
        std::fs::create_dir_all(&state)?;
        let database = format!("sqlite://{}/control.db", state.display());
        println!(
            "    [{CONTROL}]# enclave-control admin token create --database {database} --name demo"
        );
        let token = admin_token(ns, &control, &database, &["--name", "demo"])?;
        println!("      ent_… (printed once; the demo keeps it for the commands below)");
        if self.keep {
            self.portal_password = Some(self.portal_account(ns, &control, &database, &state)?);
        }
        println!(
            "    [{CONTROL}]# enclave-control run --database {database} --listen {CONTROL_ADDR}:{CONTROL_PORT}"
        );
        let server = start_server_on(
            ns,
            &control,
            "enclave-control",
            &database,
            (CONTROL_ADDR, CONTROL_PORT),
            &state,
            &[],
        )?;
        indent(&server.process.log());
        Ok((server, token, control))
    }

    /// Runs `enclave-control ARGS` in the control server's namespace (with the server, its
    /// fingerprint and the admin token in the environment), showing it; its exit success and
    /// output.
    fn control_output(&self, stage: &Stage, args: &[&str]) -> anyhow::Result<(bool, String)> {
        self.interrupted()?;
        println!("    [{CONTROL}]# enclave-control {}", args.join(" "));
        let output = control_command(stage, args)?;
        // What the command says about its output (stderr) reads best before the output itself
        // (a key that is "shown only now").
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        indent(&String::from_utf8_lossy(&output.stderr));
        indent(&stdout);
        Ok((output.status.success(), stdout))
    }

    /// [`Self::control_output`] that must succeed.
    fn control(&self, stage: &Stage, args: &[&str]) -> anyhow::Result<String> {
        let (ok, out) = self.control_output(stage, args)?;
        if !ok {
            bail!("`enclave-control {}` failed", args.join(" "));
        }
        Ok(out)
    }

    fn enrolment_keys(&self, stage: &Stage) -> anyhow::Result<(String, String)> {
        let key = |out: String| enrolment_key(&out);
        let users = key(self.control(
            stage,
            &["keys", "create", "--tags", "users", "--approval", "auto"],
        )?)?;
        let gateways = key(self.control(
            stage,
            &[
                "keys",
                "create",
                "--tags",
                "gateways",
                "--approval",
                "manual",
                "--uses",
                "3",
                "--expires",
                "1h",
            ],
        )?)?;
        Ok((users, gateways))
    }

    fn enrol_all(
        &self,
        stage: &mut Stage,
        user_key: &str,
        gateway_key: &str,
    ) -> anyhow::Result<()> {
        for system in GATEWAYS.iter().chain([&LAPTOP]) {
            let gateway = system.node != LAPTOP.node;
            let (program, key) = if gateway {
                ("enclave-gw", gateway_key)
            } else {
                ("enclave-agent", user_key)
            };
            println!(
                "    [{}]# {program} enrol --server {} --fingerprint … --key enk_… --hostname {}",
                system.node, stage.server.at.url, system.name
            );
            self.interrupted()?;
            let enrolment = enrol(
                self.ctx,
                stage.ns(system.node),
                gateway,
                &stage.server.at,
                key,
                system.name,
            )?;
            indent(&enrolment.output);
            stage.files.insert(system.node, enrolment.files);
        }
        let list = self.control(stage, &["systems", "list"])?;
        for gw in &GATEWAYS {
            let pending = list
                .lines()
                .any(|l| l.starts_with(gw.name) && l.contains("pending"));
            if !pending {
                bail!(
                    "{} is not pending approval after enrolling with a manual key",
                    gw.name
                );
            }
        }
        let json = self.control_quiet(stage, &["systems", "list", "--json"])?;
        let systems: serde_json::Value =
            serde_json::from_str(&json).context("systems list --json is not JSON")?;
        for system in GATEWAYS.iter().chain([&LAPTOP]) {
            let address = systems
                .as_array()
                .and_then(|list| list.iter().find(|s| s["name"] == system.name))
                .and_then(|s| s["address"].as_str())
                .with_context(|| format!("{} is not on the server", system.name))?;
            stage.overlay.insert(system.node, address.to_owned());
        }
        Ok(())
    }

    /// `enclave-control ARGS` without showing it (for what the demo reads, not what it shows).
    fn control_quiet(&self, stage: &Stage, args: &[&str]) -> anyhow::Result<String> {
        let output = control_command(stage, args)?;
        if !output.status.success() {
            bail!(
                "`enclave-control {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn approve_gateways(&self, stage: &Stage) -> anyhow::Result<()> {
        for gw in &GATEWAYS {
            // No endpoint to give: peers get the address the server sees the agent at.
            self.control(stage, &["systems", "approve", gw.name])?;
        }
        let list = self.control(stage, &["systems", "list"])?;
        if list.contains("pending") {
            bail!("a system is still pending");
        }
        Ok(())
    }

    fn allow_gateways(&self, stage: &Stage) -> anyhow::Result<()> {
        for gw in &GATEWAYS {
            self.control(stage, &["systems", "gateway", gw.name, "on"])?;
        }
        println!("    waiting for both office gateways to report {LAN} on lan0");
        let reported = self.wait(Duration::from_secs(15), || {
            self.control_quiet(stage, &["subnets", "list"])
                .is_ok_and(|list| {
                    GATEWAYS[..2].iter().all(|gw| {
                        list.lines().any(|l| {
                            l.starts_with(gw.name) && l.contains(LAN) && l.contains("lan0")
                        })
                    })
                })
        })?;
        self.control(stage, &["subnets", "list"])?;
        if !reported {
            bail!("the office gateways' discovered {LAN} did not reach the server within 15 s");
        }
        Ok(())
    }

    /// Discovery offers every subnet a gateway is on; the office gateways must not route senders
    /// into their underlay segment, and egress-gw is meant for the Internet.
    fn edit_subnets(&self, stage: &Stage) -> anyhow::Result<()> {
        let underlay = "10.10.0.0/24";
        for gw in &GATEWAYS[..2] {
            self.control(stage, &["subnets", "remove", gw.name, underlay])?;
        }
        self.control(stage, &["subnets", "add", GATEWAYS[2].name, "0.0.0.0/0"])?;
        let list = self.control(stage, &["subnets", "list"])?;
        for gw in &GATEWAYS[..2] {
            let removed = list
                .lines()
                .any(|l| l.starts_with(gw.name) && l.contains(underlay) && l.contains("removed"));
            if !removed {
                bail!("{} still serves {underlay}", gw.name);
            }
        }
        Ok(())
    }

    fn policies(&self, stage: &Stage) -> anyhow::Result<()> {
        let file = self.ctx.log_dir().join(POLICY_FILE);
        let text = policy_file();
        std::fs::write(&file, &text)?;
        println!("    {POLICY_FILE}:");
        indent(&text);
        let path = file.to_string_lossy().into_owned();
        self.control(stage, &["policies", "put", path.as_str()])?;
        self.control(stage, &["policies", "list"])?;
        let laptop = stage.ns(LAPTOP.node);
        println!("    waiting for the laptop's route to {LAN} through the tunnel");
        let routed = self.wait(Duration::from_secs(10), || {
            has_tunnel_route(laptop, &["route", "show", LAN])
        })?;
        if !routed {
            bail!(
                "the laptop did not get its routes through the tunnel within 10 s; its status:\n{}",
                self.status_text(stage, LAPTOP.node)
            );
        }
        self.show(laptop, &["ip", "route", "show", "dev", "enclave0"])?;
        // Each agent applies its new view when it arrives; a gateway that got its view after
        // the laptop's first handshake attempt answers the next one (within about a second).
        println!("    waiting for the laptop's tunnels to the three gateways to come up");
        let started = Instant::now();
        let up = self.wait(Duration::from_secs(10), || {
            self.status_json(stage, LAPTOP.node).is_ok_and(|status| {
                GATEWAYS.iter().all(|gw| {
                    status["peers"].as_array().is_some_and(|peers| {
                        peers
                            .iter()
                            .any(|p| p["name"] == gw.name && p["state"] == "Up")
                    })
                })
            })
        })?;
        if !up {
            bail!(
                "the laptop's tunnels to the gateways did not all come up within 10 s; its status:\n{}",
                self.status_text(stage, LAPTOP.node)
            );
        }
        println!(
            "    all three up {:.2} s after the routes",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn build(&self) -> anyhow::Result<Topology> {
        let topo = self.ctx.topology(&topology())?;
        for ns in topo.nodes() {
            println!("    {:7} {}", ns.node(), ns.name());
        }
        let (_, listed) =
            self.show(topo.ns("lan"), &["ip", "-brief", "address", "show", "eth0"])?;
        if !DCS
            .iter()
            .chain([&PRINTER])
            .all(|a| listed.contains(&format!("{a}/24")))
        {
            bail!("the office LAN namespace lacks its addresses");
        }
        Ok(topo)
    }

    fn start_agents(&self, stage: &mut Stage) -> anyhow::Result<()> {
        for system in GATEWAYS.iter().chain([&LAPTOP]) {
            let gateway = system.node != LAPTOP.node;
            let process = self.start_agent(stage, system.node, gateway)?;
            println!(
                "    {:11} {} run (PID {}), log {}",
                system.name,
                crate::agents::program(gateway),
                process.pid(),
                process.log_path().display()
            );
            stage.agents.insert(system.node, process);
        }
        // The server shows them connected.
        let connected = self.wait(Duration::from_secs(10), || {
            self.control_quiet(stage, &["systems", "list", "--json"])
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|list| {
                    list.as_array().map(|systems| {
                        systems.len() == 4 && systems.iter().all(|s| s["connected"] == true)
                    })
                })
                .unwrap_or(false)
        })?;
        self.control(stage, &["systems", "list"])?;
        if !connected {
            bail!("not every agent shows as connected on the server within 10 s");
        }
        Ok(())
    }

    /// Starts the agent of `node` and waits until it answers `status`.
    fn start_agent(&self, stage: &Stage, node: &str, gateway: bool) -> anyhow::Result<Process> {
        let ns = stage.ns(node);
        let files = &stage.files[node];
        let program = crate::agents::program(gateway);
        let bin = self.ctx.bin(program)?.to_string_lossy().into_owned();
        let config = files.config.to_string_lossy().into_owned();
        let argv = [bin.as_str(), "run", "-c", config.as_str(), "-v", "3"];
        let mut process = ns.spawn(&format!("{program}-{node}"), &argv, SpawnOpts::default())?;
        let agent = self
            .ctx
            .bin("enclave-agent")?
            .to_string_lossy()
            .into_owned();
        let up = self.wait(Duration::from_secs(10), || {
            ns.exec(&[agent.as_str(), "status", "-c", config.as_str(), "--json"])
                .is_ok()
        })?;
        if !up {
            bail!(
                "{program} on {node} did not answer status within 10 s (running: {}); log:\n{}",
                process.is_running(),
                process.log()
            );
        }
        Ok(process)
    }

    // ----- the scenes -----

    fn scenes(&mut self, stage: &mut Stage) -> anyhow::Result<()> {
        let laptop = stage.ns(LAPTOP.node);
        let menlo1 = &GATEWAYS[0];

        let menlo1_overlay = stage
            .overlay
            .get(menlo1.node)
            .cloned()
            .context("no virtual address for menlo-gw-1")?;
        self.begin(&format!(
            "ping {}'s virtual address {menlo1_overlay} (allocated by the server) from the laptop",
            menlo1.name
        ))?;
        let outcome = self.ping_expect(laptop, &menlo1_overlay, 3, true);
        self.end(outcome)?;

        self.begin(&format!(
            "ping the domain controller {} through the gateway",
            DCS[0]
        ))?;
        let outcome = self.reach_dc(stage);
        self.end(outcome)?;

        self.begin(&format!(
            "the printer {PRINTER} is refused by the subnet filter"
        ))?;
        let outcome = self.printer_refused(stage);
        self.end(outcome)?;

        self.begin(&format!(
            "reach the internet host {INTERNET_HOST} through egress-gw's default route"
        ))?;
        let outcome = self.internet(stage);
        self.end(outcome)?;

        self.begin("`enclave-agent status` on the laptop shows \"Gateway for\"")?;
        let outcome = self.status_step(stage);
        self.end(outcome)?;

        self.begin("the active gateway's `nft list table ip enclave`: counters move")?;
        let outcome = self.counters(stage);
        self.end(outcome)?;

        self.begin("kill the active gateway by PID: traffic continues through the other")?;
        let outcome = self.failover(stage);
        self.end(outcome)
    }

    /// Pings `dst` `count` times from `ns`; `answered` says whether every request must be
    /// answered, or none.
    fn ping_expect(&self, ns: &Netns, dst: &str, count: u32, answered: bool) -> anyhow::Result<()> {
        let count_arg = count.to_string();
        let (_, out) = self.show(
            ns,
            &["ping", "-n", "-c", &count_arg, "-i", "0.2", "-W", "1", dst],
        )?;
        let result = enclave_netns::PingResult::parse(&out);
        if result.transmitted != count {
            bail!("ping sent {} requests, not {count}", result.transmitted);
        }
        match (answered, result.received) {
            (true, n) if n == count => Ok(()),
            (true, n) => bail!("{dst} answered {n} of {count} pings"),
            (false, 0) => {
                println!("    -> no reply: refused");
                Ok(())
            }
            (false, n) => bail!("{dst} answered {n} of {count} pings, but it should be refused"),
        }
    }

    fn reach_dc(&self, stage: &Stage) -> anyhow::Result<()> {
        let laptop = stage.ns(LAPTOP.node);
        let (_, route) = self.show(laptop, &["ip", "route", "get", DCS[0]])?;
        if !route.contains("dev enclave0") {
            bail!("the laptop does not route {} into the tunnel", DCS[0]);
        }
        self.ping_expect(laptop, DCS[0], 3, true)?;
        // TCP 445 is in the ACL too: the controller's server sees the gateway's LAN address.
        let _server = stage.ns("lan").echo_server(445)?;
        let dst: SocketAddr = format!("{}:445", DCS[1]).parse()?;
        println!(
            "    [laptop]# (TCP connection to {dst}; the server answers with the source it saw)"
        );
        let seen = laptop
            .tcp_request(dst, Duration::from_secs(3))
            .with_context(|| format!("no TCP answer from {dst}"))?;
        println!("    {dst} saw the connection come from {seen}");
        if !GW_LAN.iter().any(|gw| seen.starts_with(&format!("{gw}:"))) {
            bail!("{dst} saw {seen}, not a gateway's LAN address (SNAT)");
        }
        Ok(())
    }

    fn printer_refused(&self, stage: &Stage) -> anyhow::Result<()> {
        let laptop = stage.ns(LAPTOP.node);
        let (_, route) = self.show(laptop, &["ip", "route", "get", PRINTER])?;
        if !route.contains("dev enclave0") {
            bail!(
                "the laptop does not route {PRINTER} into the tunnel: no reply would prove nothing"
            );
        }
        self.ping_expect(laptop, PRINTER, 3, false)?;
        // The printer itself is up: the gateways reach it on the LAN.
        println!("    (the printer is up: its own gateway reaches it on the LAN)");
        self.ping_expect(stage.ns(GATEWAYS[0].node), PRINTER, 1, true)?;
        let (allowed, out) = self.control_output(
            stage,
            &[
                "explain",
                "--from",
                LAPTOP.name,
                "--to",
                PRINTER,
                "--proto",
                "icmp",
            ],
        )?;
        if allowed || !out.contains("filter") {
            bail!("`enclave-control explain` does not name the subnet filter as the reason");
        }
        Ok(())
    }

    fn internet(&self, stage: &Stage) -> anyhow::Result<()> {
        let laptop = stage.ns(LAPTOP.node);
        let routed = self.wait(Duration::from_secs(5), || {
            has_tunnel_route(laptop, &["route", "show", "table", "all", "default"])
        })?;
        if !routed {
            bail!(
                "the laptop got no default route through the tunnel within 5 s; its status:\n{}",
                self.status_text(stage, LAPTOP.node)
            );
        }
        let (_, route) = self.show(laptop, &["ip", "route", "get", INTERNET_HOST])?;
        if !route.contains("dev enclave0") {
            bail!("the laptop does not route {INTERNET_HOST} into the tunnel");
        }
        // The laptop's own LAN (where the gateways' encrypted UDP goes) stays direct.
        let (_, underlay) = self.show(laptop, &["ip", "route", "get", GATEWAYS[2].underlay])?;
        if underlay.contains("enclave0") {
            bail!("the laptop's own LAN would go into the tunnel");
        }
        self.ping_expect(laptop, INTERNET_HOST, 3, true)
    }

    fn status_step(&self, stage: &Stage) -> anyhow::Result<()> {
        let text = self.status_text(stage, LAPTOP.node);
        indent(&text);
        for want in [
            format!("Peer: {}", GATEWAYS[0].name),
            format!("Peer: {}", GATEWAYS[1].name),
            "Gateway for".to_owned(),
            format!("{LAN} (active)"),
            "0.0.0.0/0 (active)".to_owned(),
        ] {
            if !text.contains(&want) {
                bail!("status does not show {want:?}");
            }
        }
        Ok(())
    }

    fn counters(&self, stage: &Stage) -> anyhow::Result<()> {
        let active = self.active_gateway(stage)?;
        let gw = stage.ns(active.node);
        println!("    {LAN} goes through {} now", active.name);
        let (listed, before) = self.show(gw, &["nft", "list", "table", "ip", "enclave"])?;
        if !listed {
            bail!("{} has no nft table `ip enclave`", active.name);
        }
        let laptop = stage.ns(LAPTOP.node);
        self.ping_expect(laptop, DCS[1], 5, true)?;
        println!(
            "    [{}]# nft list table ip enclave   (lines that changed)",
            gw.node()
        );
        let after = gw.exec(&["nft", "list", "table", "ip", "enclave"])?;
        let (old, new): (Vec<&str>, Vec<&str>) =
            (before.lines().collect(), after.lines().collect());
        for (i, line) in new.iter().enumerate() {
            if old.get(i) != Some(line) {
                println!("    - {}", old.get(i).map_or("", |l| l.trim()));
                println!("    + {}", line.trim());
            }
        }
        let (was, is) = (counted(&before), counted(&after));
        println!("    packets counted by the table's rules: {was} before, {is} after");
        if is <= was {
            bail!("the counters did not move ({was} packets before, {is} after)");
        }
        Ok(())
    }

    fn failover(&self, stage: &mut Stage) -> anyhow::Result<()> {
        let active = self.active_gateway(stage)?;
        let Some(other) = GATEWAYS[..2].iter().find(|g| g.node != active.node) else {
            bail!("no second office gateway");
        };
        let process = stage
            .agents
            .get_mut(active.node)
            .with_context(|| format!("no agent runs on {}", active.name))?;
        println!(
            "    killing {} (enclave-gw, PID {}) with SIGKILL",
            active.name,
            process.pid()
        );
        let killed_at = Instant::now();
        process.kill9();
        let laptop = stage.ns(LAPTOP.node);
        println!("    pinging {} every 50 ms until it answers again", DCS[0]);
        let back = self.wait(Duration::from_secs(15), || {
            laptop
                .exec_output(&["ping", "-n", "-c", "1", "-W", "0.2", DCS[0]])
                .is_ok_and(|o| o.status.success())
        })?;
        if !back {
            bail!(
                "{} did not answer within 15 s of killing {}; laptop status:\n{}",
                DCS[0],
                active.name,
                self.status_text(stage, LAPTOP.node)
            );
        }
        println!(
            "    {} answers again {:.2} s after the kill",
            DCS[0],
            killed_at.elapsed().as_secs_f64()
        );
        self.ping_expect(laptop, DCS[0], 3, true)?;
        let now = self.active_gateway(stage)?;
        let text = self.status_text(stage, LAPTOP.node);
        println!("    [laptop]# enclave-agent status   (routed subnets)");
        let routed: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("Routed subnets"))
            .collect();
        indent(&routed.join("\n"));
        if now.node != other.node {
            bail!("{LAN} goes through {}, not {}", now.name, other.name);
        }
        if !text.contains(&format!("failed over from {}", active.name)) {
            bail!("status does not show the failover from {}", active.name);
        }
        Ok(())
    }

    /// The office gateway the laptop uses for the LAN now, from `status --json`.
    fn active_gateway(&self, stage: &Stage) -> anyhow::Result<&'static System> {
        let json = self.status_json(stage, LAPTOP.node)?;
        let routes = json["routes"]
            .as_array()
            .context("status --json has no routes")?;
        let name = routes
            .iter()
            .find(|r| r["subnet"] == LAN)
            .and_then(|r| r["gateway"].as_str())
            .with_context(|| format!("the laptop has no active gateway for {LAN}"))?;
        GATEWAYS[..2]
            .iter()
            .find(|g| g.name == name)
            .with_context(|| format!("{LAN} goes through {name:?}, not an office gateway"))
    }

    fn status_json(&self, stage: &Stage, node: &str) -> anyhow::Result<serde_json::Value> {
        agents::status_json(self.ctx, stage.ns(node), &stage.files[node])
    }

    /// `enclave-agent status` of `node`, or why there is none.
    fn status_text(&self, stage: &Stage, node: &str) -> String {
        agents::status(self.ctx, stage.ns(node), &stage.files[node])
            .unwrap_or_else(|e| format!("(no status: {e:#})"))
    }

    // ----- teardown -----

    /// Stops the agents (SIGTERM: each removes what it made), removes the namespaces, and checks
    /// that none is left.
    fn teardown(&self, stage: Stage) -> anyhow::Result<()> {
        println!("\n==> teardown: stop the agents, remove the namespaces");
        let Stage {
            mut agents, topo, ..
        } = stage;
        for (node, process) in &mut agents {
            let pid = process.pid();
            match process.stop() {
                Some(status) => println!("    {node:7} agent (PID {pid}) exited: {status}"),
                None => println!("    {node:7} agent had already ended"),
            }
        }
        drop(agents);
        // Every namespace of the topology, the hidden switches too, starts with this prefix.
        let prefix = topo
            .ns(LAPTOP.node)
            .name()
            .strip_suffix(LAPTOP.node)
            .context("a namespace name ends with its node's name")?
            .to_owned();
        drop(topo);
        let listed = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .context("cannot run `ip netns list`")?;
        let listed = String::from_utf8_lossy(&listed.stdout);
        let left: Vec<&str> = listed
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| name.starts_with(&prefix))
            .collect();
        if !left.is_empty() {
            bail!("namespaces left after the teardown: {left:?}");
        }
        println!("    no namespace {prefix}* is left");
        Ok(())
    }
}

/// The topology: the laptop and the three gateways on an underlay segment; the office LAN (one
/// namespace with the printer's and both controllers' addresses) behind the Menlo Park
/// gateways; the internet host behind `egress-gw`, as its upstream router. Forwarding is left
/// to the agents.
fn topology() -> TopologySpec {
    let mut spec = TopologySpec::new("demo");
    spec.node(CONTROL).node(LAPTOP.node);
    for gw in &GATEWAYS {
        spec.node(gw.node);
    }
    spec.node("lan").node("inet");
    let mut wan = vec![(CONTROL, "eth0"), (LAPTOP.node, "eth0")];
    wan.extend(GATEWAYS.iter().map(|g| (g.node, "eth0")));
    spec.segment("wan", &wan).segment(
        "lan",
        &[
            (GATEWAYS[0].node, "lan0"),
            (GATEWAYS[1].node, "lan0"),
            ("lan", "eth0"),
        ],
    );
    spec.link((GATEWAYS[2].node, "out0"), ("inet", "eth0"));
    spec.addr(CONTROL, "eth0", &format!("{CONTROL_ADDR}/24"));
    spec.addr(LAPTOP.node, "eth0", &format!("{}/24", LAPTOP.underlay));
    for gw in &GATEWAYS {
        spec.addr(gw.node, "eth0", &format!("{}/24", gw.underlay));
    }
    for (gw, addr) in GATEWAYS.iter().zip(GW_LAN) {
        spec.addr(gw.node, "lan0", &format!("{addr}/24"));
    }
    for addr in [PRINTER, DCS[0], DCS[1]] {
        spec.addr("lan", "eth0", &format!("{addr}/24"));
    }
    spec.addr(GATEWAYS[2].node, "out0", &format!("{EGRESS_OUT}/24"))
        .addr("inet", "eth0", &format!("{INTERNET_HOST}/24"))
        // egress-gw reaches "the Internet" through its upstream router, the internet host: a
        // gateway serves 0.0.0.0/0 only while it has a default route of its own.
        .route(GATEWAYS[2].node, &format!("default via {INTERNET_HOST}"));
    spec
}

/// The administrator's policies (the guide's step 4): `users` reach the Menlo Park Office
/// through either office gateway, the subnet filter letting through the domain controllers only,
/// with an ACL (ping, SMB, RDP); and the Internet through `egress-gw`.
fn policy_file() -> String {
    format!(
        "[[gateway_policy]]\nname = \"users to the Menlo Park Office domain controllers\"\n\
         senders = [\"users\"]\ngateways = [\"{}\", \"{}\"]\nsubnets = [\"{LAN}\"]\n\
         filter = [\"{}-{}\"]\n\
         acl = [\n  {{ protocol = \"icmp\", label = \"ping\" }},\n  \
         {{ protocol = \"tcp\", ports = 445, label = \"SMB\" }},\n  \
         {{ protocol = \"tcp\", ports = 3389, label = \"RDP\" }},\n]\n\
         \n[[gateway_policy]]\nname = \"users to the Internet\"\nsenders = [\"users\"]\n\
         gateways = [\"{}\"]\nsubnets = [\"0.0.0.0/0\"]\nacl = [{{ protocol = \"any\" }}]\n",
        GATEWAYS[0].name, GATEWAYS[1].name, DCS[0], DCS[1], GATEWAYS[2].name
    )
}

/// Runs `enclave-control ARGS` in the control server's namespace, with the server, its
/// fingerprint and the admin token in the environment.
fn control_command(stage: &Stage, args: &[&str]) -> anyhow::Result<std::process::Output> {
    cli_output(
        stage.ns(CONTROL),
        &stage.control,
        &stage.server.at,
        &stage.token,
        args,
    )
}

/// Whether `ip ARGS` in `ns` lists a route through the tunnel.
fn has_tunnel_route(ns: &Netns, args: &[&str]) -> bool {
    let mut argv = vec!["ip"];
    argv.extend(args);
    ns.exec(&argv).is_ok_and(|out| out.contains("dev enclave0"))
}

/// The packets counted by every `counter` of an `nft list` output.
fn counted(listing: &str) -> u64 {
    listing
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once("counter packets ")?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

fn shown(argv: &[&str]) -> String {
    argv.iter()
        .map(|a| {
            Path::new(a)
                .file_name()
                .filter(|_| a.starts_with('/') && a.contains("/debug/"))
                .map_or_else(|| (*a).to_owned(), |f| f.to_string_lossy().into_owned())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn indent(text: &str) {
    for line in text.lines() {
        println!("      {line}");
    }
}

/// Fills `bytes` from the kernel's random source.
fn getrandom(bytes: &mut [u8]) -> anyhow::Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(bytes))
        .context("cannot read /dev/urandom")
}
