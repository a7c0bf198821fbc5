//! The control server on PostgreSQL: a throwaway cluster from Debian's `postgresql` package,
//! made by initdb as the `postgres` user in a temporary directory, reachable only on a unix
//! socket in that directory, stopped and removed at the end even on failure. No system
//! cluster is ever touched.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context};

use crate::control_fixture::{enrol_request, Admin, ControlHost, Endpoint, KEY_A, KEY_B};
use crate::{Ctx, Scenario};

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
        let dir = tempfile::Builder::new()
            .prefix("enclave-pg-")
            .tempdir()
            .context("creating a temporary directory")?
            .keep();
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
        pg.on_data(
            "initdb",
            &["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
        )?;
        let options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -p {} -c fsync=off",
            pg.dir.display(),
            Self::PORT
        );
        let log = pg.dir.join("postgresql.log");
        let log = log.to_str().context("path is not UTF-8")?;
        pg.started = true;
        pg.on_data(
            "pg_ctl",
            &["-l", log, "-o", &options, "-w", "-t", "60", "start"],
        )?;
        Ok(pg)
    }

    /// Runs `PROGRAM -D DATA ARGS…` (initdb, pg_ctl) on our cluster's data directory.
    fn on_data(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let data = self.dir.join("data");
        let argv = [OsStr::new("-D"), data.as_os_str()]
            .into_iter()
            .chain(args.iter().map(OsStr::new));
        self.run(program, argv)
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
            if let Err(e) = self.on_data("pg_ctl", &["-m", "immediate", "-w", "stop"]) {
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

fn two_servers(ctx: &Ctx) -> anyhow::Result<()> {
    let pg = Postgres::start(ctx)?;
    pg.createdb("control")?;
    let database = pg.url("control");
    let host = ControlHost::new(ctx, "ctl")?;
    let ns = host.ns();
    let tls_a = host.dir().join("tls-a");
    let tls_b = host.dir().join("tls-b");

    let token = host.admin_token(&database, &["--name", "scenario"])?;
    let mut a = host.start_server("control-a", &database, 8441, &tls_a)?;
    let b = host.start_server("control-b", &database, 8442, &tls_b)?;
    ensure!(
        a.at.fingerprint != b.at.fingerprint,
        "the two servers made the same certificate"
    );
    let (through_a, through_b) = (host.admin(&a, &token), host.admin(&b, &token));

    // Pinning: B's fingerprint does not open A (negative), A's does (positive).
    let wrong = Endpoint {
        url: a.at.url.clone(),
        fingerprint: b.at.fingerprint.clone(),
    };
    let refused = Admin {
        at: &wrong,
        ..through_a
    }
    .cli(&["systems", "list"]);
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("not the pinned one")),
        "a server with another certificate was trusted: {refused:?}"
    );
    through_a
        .cli(&["systems", "list"])
        .context("the pinned server")?;

    // An import through A is seen through B.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/network.toml");
    through_a.cli(&["import", example.to_str().context("path")?])?;
    through_b
        .system("menlo-gw-1")
        .context("B does not see the systems imported through A")?;

    // A key made through A enrols through B (pending), is approved through A, and its single
    // use is spent for A too.
    let key = through_a.create_key(&["--tags", "users", "--approval", "manual", "--uses", "1"])?;
    let (status, enrolled) = enrol_request(ns, &b.at, &key, KEY_A, Some("new-laptop"))?;
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
    through_a.cli(&["systems", "approve", &name])?;
    let seen = through_b.system(&name)?;
    ensure!(
        seen["approval"] == "approved",
        "B does not see A's approval: {seen}"
    );
    let (status, refused) = enrol_request(ns, &a.at, &key, KEY_B, None)?;
    ensure!(
        status == 403 && refused["error"] == "the enrolment key has no uses left",
        "a used-up key through A: {status} {refused}"
    );

    // Edits through both servers at once: neither is lost.
    let add =
        |admin: &Admin<'_>, subnet: &str| admin.cli(&["subnets", "add", "menlo-gw-1", subnet]);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let one = scope.spawn(|| {
            (0..5).try_for_each(|i| add(&through_a, &format!("10.5{i}.0.0/16")).map(drop))
        });
        let two = scope.spawn(|| {
            (0..5).try_for_each(|i| add(&through_b, &format!("10.6{i}.0.0/16")).map(drop))
        });
        one.join()
            .map_err(|_| anyhow::anyhow!("a thread panicked"))??;
        two.join()
            .map_err(|_| anyhow::anyhow!("a thread panicked"))??;
        Ok(())
    })?;
    let exported = through_b.cli(&["export"])?;
    for i in 0..5 {
        for prefix in ["10.5", "10.6"] {
            let subnet = format!("\"{prefix}{i}.0.0/16\"");
            ensure!(exported.contains(&subnet), "{subnet} was lost:\n{exported}");
        }
    }

    // A killed -9: B goes on; A restarted finds everything, including what B did meanwhile.
    a.process.kill9();
    through_b.cli(&["systems", "gateway", "menlo-gw-2", "off"])?;
    drop(a);
    let a = host.start_server("control-a2", &database, 8441, &tls_a)?;
    let through_a = host.admin(&a, &token);
    let gateway = through_a.system("menlo-gw-2")?;
    ensure!(
        gateway["gateway"]["allowed"] == false,
        "after the restart A lost B's gateway switch: {gateway}"
    );
    let laptop = through_a.system(&name)?;
    ensure!(
        laptop["approval"] == "approved",
        "after the restart A lost the approval: {laptop}"
    );
    let audit = through_a.json(&["audit", "--json"])?;
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
    let host = ControlHost::new(ctx, "ctls")?;
    let ns = host.ns();
    let state = host.state();
    let database = host.sqlite();

    // Nothing exists yet: the first start creates the directory, the database and the
    // certificate.
    let token = host.admin_token(&database, &[])?;
    let mut first = host.start_server("control", &database, 8443, &state)?;
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
    let admin = host.admin(&first, &token);
    let refused = host.admin(&first, "ent_wrong").cli(&["systems", "list"]);
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("refused the admin token (401)")),
        "a wrong token: {refused:?}"
    );
    let key = admin.create_key(&["--approval", "auto", "--tags", "users"])?;
    let (status, enrolled) = enrol_request(ns, &first.at, &key, KEY_A, Some("laptop"))?;
    ensure!(
        status == 201 && enrolled["approval"] == "approved",
        "{status} {enrolled}"
    );
    // The administrator's commands against this server.
    let listed = admin.cli(&["systems", "list"])?;
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
    let created = admin.cli(&["policies", "put", policy_arg])?;
    ensure!(
        created.contains("created policy \"users to users\""),
        "policies put printed {created:?}"
    );
    let replaced = admin.cli(&["policies", "put", policy_arg])?;
    ensure!(
        replaced.contains("replaced policy \"users to users\""),
        "policies put (again) printed {replaced:?}"
    );
    std::fs::write(&policy_file, "[[system]]\nname = \"x\"\n")?;
    let refused = admin.cli(&["policies", "put", policy_arg]);
    ensure!(
        refused.as_ref().is_err_and(|e| e
            .to_string()
            .contains("only [[gateway_policy]] and [[direct_policy]]")),
        "a policy file with a system in it: {refused:?}"
    );
    let policies = admin.cli(&["policies", "list"])?;
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
    let again = host.start_server("control-again", &database, 8443, &state)?;
    ensure!(
        again.at.fingerprint == fingerprint,
        "the certificate changed across a restart: {fingerprint} then {}",
        again.at.fingerprint
    );
    let admin = host.admin(&again, &token);
    let laptop = admin
        .system("laptop")
        .context("the enrolled system is gone after the restart")?;
    ensure!(
        laptop["address"] == "100.64.0.1",
        "the enrolled system has another address after the restart: {laptop}"
    );
    let keys = admin.cli(&["keys", "list", "--json"])?;
    ensure!(!keys.contains(&key), "keys list shows the key itself");
    Ok(())
}

/// The permission bits of a file.
fn mode(path: &Path) -> anyhow::Result<u32> {
    let metadata =
        std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(metadata.permissions().mode() & 0o777)
}
