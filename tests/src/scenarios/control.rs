//! The control server on PostgreSQL: a throwaway cluster from Debian's `postgresql` package,
//! made by initdb as the `postgres` user in a temporary directory, reachable only on a unix
//! socket in that directory, stopped and removed at the end even on failure. No system
//! cluster is ever touched.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use enclave_control::client::Client;
use enclave_control::tls::{self, Trust};
use enclave_netns::{Netns, SpawnOpts, TopologySpec};
use serde_json::{json, Value};

use crate::{Ctx, Scenario};

/// WireGuard public keys for enrolments (an agent would make its own).
const KEY_A: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
const KEY_B: &str = "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=";

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "control-postgres-store",
            about: "the store's conformance suite and the agents' connections end to end (the cases cargo test runs on SQLite), and two servers on one database, on a throwaway PostgreSQL",
            run: postgres_store,
        },
        Scenario {
            name: "control-sqlite-restart",
            about: "enclave-control on its default SQLite over TLS: created on first start, same fingerprint and data after a restart",
            run: sqlite_restart,
        },
        Scenario {
            name: "control-postgres-two-servers",
            about: "two enclave-control servers on one PostgreSQL see each other's changes; one killed -9 loses nothing",
            run: two_servers,
        },
    ]
}

/// A PostgreSQL cluster of our own. Dropping it stops it (immediate) and removes its directory.
pub(crate) struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    log_copy: PathBuf,
    started: bool,
}

/// The newest `/usr/lib/postgresql/N/bin` with initdb and pg_ctl.
fn postgres_bin() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed: apt-get install postgresql")?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .context("no /usr/lib/postgresql/N/bin with initdb and pg_ctl: apt-get install postgresql")
}

impl Postgres {
    const PORT: u16 = 5432;

    pub(crate) fn start(ctx: &Ctx) -> anyhow::Result<Self> {
        let bin = postgres_bin()?;
        let user = nix::unistd::User::from_name("postgres")
            .context("looking up the postgres user")?
            .context("no postgres user: apt-get install postgresql")?;
        let dir = unique_temp_dir("enclave-pg")?;
        // From here on, Drop removes the directory whatever happens.
        let mut pg = Self {
            dir,
            bin,
            uid: user.uid,
            gid: user.gid,
            log_copy: ctx.log_dir().join("postgresql.log"),
            started: false,
        };
        nix::unistd::chown(&pg.dir, Some(pg.uid), Some(pg.gid)).context("chown")?;
        std::fs::set_permissions(&pg.dir, std::fs::Permissions::from_mode(0o700))?;
        let data = pg.dir.join("data");
        pg.run(
            "initdb",
            [
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-U"),
                OsStr::new("postgres"),
                OsStr::new("--auth=trust"),
                OsStr::new("-E"),
                OsStr::new("UTF8"),
                OsStr::new("--no-sync"),
            ],
        )?;
        let options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -p {} -c fsync=off",
            pg.dir.display(),
            Self::PORT
        );
        let log = pg.dir.join("postgresql.log");
        pg.started = true;
        pg.run(
            "pg_ctl",
            [
                OsStr::new("-D"),
                data.as_os_str(),
                OsStr::new("-l"),
                log.as_os_str(),
                OsStr::new("-o"),
                OsStr::new(&options),
                OsStr::new("-w"),
                OsStr::new("-t"),
                OsStr::new("60"),
                OsStr::new("start"),
            ],
        )?;
        Ok(pg)
    }

    /// Runs one of PostgreSQL's programs as the postgres user.
    fn run<I, S>(&self, program: &str, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let output = Command::new(self.bin.join(program))
            .args(args)
            .current_dir(&self.dir)
            .env("LC_ALL", "C")
            .uid(self.uid.as_raw())
            .gid(self.gid.as_raw())
            .output()
            .with_context(|| format!("running {program}"))?;
        if !output.status.success() {
            bail!(
                "{program} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    pub(crate) fn createdb(&self, name: &str) -> anyhow::Result<()> {
        let dir = self.dir.display().to_string();
        let port = Self::PORT.to_string();
        self.run("createdb", ["-h", &dir, "-p", &port, name])
            .map(drop)
    }

    /// The URL of database `name` (over the unix socket).
    pub(crate) fn url(&self, name: &str) -> String {
        format!(
            "postgres://postgres@localhost/{name}?host={}&port={}",
            self.dir.display(),
            Self::PORT
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.started {
            let data = self.dir.join("data");
            if let Err(e) = self.run(
                "pg_ctl",
                [
                    OsStr::new("-D"),
                    data.as_os_str(),
                    OsStr::new("-m"),
                    OsStr::new("immediate"),
                    OsStr::new("-w"),
                    OsStr::new("stop"),
                ],
            ) {
                eprintln!("stopping the test PostgreSQL: {e:#}");
            }
        }
        let _ = std::fs::copy(self.dir.join("postgresql.log"), &self.log_copy);
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("removing {}: {e}", self.dir.display());
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting a tokio runtime")
}

fn postgres_store(ctx: &Ctx) -> anyhow::Result<()> {
    let pg = Postgres::start(ctx)?;
    let rt = runtime()?;
    let cases = enclave_control::suite::cases()
        .into_iter()
        .chain(enclave_control::suite::postgres_cases());
    for (name, case) in cases {
        let db = name.replace('-', "_");
        pg.createdb(&db)?;
        rt.block_on(case(pg.url(&db)))
            .map_err(|failure| anyhow::anyhow!("{name} on PostgreSQL: {failure}"))?;
        println!("    {name}: ok on PostgreSQL");
    }
    Ok(())
}

/// Where a server answers and who it is.
pub(crate) struct Endpoint {
    pub(crate) url: String,
    pub(crate) fingerprint: String,
}

/// One `enclave-control run` in the namespace, with its own certificate directory.
pub(crate) struct Server {
    pub(crate) process: enclave_netns::Process,
    pub(crate) at: Endpoint,
}

pub(crate) fn start_server(
    ns: &Netns,
    bin: &Path,
    label: &str,
    database: &str,
    port: u16,
    tls_dir: &Path,
) -> anyhow::Result<Server> {
    start_server_on(ns, bin, label, database, "127.0.0.1", port, tls_dir)
}

/// [`start_server`] listening on `address` (also the name in its certificate).
pub(crate) fn start_server_on(
    ns: &Netns,
    bin: &Path,
    label: &str,
    database: &str,
    address: &str,
    port: u16,
    tls_dir: &Path,
) -> anyhow::Result<Server> {
    let bin = bin.to_str().context("binary path is not UTF-8")?;
    let listen = format!("{address}:{port}");
    let tls_dir = tls_dir.to_str().context("path is not UTF-8")?;
    let mut process = ns.spawn(
        label,
        &[
            bin,
            "run",
            "--database",
            database,
            "--listen",
            &listen,
            "--tls-dir",
            tls_dir,
            "--tls-name",
            address,
        ],
        SpawnOpts::default(),
    )?;
    process.wait_for_log("enclave-control: serving", Duration::from_secs(30))?;
    let log = process.log();
    let fingerprint = log
        .lines()
        .find_map(|l| l.split("fingerprint").nth(1))
        .and_then(|rest| rest.rsplit(' ').next())
        .context("the server printed no fingerprint")?
        .to_owned();
    Ok(Server {
        process,
        at: Endpoint {
            url: format!("https://{listen}"),
            fingerprint,
        },
    })
}

/// Runs the CLI in the namespace against `server`; returns stdout, or the error with stderr.
pub(crate) fn cli(
    ns: &Netns,
    bin: &Path,
    server: &Endpoint,
    token: &str,
    args: &[&str],
) -> anyhow::Result<String> {
    let bin = bin.to_str().context("binary path is not UTF-8")?;
    let mut argv = vec![bin];
    argv.extend_from_slice(args);
    let output = ns
        .command(&argv)
        .env("ENCLAVE_CONTROL_URL", &server.url)
        .env("ENCLAVE_CONTROL_FINGERPRINT", &server.fingerprint)
        .env("ENCLAVE_CONTROL_TOKEN", token)
        .output()
        .context("running enclave-control")?;
    if !output.status.success() {
        bail!(
            "enclave-control {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A raw API call from inside the namespace (the enrolment endpoint has no CLI: agents call it).
pub(crate) fn call(
    ns: &Netns,
    server: &Endpoint,
    method: &str,
    path: &str,
    body: Value,
) -> anyhow::Result<(u16, Value)> {
    let trust = Trust::Fingerprint(tls::parse_fingerprint(&server.fingerprint)?);
    let client = Client::new(&server.url, Some(trust), None)?;
    let method = enclave_control::client::HttpMethod::from_bytes(method.as_bytes())?;
    let path = path.to_owned();
    let answer = ns.run_in(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(client.request(
                    method,
                    &path,
                    Some(("application/json", body.to_string().into_bytes())),
                ))
                .map_err(anyhow::Error::from)
            })
    })??;
    Ok((answer.status.as_u16(), answer.json()))
}

fn systems(ns: &Netns, bin: &Path, server: &Endpoint, token: &str) -> anyhow::Result<Value> {
    let out = cli(ns, bin, server, token, &["systems", "list", "--json"])?;
    serde_json::from_str(&out).context("systems list --json is not JSON")
}

fn system<'v>(list: &'v Value, name: &str) -> Option<&'v Value> {
    list.as_array()?.iter().find(|s| s["name"] == name)
}

/// `admin token create` on the database, in the namespace: the token it printed.
pub(crate) fn admin_token(
    ns: &Netns,
    bin: &Path,
    database: &str,
    args: &[&str],
) -> anyhow::Result<String> {
    let mut argv = vec![
        bin.to_str().context("binary path is not UTF-8")?,
        "admin",
        "token",
        "create",
        "--database",
        database,
    ];
    argv.extend_from_slice(args);
    let token = ns.exec(&argv)?.trim().to_owned();
    ensure!(
        token.starts_with("ent_"),
        "admin token create printed {token:?}"
    );
    Ok(token)
}

/// `keys create ARGS…`: the enrolment key it printed.
pub(crate) fn create_key(
    ns: &Netns,
    bin: &Path,
    server: &Endpoint,
    token: &str,
    args: &[&str],
) -> anyhow::Result<String> {
    let mut argv = vec!["keys", "create"];
    argv.extend_from_slice(args);
    Ok(cli(ns, bin, server, token, &argv)?.trim().to_owned())
}

/// An agent's enrolment, as the agent will send it: the status and the answer.
pub(crate) fn enrol(
    ns: &Netns,
    server: &Endpoint,
    key: &str,
    public_key: &str,
    hostname: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let mut body = json!({ "key": key, "public_key": public_key });
    if let Some(hostname) = hostname {
        body["hostname"] = json!(hostname);
    }
    call(ns, server, "POST", "/api/v1/enrol", body)
}

fn two_servers(ctx: &Ctx) -> anyhow::Result<()> {
    let pg = Postgres::start(ctx)?;
    pg.createdb("control")?;
    let database = pg.url("control");
    let mut spec = TopologySpec::new("ctl");
    spec.node("ctl");
    let topo = ctx.topology(&spec)?;
    let ns = topo.ns("ctl");
    let bin = ctx.bin("enclave-control")?;
    let tls_a = pg.dir.join("tls-a");
    let tls_b = pg.dir.join("tls-b");

    let token = admin_token(ns, &bin, &database, &["--name", "scenario"])?;
    let mut a = start_server(ns, &bin, "control-a", &database, 8441, &tls_a)?;
    let b = start_server(ns, &bin, "control-b", &database, 8442, &tls_b)?;
    ensure!(
        a.at.fingerprint != b.at.fingerprint,
        "the two servers made the same certificate"
    );

    // Pinning: B's fingerprint does not open A (negative), A's does (positive).
    let wrong = Endpoint {
        url: a.at.url.clone(),
        fingerprint: b.at.fingerprint.clone(),
    };
    let refused = cli(ns, &bin, &wrong, &token, &["systems", "list"]);
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("not the pinned one")),
        "a server with another certificate was trusted: {refused:?}"
    );
    cli(ns, &bin, &a.at, &token, &["systems", "list"]).context("the pinned server")?;

    // An import through A is seen through B.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/network.toml");
    cli(
        ns,
        &bin,
        &a.at,
        &token,
        &["import", example.to_str().context("path")?],
    )?;
    let through_b = systems(ns, &bin, &b.at, &token)?;
    ensure!(
        system(&through_b, "menlo-gw-1").is_some(),
        "B does not see the systems imported through A: {through_b}"
    );

    // A key made through A enrols through B (pending), is approved through A, and its single
    // use is spent for A too.
    let key = create_key(
        ns,
        &bin,
        &a.at,
        &token,
        &["--tags", "users", "--approval", "manual", "--uses", "1"],
    )?;
    let (status, enrolled) = enrol(ns, &b.at, &key, KEY_A, Some("new-laptop"))?;
    ensure!(status == 201, "enrolment through B: {status} {enrolled}");
    ensure!(enrolled["approval"] == "pending", "{enrolled}");
    let name = enrolled["system"]
        .as_str()
        .context("no system name")?
        .to_owned();
    ensure!(
        enrolled["address"] == "100.64.0.1",
        "allocated {}",
        enrolled["address"]
    );
    cli(ns, &bin, &a.at, &token, &["systems", "approve", &name])?;
    let through_b = systems(ns, &bin, &b.at, &token)?;
    ensure!(
        system(&through_b, &name).is_some_and(|s| s["approval"] == "approved"),
        "B does not see A's approval: {through_b}"
    );
    let (status, refused) = enrol(ns, &a.at, &key, KEY_B, None)?;
    ensure!(
        status == 403 && refused["error"] == "the enrolment key has no uses left",
        "a used-up key through A: {status} {refused}"
    );

    // Edits through both servers at once: neither is lost.
    let add = |server: &Endpoint, subnet: &str| {
        cli(
            ns,
            &bin,
            server,
            &token,
            &["subnets", "add", "menlo-gw-1", subnet],
        )
    };
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let one = scope
            .spawn(|| (0..5).try_for_each(|i| add(&a.at, &format!("10.5{i}.0.0/16")).map(drop)));
        let two = scope
            .spawn(|| (0..5).try_for_each(|i| add(&b.at, &format!("10.6{i}.0.0/16")).map(drop)));
        one.join()
            .map_err(|_| anyhow::anyhow!("a thread panicked"))??;
        two.join()
            .map_err(|_| anyhow::anyhow!("a thread panicked"))??;
        Ok(())
    })?;
    let exported = cli(ns, &bin, &b.at, &token, &["export"])?;
    for i in 0..5 {
        for prefix in ["10.5", "10.6"] {
            let subnet = format!("\"{prefix}{i}.0.0/16\"");
            ensure!(exported.contains(&subnet), "{subnet} was lost:\n{exported}");
        }
    }

    // A killed -9: B goes on; A restarted finds everything, including what B did meanwhile.
    a.process.kill9();
    cli(
        ns,
        &bin,
        &b.at,
        &token,
        &["systems", "gateway", "menlo-gw-2", "off"],
    )?;
    drop(a);
    let a = start_server(ns, &bin, "control-a2", &database, 8441, &tls_a)?;
    let through_a = systems(ns, &bin, &a.at, &token)?;
    ensure!(
        system(&through_a, "menlo-gw-2").is_some_and(|s| s["gateway"]["allowed"] == false)
            && system(&through_a, &name).is_some_and(|s| s["approval"] == "approved"),
        "after the restart A lost something: {through_a}"
    );
    let audit = cli(ns, &bin, &a.at, &token, &["audit", "--json"])?;
    let audit: Value = serde_json::from_str(&audit)?;
    let actions: Vec<&str> = audit
        .as_array()
        .context("audit is not a list")?
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for expected in [
        "definition.import",
        "key.create",
        "system.enrol",
        "system.approve",
        "subnet.add",
        "system.gateway",
    ] {
        ensure!(
            actions.contains(&expected),
            "the audit log misses {expected}: {actions:?}"
        );
    }
    drop(b);
    drop(a);
    Ok(())
}

fn sqlite_restart(ctx: &Ctx) -> anyhow::Result<()> {
    let mut spec = TopologySpec::new("ctls");
    spec.node("ctl");
    let topo = ctx.topology(&spec)?;
    let ns = topo.ns("ctl");
    let bin = ctx.bin("enclave-control")?;
    let dir = TempDir::new("enclave-control-sqlite")?;
    let state = dir.0.join("state");
    let database = format!("sqlite://{}/control.db", state.display());

    // Nothing exists yet: the first start creates the directory, the database and the
    // certificate.
    let token = admin_token(ns, &bin, &database, &[])?;
    let mut first = start_server(ns, &bin, "control", &database, 8443, &state)?;
    ensure!(
        first.process.log().contains("(self-signed, made now)"),
        "the first start did not make a certificate:\n{}",
        first.process.log()
    );
    for file in ["control.db", "tls.key"] {
        let mode = mode(&state.join(file))?;
        ensure!(mode == 0o600, "{file} has mode {mode:o}");
    }

    // A wrong token is refused (negative), the right one works (positive).
    let refused = cli(ns, &bin, &first.at, "ent_wrong", &["systems", "list"]);
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("refused the admin token (401)")),
        "a wrong token: {refused:?}"
    );
    let key = create_key(
        ns,
        &bin,
        &first.at,
        &token,
        &["--approval", "auto", "--tags", "users"],
    )?;
    let (status, enrolled) = enrol(ns, &first.at, &key, KEY_A, Some("laptop"))?;
    ensure!(
        status == 201 && enrolled["approval"] == "approved",
        "{status} {enrolled}"
    );
    let listed = cli(ns, &bin, &first.at, &token, &["systems", "list"])?;
    ensure!(
        listed.lines().next().is_some_and(|h| h.starts_with("NAME")
            && h.contains("APPROVAL")
            && h.contains("LAST SEEN"))
            && listed.contains("laptop")
            && listed.contains("100.64.0.1"),
        "systems list:\n{listed}"
    );

    // Policies from a file in the definition's syntax: created, then replaced; a file with
    // anything else in it is refused and changes nothing.
    let policy_file = state.join("policy.toml");
    std::fs::write(
        &policy_file,
        "[[direct_policy]]\nname = \"users to users\"\nsenders = [\"users\"]\n\
         receivers = [\"users\"]\nacl = [{ protocol = \"icmp\" }]\n",
    )?;
    let policy_arg = policy_file.to_str().context("path is not UTF-8")?;
    let created = cli(
        ns,
        &bin,
        &first.at,
        &token,
        &["policies", "put", policy_arg],
    )?;
    ensure!(
        created.contains("created policy \"users to users\""),
        "policies put printed {created:?}"
    );
    let replaced = cli(
        ns,
        &bin,
        &first.at,
        &token,
        &["policies", "put", policy_arg],
    )?;
    ensure!(
        replaced.contains("replaced policy \"users to users\""),
        "policies put (again) printed {replaced:?}"
    );
    std::fs::write(&policy_file, "[[system]]\nname = \"x\"\n")?;
    let refused = cli(
        ns,
        &bin,
        &first.at,
        &token,
        &["policies", "put", policy_arg],
    );
    ensure!(
        refused.as_ref().is_err_and(|e| e
            .to_string()
            .contains("only [[gateway_policy]] and [[direct_policy]]")),
        "a policy file with a system in it: {refused:?}"
    );
    let policies = cli(ns, &bin, &first.at, &token, &["policies", "list"])?;
    ensure!(
        policies.contains("users to users") && !policies.contains(" x "),
        "policies list:\n{policies}"
    );

    // Stopped and started again: the same certificate, the same data.
    let stopped = first.process.stop();
    ensure!(
        stopped.is_some_and(|s| s.success()),
        "SIGTERM did not stop the server cleanly: {stopped:?}"
    );
    let fingerprint = first.at.fingerprint.clone();
    drop(first);
    let again = start_server(ns, &bin, "control-again", &database, 8443, &state)?;
    ensure!(
        again.at.fingerprint == fingerprint,
        "the certificate changed across a restart: {fingerprint} then {}",
        again.at.fingerprint
    );
    let systems = systems(ns, &bin, &again.at, &token)?;
    ensure!(
        system(&systems, "laptop").is_some_and(|s| s["address"] == "100.64.0.1"),
        "the enrolled system is gone after the restart: {systems}"
    );
    let keys = cli(ns, &bin, &again.at, &token, &["keys", "list", "--json"])?;
    ensure!(!keys.contains(&key), "keys list shows the key itself");
    Ok(())
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> anyhow::Result<Self> {
        unique_temp_dir(prefix).map(Self)
    }
}

/// A new directory in the temporary directory, named for this process and this moment.
fn unique_temp_dir(prefix: &str) -> anyhow::Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The permission bits of a file.
fn mode(path: &Path) -> anyhow::Result<u32> {
    let metadata =
        std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(metadata.permissions().mode() & 0o777)
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
