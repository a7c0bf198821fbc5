//! Managed agents against a real control server: the server in its own namespace on the
//! underlay, a laptop and a gateway that enrol with enrolment keys, a gateway toggled on and a
//! policy created through the server, traffic through the gateway, the server killed -9 and
//! restarted under running agents, and a revocation that every peer applies within a second.
//! No endpoint is set by hand: peers are given the endpoints the server observed its agents
//! at. A gateway's discovered subnets appear on the server, and removing one withdraws it from
//! the senders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use enclave_netns::{wait_until, Netns, PingResult, Process, SpawnOpts, Topology, TopologySpec};
use serde_json::{json, Value};

use crate::agents::{start_with, status_json, AgentFiles};
use crate::control_fixture::{
    self, admin_token, enrol_command, portal_account, start_server_on, Admin, Enrolment, Server,
};
use crate::office::{DC1, GW_LAN, GW_UNDERLAY, LAN, LAPTOP_UNDERLAY, PRINTER};
use crate::portal_fixture::{Browser, PASSWORD, USER};
use crate::{Ctx, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "control-managed-basics",
            about: "a laptop and a gateway enrol with keys and get their views from enclave-control; a policy made through the API lets the laptop reach 192.168.77.20; the server killed -9 leaves traffic going and agents reconnect when it is back; a revoked laptop loses its tunnel to the gateway within 1 s",
            run: basics,
        },
        Scenario {
            name: "control-managed-postgres",
            about: "two enclave-control servers on one throwaway PostgreSQL, the gateway's agent on one and the laptop's on the other: a policy made through the first reaches the laptop, a revoke through the second cuts the laptop off at the gateway within 1 s, the first killed -9 leaves traffic going and its agent reconnects when it is back",
            run: postgres,
        },
        Scenario {
            name: "control-managed-subnets",
            about: "two managed gateways discover the office LAN and a lab LAN and the server lists both with their interfaces; removing the lab from one gateway withdraws that gateway from the laptop's lab route (traffic goes on through the other); removing it from the last gateway a policy routes it through is refused naming the policy; once the policy is gone the laptop has no lab route and the lab stops answering while the office still does; a gateway switched off on the server stops forwarding and leaves the laptop's routes",
            run: subnets,
        },
        Scenario {
            name: "control-managed-failover",
            about: "managed agents with the server killed -9: the active gateway killed too, the laptop fails over to the other gateway on its last good view",
            run: failover,
        },
    ]
}

/// The server's underlay address (its own node on the laptop's and gateways' segment).
const SERVER: &str = "10.10.0.100";
/// The server's port.
const PORT: u16 = 8443;

/// The second server's port (on the same node), when there are two.
const PORT_B: u16 = 8444;

/// The lab LAN behind both gateways (with [`Fixture::enrolled`]'s `lab`), and a host on it.
const LAB: &str = "192.168.88.0/24";
const LAB_HOST: &str = "192.168.88.20";
/// The gateways' addresses on the lab LAN.
const GW_LAB: [&str; 2] = ["192.168.88.1", "192.168.88.2"];

/// `enclave-control run` on the server's node on `port`, on `database`, its certificate in
/// `state`.
fn start_server(
    ns: &Netns,
    bin: &Path,
    label: &str,
    database: &str,
    port: u16,
    state: &Path,
) -> anyhow::Result<Server> {
    start_server_on(ns, bin, label, database, (SERVER, port), state, &["-v"])
}

/// Where the fixture's servers keep the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    /// One server on its SQLite file.
    Sqlite,
    /// Two servers on one throwaway PostgreSQL: the gateways' agents connect to the first,
    /// the laptop's to the second.
    PostgresTwoServers,
}

/// Where a node's agent files go.
fn agent_dir(ctx: &Ctx, node: &str) -> anyhow::Result<PathBuf> {
    let dir = ctx.log_dir().join(format!("{node}-agent"));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Enrols `node` as `name` and returns its agent files; the command must say that the system
/// is approved, and the private key must be private.
fn enrol(
    ctx: &Ctx,
    ns: &Netns,
    gateway: bool,
    server: &Server,
    key: &str,
    name: &str,
) -> anyhow::Result<AgentFiles> {
    let Enrolment { files, output } =
        control_fixture::enrol(ctx, ns, gateway, &server.at, key, name)?;
    ensure!(
        output.contains(&format!("as {name:?}")) && output.contains("approved"),
        "enrol printed:\n{output}"
    );
    let private_key = files.config.with_file_name("private.key");
    let key_mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(private_key)?.permissions())
            & 0o777;
    ensure!(key_mode == 0o600, "the private key has mode {key_mode:o}");
    Ok(files)
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn has_peer(status: &Value, peer: &str) -> bool {
    status["peers"]
        .as_array()
        .is_some_and(|peers| peers.iter().any(|p| p["name"] == peer))
}

/// Pings `dst` from `ns` every 50 ms until it answers, within `timeout`.
pub(crate) fn until_answered(ns: &Netns, dst: &str, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let argv = ["ping", "-n", "-c", "1", "-W", "0.2", dst];
    while started.elapsed() < timeout {
        let output = ns.exec_output(&argv)?;
        if PingResult::from_output(&argv.join(" "), &output)?.received > 0 {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{dst} never answered within {timeout:?}")
}

/// The managed Menlo Park office: the server, the laptop and `gateways` gateways enrolled and
/// running, both gateways allowed, the policy made through the API, and the laptop reaching
/// 192.168.77.20.
pub(crate) struct Fixture<'c> {
    ctx: &'c Ctx,
    /// Agent processes by node (dropped first, then the servers, then PostgreSQL, then the
    /// topology).
    agents: BTreeMap<String, Process>,
    pub(crate) server: Server,
    /// The second server, with [`Store::PostgresTwoServers`].
    second: Option<Server>,
    postgres: Option<crate::scenarios::control::Postgres>,
    pub(crate) database: String,
    files: BTreeMap<String, AgentFiles>,
    pub(crate) control: PathBuf,
    state: PathBuf,
    token: String,
    /// Every enrolment key made (with the token and the agents' private keys, none of them
    /// may appear in a log).
    keys: Vec<String>,
    topo: Topology,
}

/// The gateways' system names by node.
pub(crate) const GATEWAYS: [(&str, &str); 2] = [("gw1", "menlo-gw-1"), ("gw2", "menlo-gw-2")];

impl<'c> Fixture<'c> {
    pub(crate) fn start(ctx: &'c Ctx, tag: &str, gateways: usize) -> anyhow::Result<Self> {
        Self::enrolled(ctx, tag, gateways, Store::Sqlite, false)?.with_policy()
    }

    /// The office enrolled and running, both gateways allowed and their subnets discovered,
    /// and no policy yet (the portal's scenarios make it).
    pub(crate) fn without_policy(ctx: &'c Ctx, tag: &str, gateways: usize) -> anyhow::Result<Self> {
        Self::enrolled(ctx, tag, gateways, Store::Sqlite, false)
    }

    /// The office enrolled and running, without a policy. With `lab`, the gateways also have
    /// the lab LAN ([`LAB`], on `lan1`) with [`LAB_HOST`].
    fn enrolled(
        ctx: &'c Ctx,
        tag: &str,
        gateways: usize,
        store: Store,
        lab: bool,
    ) -> anyhow::Result<Self> {
        let mut spec = TopologySpec::new(tag);
        spec.node("ctl")
            .node("sender")
            .node("lan")
            .addr("ctl", "eth0", &format!("{SERVER}/24"))
            .addr("sender", "eth0", &format!("{LAPTOP_UNDERLAY}/24"))
            .addr("lan", "eth0", &format!("{PRINTER}/24"))
            .addr("lan", "eth0", &format!("{DC1}/24"));
        let mut wan = vec![("ctl", "eth0"), ("sender", "eth0")];
        let mut lan = vec![("lan", "eth0")];
        let mut lab_segment = vec![("lab", "eth0")];
        if lab {
            spec.node("lab")
                .addr("lab", "eth0", &format!("{LAB_HOST}/24"));
        }
        for (i, (node, _)) in GATEWAYS.iter().take(gateways).enumerate() {
            spec.node(node)
                .addr(node, "eth0", &format!("{}/24", GW_UNDERLAY[i]))
                .addr(node, "lan0", &format!("{}/24", GW_LAN[i]));
            wan.push((node, "eth0"));
            lan.push((node, "lan0"));
            if lab {
                spec.addr(node, "lan1", &format!("{}/24", GW_LAB[i]));
                lab_segment.push((node, "lan1"));
            }
        }
        spec.segment("wan", &wan).segment("lan", &lan);
        if lab {
            spec.segment("lab", &lab_segment);
        }
        let topo = ctx.topology(&spec)?;
        let control = ctx.bin("enclave-control")?;
        let state = ctx.log_dir().join("control-state");
        std::fs::create_dir_all(&state)?;
        let ctl = topo.ns("ctl");

        // The server(s), an admin token, and one enrolment key per role.
        let (postgres, database) = match store {
            Store::Sqlite => (None, format!("sqlite://{}/control.db", state.display())),
            Store::PostgresTwoServers => {
                let pg = crate::scenarios::control::Postgres::start(ctx)?;
                pg.createdb("control")?;
                let url = pg.url("control");
                (Some(pg), url)
            }
        };
        let token = admin_token(ctl, &control, &database, &[])?;
        let server = start_server(ctl, &control, "enclave-control", &database, PORT, &state)?;
        let second = match store {
            Store::Sqlite => None,
            Store::PostgresTwoServers => {
                let state_b = ctx.log_dir().join("control-state-b");
                std::fs::create_dir_all(&state_b)?;
                Some(start_server(
                    ctl,
                    &control,
                    "enclave-control-b",
                    &database,
                    PORT_B,
                    &state_b,
                )?)
            }
        };
        let mut fixture = Self {
            ctx,
            agents: BTreeMap::new(),
            server,
            second,
            postgres,
            database,
            files: BTreeMap::new(),
            control,
            state,
            token,
            keys: Vec::new(),
            topo,
        };
        let laptop_key = fixture.key("users")?;
        let gateway_key = fixture.key("gateways")?;

        // Enrol (the key pairs are made on the hosts).
        for (node, name) in GATEWAYS.iter().take(gateways) {
            let files = enrol(
                ctx,
                fixture.topo.ns(node),
                true,
                &fixture.server,
                &gateway_key,
                name,
            )?;
            fixture.files.insert((*node).to_owned(), files);
        }
        // With two servers, the laptop's agent uses the second one.
        let laptop_server = fixture.second.as_ref().unwrap_or(&fixture.server);
        let files = enrol(
            ctx,
            fixture.topo.ns("sender"),
            false,
            laptop_server,
            &laptop_key,
            "laptop",
        )?;
        fixture.files.insert("sender".to_owned(), files);

        // No endpoint is set by hand (the guide has none): the server gives peers the
        // address it sees each agent connect from, with the WireGuard port the agent reports.
        for (node, _) in GATEWAYS.iter().take(gateways) {
            fixture.start_agent(node)?;
        }
        fixture.start_agent("sender")?;

        // The gateway toggle, then the discovered subnets reach the server.
        for (node, name) in GATEWAYS.iter().take(gateways) {
            fixture.cli(&["systems", "gateway", name, "on"])?;
            let mut subnets = Value::Null;
            let discovered = wait_until(Duration::from_secs(10), || {
                subnets = fixture.cli_json(&["subnets", "list", "--json"]);
                subnets.to_string().contains(LAN)
                    && subnets.as_array().is_some_and(|rows| {
                        rows.iter().any(|row| {
                            let row = row.to_string();
                            row.contains(name) && row.contains(LAN) && row.contains("lan0")
                        })
                    })
            });
            ensure!(
                discovered,
                "{name}'s discovered {LAN} (on lan0) did not reach the server within 10 s:\n{subnets}\ngateway log:\n{}",
                tail(&fixture.agents[*node].log(), 30)
            );
        }

        // The gateways' endpoints are the ones the server observed, not set by hand.
        for (i, (_, name)) in GATEWAYS.iter().take(gateways).enumerate() {
            let wanted = format!("{}:51820", GW_UNDERLAY[i]);
            let mut shown = Value::Null;
            let observed = wait_until(Duration::from_secs(10), || {
                shown = fixture.cli_json(&["systems", "show", name]);
                shown["observed_endpoint"] == wanted.as_str()
            });
            ensure!(
                observed && shown["endpoint"].is_null(),
                "{name}'s observed endpoint is not {wanted} (or one is set by hand): {shown}"
            );
        }

        Ok(fixture)
    }

    /// A gateway access policy from the users to the LAN through every gateway, made through
    /// the API; the laptop must reach the LAN with it, through a gateway at the endpoint the
    /// server observed.
    fn with_policy(self) -> anyhow::Result<Self> {
        let names: Vec<&str> = GATEWAYS
            .iter()
            .filter(|(node, _)| self.files.contains_key(*node))
            .map(|(_, n)| *n)
            .collect();
        self.create_policy("users to Menlo Park Office", &names, LAN)?;
        let took = until_answered(self.topo.ns("sender"), DC1, Duration::from_secs(10))
            .with_context(|| {
                format!(
                    "laptop status: {:?}\nlaptop log:\n{}",
                    self.status("sender"),
                    tail(&self.agents["sender"].log(), 30)
                )
            })?;
        println!(
            "    the laptop reaches {DC1} {:.2} s after the policy was created",
            took.as_secs_f64()
        );
        // The laptop's tunnel to the gateway goes to the gateway's underlay address and port.
        let status = self.status("sender")?;
        let active = active_gateway(&self).context("no active gateway for the LAN")?;
        let index = GATEWAYS
            .iter()
            .position(|(node, _)| *node == active)
            .context("an unknown gateway")?;
        let peer = status["peers"]
            .as_array()
            .and_then(|peers| peers.iter().find(|p| p["name"] == GATEWAYS[index].1))
            .cloned()
            .unwrap_or_default();
        ensure!(
            peer["endpoint"] == format!("{}:51820", GW_UNDERLAY[index]).as_str(),
            "the laptop's peer {} has endpoint {}",
            GATEWAYS[index].1,
            peer["endpoint"]
        );
        Ok(self)
    }

    pub(crate) fn ns(&self, node: &str) -> &Netns {
        self.topo.ns(node)
    }

    /// A gateway access policy `name` from the users to `subnet` through `gateways`, any
    /// protocol, made through the API.
    fn create_policy(&self, name: &str, gateways: &[&str], subnet: &str) -> anyhow::Result<()> {
        self.admin()
            .api(
                "POST",
                "/api/v1/policies",
                &json!({
                    "name": name,
                    "kind": "gateway",
                    "senders": ["users"],
                    "gateways": gateways,
                    "subnets": [subnet],
                    "acl": [{ "protocol": "any" }],
                }),
                201,
            )
            .with_context(|| format!("creating the policy {name:?}"))?;
        Ok(())
    }

    /// An enrolment key with `tags`, automatic approval.
    fn key(&mut self, tags: &str) -> anyhow::Result<String> {
        self.key_with(&["--tags", tags, "--approval", "auto"])
    }

    /// An enrolment key made with `args` after `keys create`.
    fn key_with(&mut self, args: &[&str]) -> anyhow::Result<String> {
        let key = self.admin().create_key(args)?;
        self.keys.push(key.clone());
        Ok(key)
    }

    /// No log of the servers or the agents holds the admin token, an enrolment key or an
    /// agent's private key.
    fn no_secret_logged(&self) -> anyhow::Result<()> {
        let mut secrets: Vec<(String, String)> =
            vec![("the admin token".into(), self.token.clone())];
        for key in &self.keys {
            secrets.push(("an enrolment key".into(), key.clone()));
        }
        for (node, files) in &self.files {
            let private = std::fs::read_to_string(files.config.with_file_name("private.key"))?;
            let private = private.trim();
            ensure!(
                private.len() >= 40,
                "{node}'s private key file is not a key"
            );
            secrets.push((format!("{node}'s private key"), private.to_owned()));
        }
        let mut logs = vec![("the server".to_owned(), self.server.process.log())];
        if let Some(second) = &self.second {
            logs.push(("the second server".to_owned(), second.process.log()));
        }
        for (node, agent) in &self.agents {
            logs.push((format!("{node}'s agent"), agent.log()));
        }
        for (whose, log) in &logs {
            ensure!(
                !log.is_empty(),
                "{whose} logged nothing: the check would prove nothing"
            );
            for (what, secret) in &secrets {
                ensure!(!log.contains(secret.as_str()), "{whose} logged {what}");
            }
        }
        Ok(())
    }

    /// The administrator of the (first) server.
    pub(crate) fn admin(&self) -> Admin<'_> {
        Admin {
            ns: self.topo.ns("ctl"),
            bin: &self.control,
            at: &self.server.at,
            token: &self.token,
        }
    }

    /// The administrator of the second server.
    fn admin_second(&self) -> anyhow::Result<Admin<'_>> {
        let second = self.second.as_ref().context("there is no second server")?;
        Ok(Admin {
            at: &second.at,
            ..self.admin()
        })
    }

    /// [`Admin::cli`] on the (first) server.
    fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        self.admin().cli(args)
    }

    /// A portal account on the server's database, and a browser on the portal signed in with
    /// it (for the portal's scenarios over the managed office).
    pub(crate) fn portal_browser(&self) -> anyhow::Result<Browser<'_>> {
        portal_account(
            self.topo.ns("ctl"),
            &self.control,
            &self.database,
            (USER, PASSWORD),
            &self.state,
        )?;
        Browser::signed_in(self.ctx, self.topo.ns("ctl"), &self.server.at.url)
    }

    /// The JSON that the CLI printed; null when it failed or printed something else (for
    /// polling until the server shows something).
    fn cli_json(&self, args: &[&str]) -> Value {
        self.cli(args)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null)
    }

    /// `enclave-agent enrol` on the laptop's node with `key` as `name`, writing `config`:
    /// whether it succeeded, and what it printed (for enrolments the test expects refused or
    /// keeps apart from the fixture's own).
    fn enrol_laptop(&self, key: &str, name: &str, config: &Path) -> anyhow::Result<(bool, String)> {
        enrol_command(
            self.ctx,
            self.ns("sender"),
            false,
            &self.server.at,
            key,
            name,
            config,
        )
    }

    /// Starts (or restarts) the agent of `node`.
    fn start_agent(&mut self, node: &str) -> anyhow::Result<()> {
        let process = start_with(
            self.ctx,
            self.topo.ns(node),
            &self.files[node],
            node != "sender",
            SpawnOpts::default(),
        )?;
        self.agents.insert(node.to_owned(), process);
        Ok(())
    }

    pub(crate) fn agent(&mut self, node: &str) -> anyhow::Result<&mut Process> {
        self.agents
            .get_mut(node)
            .with_context(|| format!("no agent runs on {node}"))
    }

    fn status(&self, node: &str) -> anyhow::Result<Value> {
        status_json(self.ctx, self.topo.ns(node), &self.files[node])
    }

    /// Whether `node`'s status warns that the control server is out of reach.
    fn warned(&self, node: &str) -> bool {
        self.status(node).is_ok_and(|s| {
            s["warnings"].as_array().is_some_and(|w| {
                w.iter()
                    .any(|w| w.as_str().is_some_and(|w| w.contains("control server")))
            })
        })
    }

    /// Kills the server with SIGKILL.
    fn kill_server(&mut self) {
        self.server.process.kill9();
    }

    /// Starts the server again on the same database and certificate.
    fn restart_server(&mut self, label: &str) -> anyhow::Result<()> {
        self.server = start_server(
            self.topo.ns("ctl"),
            &self.control,
            label,
            &self.database,
            PORT,
            &self.state,
        )?;
        Ok(())
    }

    /// Revokes the laptop (through the second server when `second`) and checks that the
    /// gateway, which had a tunnel to it (the positive control), drops it within a second and
    /// that the laptop no longer reaches the LAN.
    fn revoke_laptop(&self, second: bool) -> anyhow::Result<()> {
        ensure!(
            has_peer(&self.status("gw1")?, "laptop"),
            "positive control: the gateway has no tunnel to the laptop before the revocation"
        );
        let admin = if second {
            self.admin_second()?
        } else {
            self.admin()
        };
        let revoked = Instant::now();
        admin.cli(&["systems", "revoke", "laptop"])?;
        let gone = wait_until(Duration::from_secs(3), || {
            self.status("gw1").is_ok_and(|s| !has_peer(&s, "laptop"))
        });
        let took = revoked.elapsed();
        let through = if second {
            "the second server"
        } else {
            "its server"
        };
        ensure!(
            gone,
            "the gateway still has a tunnel to the laptop revoked through {through} after 3 s"
        );
        ensure!(
            took <= Duration::from_secs(1),
            "the gateway dropped the laptop revoked through {through} after {:.2} s, not within 1 s",
            took.as_secs_f64()
        );
        println!(
            "    revoked through {through}: the gateway dropped the laptop within {:.2} s (command included)",
            took.as_secs_f64()
        );
        ensure!(
            !self.ns("sender").ping_once(DC1)?,
            "the revoked laptop still reaches {DC1}"
        );
        Ok(())
    }
}

/// How many times `process` has connected to the control server.
fn connections(process: &Process) -> usize {
    process
        .log()
        .matches("connected to the control server")
        .count()
}

fn basics(ctx: &Ctx) -> anyhow::Result<()> {
    let mut office = Fixture::start(ctx, "cmb", 1)?;

    // A wrong key: the server's reason, and nothing written on the host.
    let refused_config = agent_dir(ctx, "refused")?.join("agent.toml");
    let (ok, output) = office.enrol_laptop("enk_not-a-key", "laptop", &refused_config)?;
    ensure!(
        !ok && output.contains("the enrolment key is not valid")
            && output.contains("Nothing was changed on this host."),
        "a wrong enrolment key:\n{output}"
    );
    ensure!(
        std::fs::read_dir(refused_config.parent().context("parent")?)?
            .next()
            .is_none(),
        "a refused enrolment left files behind"
    );
    // An expired key and a used-up one: refused with their reasons, nothing on the host, and
    // nothing on the server (its revision stays).
    let expired = office.key_with(&["--tags", "users", "--expires", "1s"])?;
    let spent = office.key_with(&["--tags", "users", "--uses", "1"])?;
    let spent_config = agent_dir(ctx, "spent")?.join("agent.toml");
    let (ok, output) = office.enrol_laptop(&spent, "spare", &spent_config)?;
    ensure!(ok, "enrolling with a fresh one-use key:\n{output}");
    std::thread::sleep(Duration::from_millis(1100)); // the expired key's second passes
    let revision = office.cli(&["audit", "--json", "--limit", "1000"])?;
    for (key, reason) in [
        (&expired, "the enrolment key has expired"),
        (&spent, "the enrolment key has no uses left"),
    ] {
        let (ok, output) = office.enrol_laptop(key, "laptop", &refused_config)?;
        ensure!(
            !ok && output.contains(reason) && output.contains("Nothing was changed on this host."),
            "a key refused for {reason:?}:\n{output}"
        );
        ensure!(
            !refused_config.exists(),
            "a refused enrolment wrote {}",
            refused_config.display()
        );
    }
    ensure!(
        office.cli(&["audit", "--json", "--limit", "1000"])? == revision,
        "a refused enrolment changed the server's state"
    );

    // What the laptop reports reaches the server: the gateway it uses for the LAN, its peer's
    // state, the port to reach it at, the serial it applied.
    let mut shown = Value::Null;
    let reported = wait_until(Duration::from_secs(5), || {
        shown = office.cli_json(&["systems", "show", "laptop"]);
        let agent = &shown["agent"];
        let report = &agent["report"];
        report["active_gateways"][LAN]["gateway"] == "menlo-gw-1"
            && report["peers"]["menlo-gw-1"]["state"].is_string()
            && report["listen_port"] == 51820
            && agent["serial_applied"].is_u64()
    });
    ensure!(
        reported,
        "the server does not show what the laptop reported: {shown}"
    );

    // The server killed -9: traffic goes on, on the views in force.
    office.kill_server();
    let during = office.ns("sender").ping(DC1, 20)?;
    ensure!(
        during.all_answered(),
        "with the server killed, the laptop's pings to {DC1}: {}/{} answered\n{}",
        during.received,
        during.transmitted,
        during.output
    );
    ensure!(
        office.agent("sender")?.is_running() && office.agent("gw1")?.is_running(),
        "an agent stopped when the server went away"
    );
    office
        .agent("sender")?
        .wait_for_log("connecting again in", Duration::from_secs(5))?;
    ensure!(
        office.warned("sender"),
        "the laptop's status does not say the control server is out of reach: {:?}",
        office.status("sender")
    );
    println!(
        "    server killed -9: {}/{} pings answered through the gateway meanwhile",
        during.received, during.transmitted
    );

    // The laptop's agent restarted while the server is down: it starts from its last good
    // view on disk and reaches the LAN again.
    let stopped = office.agent("sender")?.stop();
    ensure!(
        stopped.is_some_and(|s| s.success()),
        "the laptop's agent did not stop cleanly: {stopped:?}"
    );
    office.start_agent("sender")?;
    office
        .agent("sender")?
        .wait_for_log("starting from the last good view", Duration::from_secs(10))?;
    let took =
        until_answered(office.ns("sender"), DC1, Duration::from_secs(10)).with_context(|| {
            format!(
                "after a restart without the server; laptop log:\n{}",
                tail(&office.agents["sender"].log(), 30)
            )
        })?;
    println!(
        "    the laptop's agent restarted without the server: {DC1} answers again after {:.2} s, on the last good view",
        took.as_secs_f64()
    );

    // Restarted on the same database and certificate: both agents connect again.
    let before = (
        connections(&office.agents["sender"]),
        connections(&office.agents["gw1"]),
    );
    office.restart_server("enclave-control-2")?;
    let restarted = Instant::now();
    let back = wait_until(Duration::from_secs(40), || {
        connections(&office.agents["sender"]) > before.0
            && connections(&office.agents["gw1"]) > before.1
    });
    ensure!(
        back,
        "the agents did not connect again within 40 s of the restart; laptop log:\n{}",
        tail(&office.agents["sender"].log(), 20)
    );
    println!(
        "    server restarted: both agents connected again within {:.1} s",
        restarted.elapsed().as_secs_f64()
    );
    ensure!(
        wait_until(Duration::from_secs(5), || !office.warned("sender")),
        "the laptop's status still warns of the control server after it reconnected: {:?}",
        office.status("sender")
    );
    ensure!(
        office.ns("sender").ping_once(DC1)?,
        "after the restart the laptop no longer reaches {DC1}"
    );

    // Revoked: the gateway drops the laptop within a second.
    office.revoke_laptop(false)?;
    // It connects again and is told again that it is revoked; the agent is told once.
    let after = connections(&office.agents["sender"]);
    ensure!(
        wait_until(Duration::from_secs(10), || connections(
            &office.agents["sender"]
        ) > after),
        "the revoked laptop did not try the server again within 10 s"
    );
    let told = office.agents["sender"]
        .log()
        .matches("may no longer take part")
        .count();
    ensure!(
        told == 1,
        "the revoked laptop's agent was told {told} times:\n{}",
        tail(&office.agents["sender"].log(), 20)
    );
    let last_view = office.files["sender"]
        .config
        .with_file_name("state")
        .join("enclave0.view.json");
    ensure!(
        wait_until(Duration::from_secs(2), || !last_view.exists()),
        "the revoked laptop kept its last good view {}",
        last_view.display()
    );
    office.no_secret_logged()
}

/// The core of [`basics`] on PostgreSQL, with the agents split between two servers.
fn postgres(ctx: &Ctx) -> anyhow::Result<()> {
    // The policy is made through the first server; the laptop, on the second, reaches the LAN
    // with it (Fixture::with_policy checks that).
    let mut office =
        Fixture::enrolled(ctx, "cmp", 1, Store::PostgresTwoServers, false)?.with_policy()?;
    ensure!(
        office.postgres.is_some(),
        "the fixture did not start PostgreSQL"
    );
    ensure!(
        office.files["sender"]
            .config
            .exists()
            .then(|| std::fs::read_to_string(&office.files["sender"].config))
            .transpose()?
            .is_some_and(|c| c.contains(&format!(":{PORT_B}"))),
        "the laptop's agent is not configured for the second server"
    );
    // Both servers show both agents connected (presence is in the database).
    for (which, admin) in [
        ("first", office.admin()),
        ("second", office.admin_second()?),
    ] {
        let list = admin.json(&["systems", "list", "--json"])?;
        let connected = |name: &str| {
            list.as_array().is_some_and(|systems| {
                systems
                    .iter()
                    .any(|s| s["name"] == name && s["connected"] == true)
            })
        };
        ensure!(
            connected("laptop") && connected("menlo-gw-1"),
            "the {which} server does not show both agents connected: {list}"
        );
    }

    // The first server killed -9: traffic goes on; restarted: the gateway's agent reconnects.
    let before = connections(&office.agents["gw1"]);
    office.kill_server();
    let during = office.ns("sender").ping(DC1, 10)?;
    ensure!(
        during.all_answered(),
        "with the first server killed, the laptop's pings to {DC1}: {}/{} answered",
        during.received,
        during.transmitted
    );
    office.restart_server("enclave-control-2")?;
    ensure!(
        wait_until(Duration::from_secs(40), || connections(
            &office.agents["gw1"]
        ) > before),
        "the gateway's agent did not connect again within 40 s of the restart"
    );

    // Revoked through the second server: the gateway, on the first, drops the laptop within
    // a second.
    office.revoke_laptop(true)?;
    Ok(())
}

/// The gateway the laptop uses for the LAN now, by node.
pub(crate) fn active_gateway(office: &Fixture<'_>) -> Option<&'static str> {
    let status = office.status("sender").ok()?;
    let name = status["routes"]
        .as_array()?
        .iter()
        .find(|r| r["subnet"] == LAN)?["gateway"]
        .as_str()?
        .to_owned();
    GATEWAYS
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(node, _)| *node)
}

fn failover(ctx: &Ctx) -> anyhow::Result<()> {
    let mut office = Fixture::start(ctx, "cmf", 2)?;
    office.kill_server();
    office
        .agent("sender")?
        .wait_for_log("connecting again in", Duration::from_secs(5))?;
    let first = active_gateway(&office).with_context(|| {
        format!(
            "the laptop names no active gateway for {LAN}: {:?}",
            office.status("sender")
        )
    })?;
    let other = if first == "gw1" { "gw2" } else { "gw1" };
    let killed = Instant::now();
    office.agent(first)?.kill9();
    let took =
        until_answered(office.ns("sender"), DC1, Duration::from_secs(10)).with_context(|| {
            format!(
                "no failover without the server: {:?}",
                office.status("sender")
            )
        })?;
    let moved = wait_until(Duration::from_secs(5), || {
        active_gateway(&office) == Some(other)
    });
    ensure!(
        moved,
        "the laptop did not move to {other}: {:?}",
        office.status("sender")
    );
    ensure!(
        took < Duration::from_secs(5),
        "traffic came back only {took:?} after the active gateway was killed"
    );
    println!(
        "    server down, {first} killed -9: {DC1} answered through {other} again after {:.2} s ({:.2} s since the kill)",
        took.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    ensure!(
        office.warned("sender"),
        "the laptop's status does not say the control server is out of reach: {:?}",
        office.status("sender")
    );
    Ok(())
}

/// The routes of `node`'s status: subnet -> gateway in use.
fn route_of(office: &Fixture<'_>, node: &str, subnet: &str) -> Option<Value> {
    office.status(node).ok()?["routes"]
        .as_array()?
        .iter()
        .find(|r| r["subnet"] == subnet)
        .cloned()
}

/// The subnets the laptop's peer `gateway` is a gateway for (as the laptop sees it).
fn gateway_for(status: &Value, gateway: &str) -> Vec<String> {
    status["peers"]
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["name"] == gateway))
        .and_then(|p| p["gateway_for"].as_array())
        .map(|subnets| {
            subnets
                .iter()
                .filter_map(|g| g["subnet"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

impl Fixture<'_> {
    /// The system's JSON as `systems show` prints it.
    fn show(&self, name: &str) -> Value {
        self.cli_json(&["systems", "show", name])
    }

    /// Waits until the agent of `system` says it applied a view of serial `serial` or later.
    fn applied(&self, system: &str, serial: i64) -> anyhow::Result<()> {
        let mut shown = Value::Null;
        let done = wait_until(Duration::from_secs(5), || {
            shown = self.show(system);
            shown["agent"]["serial_applied"]
                .as_i64()
                .is_some_and(|s| s >= serial)
        });
        ensure!(
            done,
            "{system}'s agent did not report applying serial {serial} within 5 s: {}",
            shown["agent"]
        );
        Ok(())
    }

    /// The current revision (the last audit entry's).
    fn revision(&self) -> anyhow::Result<i64> {
        let audit: Value =
            serde_json::from_str(&self.cli(&["audit", "--json", "--limit", "1000"])?)?;
        audit
            .as_array()
            .and_then(|entries| entries.iter().filter_map(|e| e["revision"].as_i64()).max())
            .context("the audit log is empty")
    }
}

fn subnets(ctx: &Ctx) -> anyhow::Result<()> {
    let office = Fixture::enrolled(ctx, "cms", 2, Store::Sqlite, true)?.with_policy()?;

    // Both gateways' discovered subnets are on the server, each with its interface.
    let mut rows = Value::Null;
    let listed = wait_until(Duration::from_secs(10), || {
        rows = office.cli_json(&["subnets", "list", "--json"]);
        GATEWAYS.iter().all(|(_, name)| {
            [(LAN, "lan0"), (LAB, "lan1")]
                .iter()
                .all(|(subnet, iface)| {
                    rows.as_array().is_some_and(|rows| {
                        rows.iter().any(|r| {
                            r["system"] == *name
                                && r["subnet"] == *subnet
                                && r["interface"] == *iface
                                && r["source"] == "discovered"
                                && r["state"] == "served"
                                && r["reason"].as_str().is_some_and(|t| !t.is_empty())
                        })
                    })
                })
        })
    });
    ensure!(
        listed,
        "the server does not list both gateways' {LAN} (lan0) and {LAB} (lan1): {rows}"
    );

    // A policy to the lab through both gateways: the laptop reaches the lab host.
    office.create_policy("users to the lab", &["menlo-gw-1", "menlo-gw-2"], LAB)?;
    until_answered(office.ns("sender"), LAB_HOST, Duration::from_secs(10))
        .with_context(|| format!("the laptop: {:?}", office.status("sender")))?;
    let before = office.status("sender")?;
    ensure!(
        gateway_for(&before, "menlo-gw-1").contains(&LAB.to_owned())
            && gateway_for(&before, "menlo-gw-2").contains(&LAB.to_owned()),
        "positive control: the laptop does not have both gateways for {LAB}: {before}"
    );

    // Removed from menlo-gw-1: the laptop's lab route no longer goes through it, the lab
    // still answers through menlo-gw-2, and menlo-gw-1 no longer serves it.
    office.cli(&["subnets", "remove", "menlo-gw-1", LAB])?;
    let removed_at = office.revision()?;
    office.applied("laptop", removed_at)?;
    let after = office.status("sender")?;
    ensure!(
        !gateway_for(&after, "menlo-gw-1").contains(&LAB.to_owned())
            && gateway_for(&after, "menlo-gw-2").contains(&LAB.to_owned()),
        "after removing {LAB} from menlo-gw-1 the laptop's gateways for it are: menlo-gw-1 {:?}, menlo-gw-2 {:?}",
        gateway_for(&after, "menlo-gw-1"),
        gateway_for(&after, "menlo-gw-2")
    );
    let took = until_answered(office.ns("sender"), LAB_HOST, Duration::from_secs(10))
        .with_context(|| format!("the lab through menlo-gw-2: {:?}", office.status("sender")))?;
    let route = route_of(&office, "sender", LAB).unwrap_or_default();
    ensure!(
        route["gateway"] == "menlo-gw-2",
        "the laptop's route to {LAB} is not through menlo-gw-2: {route}"
    );
    office.applied("menlo-gw-1", removed_at)?;
    let gw1 = office.status("gw1")?;
    ensure!(
        gw1["gateway_for"]
            .as_array()
            .is_some_and(|g| !g.iter().any(|s| s == LAB) && g.iter().any(|s| s == LAN)),
        "menlo-gw-1 still serves {LAB} (or no longer {LAN}): {}",
        gw1["gateway_for"]
    );
    println!(
        "    {LAB} removed from menlo-gw-1: the laptop routes it through menlo-gw-2 only, {LAB_HOST} answered after {:.2} s",
        took.as_secs_f64()
    );
    let rows = office.cli_json(&["subnets", "list", "--json"]);
    ensure!(
        rows.as_array().is_some_and(|rows| rows.iter().any(|r| {
            r["system"] == "menlo-gw-1" && r["subnet"] == LAB && r["state"] == "removed"
        })),
        "subnets list does not show {LAB} removed from menlo-gw-1: {rows}"
    );

    // From the last gateway the policy routes it through: refused, naming the policy, and
    // nothing changed.
    let revision = office.revision()?;
    let output = office
        .admin()
        .output(&["subnets", "remove", "menlo-gw-2", LAB])?;
    let said = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success() && said.contains("users to the lab"),
        "removing the lab from its last gateway: {} {said}",
        output.status
    );
    ensure!(
        office.revision()? == revision,
        "a refused removal changed the network"
    );
    ensure!(
        office.ns("sender").ping_once(LAB_HOST)?,
        "after the refused removal the lab no longer answers"
    );

    // The policy deleted and the subnet removed: the laptop has no lab route and the lab is
    // out of reach; the office LAN still answers.
    office.cli(&["policies", "delete", "users to the lab"])?;
    let deleted_at = office.revision()?;
    office.cli(&["subnets", "remove", "menlo-gw-2", LAB])?;
    let gone_at = office.revision()?;
    office.applied("menlo-gw-2", gone_at)?;
    office.applied("laptop", deleted_at)?;
    ensure!(
        route_of(&office, "sender", LAB).is_none(),
        "the laptop still has a route to {LAB}: {:?}",
        office.status("sender")
    );
    ensure!(
        !office.ns("sender").ping_once(LAB_HOST)?,
        "{LAB_HOST} still answers the laptop after its subnet was withdrawn"
    );
    ensure!(
        office.ns("sender").ping_once(DC1)?,
        "positive control: {DC1} no longer answers the laptop"
    );
    let gw2 = office.status("gw2")?;
    ensure!(
        gw2["gateway_for"]
            .as_array()
            .is_some_and(|g| !g.iter().any(|s| s == LAB)),
        "menlo-gw-2 still serves {LAB}: {}",
        gw2["gateway_for"]
    );

    // "Allow this system to act as a gateway" switched off on the server: menlo-gw-2's agent
    // puts forwarding back as it found it (off in a new namespace) and the laptop routes the
    // office LAN through menlo-gw-1 only; menlo-gw-1 keeps forwarding (the positive control).
    let forwarding = |node: &str| -> anyhow::Result<String> {
        Ok(office
            .ns(node)
            .exec(&["sysctl", "-n", "net.ipv4.ip_forward"])?
            .trim()
            .to_owned())
    };
    ensure!(
        forwarding("gw2")? == "1",
        "positive control: menlo-gw-2 does not forward while it is a gateway"
    );
    office.cli(&["systems", "gateway", "menlo-gw-2", "off"])?;
    let off_at = office.revision()?;
    office.applied("menlo-gw-2", off_at)?;
    office.applied("laptop", off_at)?;
    ensure!(
        wait_until(Duration::from_secs(2), || forwarding("gw2")
            .is_ok_and(|f| f == "0")),
        "menlo-gw-2 still forwards after it was switched off: {:?}",
        forwarding("gw2")
    );
    ensure!(forwarding("gw1")? == "1", "menlo-gw-1 stopped forwarding");
    let status = office.status("sender")?;
    ensure!(
        gateway_for(&status, "menlo-gw-2").is_empty()
            && gateway_for(&status, "menlo-gw-1").contains(&LAN.to_owned()),
        "after switching menlo-gw-2 off the laptop's gateways for {LAN}: menlo-gw-1 {:?}, menlo-gw-2 {:?}",
        gateway_for(&status, "menlo-gw-1"),
        gateway_for(&status, "menlo-gw-2")
    );
    until_answered(office.ns("sender"), DC1, Duration::from_secs(10))
        .context("the office LAN through menlo-gw-1 after menlo-gw-2 was switched off")?;
    office.no_secret_logged()
}
