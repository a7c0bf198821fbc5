//! Managed agents against a real control server: the server in its own namespace on the
//! underlay, a laptop and a gateway that enrol with enrolment keys, a gateway toggled on and a
//! policy created through the server, traffic through the gateway, the server killed -9 and
//! restarted under running agents, and a revocation that every peer applies within a second.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use enclave_netns::{wait_until, Netns, PingResult, Process, SpawnOpts, Topology, TopologySpec};
use serde_json::{json, Value};

use crate::agents::{start_with, status_json, AgentFiles};
use crate::control_fixture::{
    self, admin_token, cli, enrol_command, enrolment_key, request, start_server_on, Enrolment,
    Server,
};
use crate::office::{DC1, GW_LAN, GW_UNDERLAY, LAN, LAPTOP_UNDERLAY, PRINTER};
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
    topo: Topology,
}

/// The gateways' system names by node.
const GATEWAYS: [(&str, &str); 2] = [("gw1", "menlo-gw-1"), ("gw2", "menlo-gw-2")];

impl<'c> Fixture<'c> {
    fn start(ctx: &'c Ctx, tag: &str, gateways: usize) -> anyhow::Result<Self> {
        Self::start_on(ctx, tag, gateways, Store::Sqlite)
    }

    /// The office enrolled and running, both gateways allowed and their subnets discovered,
    /// and no policy yet (the portal's scenarios make it).
    pub(crate) fn without_policy(ctx: &'c Ctx, tag: &str, gateways: usize) -> anyhow::Result<Self> {
        Self::enrolled(ctx, tag, gateways, Store::Sqlite)
    }

    fn enrolled(ctx: &'c Ctx, tag: &str, gateways: usize, store: Store) -> anyhow::Result<Self> {
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
        for (i, (node, _)) in GATEWAYS.iter().take(gateways).enumerate() {
            spec.node(node)
                .addr(node, "eth0", &format!("{}/24", GW_UNDERLAY[i]))
                .addr(node, "lan0", &format!("{}/24", GW_LAN[i]));
            wan.push((node, "eth0"));
            lan.push((node, "lan0"));
        }
        spec.segment("wan", &wan).segment("lan", &lan);
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

        // The server does not put the underlay endpoints it sees into views yet (that comes
        // with NAT traversal): the administrator gives the gateways', through export and
        // import as for any edit of the definition.
        let mut definition = fixture.cli(&["export"])?;
        for (i, (_, name)) in GATEWAYS.iter().take(gateways).enumerate() {
            let named = format!("name = \"{name}\"\n");
            ensure!(
                definition.contains(&named),
                "the export has no {name}:\n{definition}"
            );
            definition = definition.replacen(
                &named,
                &format!("{named}endpoint = \"{}:51820\"\n", GW_UNDERLAY[i]),
                1,
            );
        }
        let path = ctx.log_dir().join("network.toml");
        std::fs::write(&path, definition)?;
        fixture.cli(&["import", path.to_str().context("path is not UTF-8")?])?;

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

        Ok(fixture)
    }

    fn start_on(ctx: &'c Ctx, tag: &str, gateways: usize, store: Store) -> anyhow::Result<Self> {
        let fixture = Self::enrolled(ctx, tag, gateways, store)?;
        // A gateway access policy made through the API; the laptop reaches the LAN with it.
        let names: Vec<&str> = GATEWAYS.iter().take(gateways).map(|(_, n)| *n).collect();
        let (status, answer) = request(
            fixture.topo.ns("ctl"),
            &fixture.server.at,
            Some(&fixture.token),
            "POST",
            "/api/v1/policies",
            &json!({
                "name": "users to Menlo Park Office",
                "kind": "gateway",
                "senders": ["users"],
                "gateways": names,
                "subnets": [LAN],
                "acl": [{ "protocol": "any" }],
            }),
        )?;
        ensure!(
            status == 200 || status == 201,
            "creating the policy: {status} {answer}"
        );
        let took = until_answered(fixture.topo.ns("sender"), DC1, Duration::from_secs(10))
            .with_context(|| {
                format!(
                    "laptop status: {:?}\nlaptop log:\n{}",
                    fixture.status("sender"),
                    tail(&fixture.agents["sender"].log(), 30)
                )
            })?;
        println!(
            "    the laptop reaches {DC1} {:.2} s after the policy was created",
            took.as_secs_f64()
        );
        Ok(fixture)
    }

    pub(crate) fn ns(&self, node: &str) -> &Netns {
        self.topo.ns(node)
    }

    /// An enrolment key with `tags`, automatic approval.
    fn key(&self, tags: &str) -> anyhow::Result<String> {
        enrolment_key(&self.cli(&["keys", "create", "--tags", tags, "--approval", "auto"])?)
    }

    pub(crate) fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        cli(
            self.topo.ns("ctl"),
            &self.control,
            &self.server.at,
            &self.token,
            args,
        )
    }

    /// The JSON that the CLI printed; null when it failed or printed something else (for
    /// polling until the server shows something).
    fn cli_json(&self, args: &[&str]) -> Value {
        self.cli(args)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null)
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

    fn agent(&mut self, node: &str) -> anyhow::Result<&mut Process> {
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
        let args = ["systems", "revoke", "laptop"];
        let revoked = Instant::now();
        if second {
            self.cli_second(&args)?;
        } else {
            self.cli(&args)?;
        }
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

    /// The CLI against the second server.
    fn cli_second(&self, args: &[&str]) -> anyhow::Result<String> {
        let second = self.second.as_ref().context("there is no second server")?;
        cli(
            self.topo.ns("ctl"),
            &self.control,
            &second.at,
            &self.token,
            args,
        )
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
    let (ok, output) = enrol_command(
        ctx,
        office.ns("sender"),
        false,
        &office.server.at,
        "enk_not-a-key",
        "laptop",
        &refused_config,
    )?;
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
    Ok(())
}

/// The core of [`basics`] on PostgreSQL, with the agents split between two servers.
fn postgres(ctx: &Ctx) -> anyhow::Result<()> {
    // The policy is made through the first server; the laptop, on the second, reaches the LAN
    // with it (Fixture::start_on checks that).
    let mut office = Fixture::start_on(ctx, "cmp", 1, Store::PostgresTwoServers)?;
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
    for (which, list) in [
        ("first", office.cli(&["systems", "list", "--json"])?),
        ("second", office.cli_second(&["systems", "list", "--json"])?),
    ] {
        let list: Value = serde_json::from_str(&list)?;
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
fn active_gateway(office: &Fixture<'_>) -> Option<&'static str> {
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
