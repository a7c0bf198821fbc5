//! The control server as the scenarios, the demo and the benches use it: start `enclave-control
//! run` in a namespace, make an admin token and enrolment keys, call the CLI and the API, and
//! enrol agents with `enclave-agent enrol` / `enclave-gw enrol`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use enclave_control::client::{Client, HttpMethod};
use enclave_control::tls::{self, Trust};
use enclave_netns::{Netns, Process, SpawnOpts, Topology, TopologySpec};
use serde_json::{json, Value};

use crate::agents::AgentFiles;
use crate::Ctx;

/// Public keys for systems a scenario enrols or imports without running their agent: any 32
/// bytes are a key to the server (these are the bytes 7 and 9 repeated).
pub const KEY_A: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
/// The second such key.
pub const KEY_B: &str = "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=";

/// Where a server answers and who it is.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `https://ADDRESS:PORT`.
    pub url: String,
    /// The SHA-256 fingerprint of its certificate, as `enclave-control run` printed it.
    pub fingerprint: String,
}

/// One `enclave-control run` in a namespace, with its own certificate directory.
#[derive(Debug)]
pub struct Server {
    /// The running server.
    pub process: Process,
    /// How to reach and recognise it.
    pub at: Endpoint,
}

/// [`start_server_on`] on 127.0.0.1 with the default verbosity.
pub fn start_server(
    ns: &Netns,
    bin: &Path,
    label: &str,
    database: &str,
    port: u16,
    tls_dir: &Path,
) -> anyhow::Result<Server> {
    start_server_on(ns, bin, label, database, ("127.0.0.1", port), tls_dir, &[])
}

/// Starts `enclave-control run` on `database`, listening on `(address, port)` (the address is
/// also the name in its certificate, kept in `tls_dir`), with `extra` arguments; waits until it
/// serves and reads the fingerprint it printed.
pub fn start_server_on(
    ns: &Netns,
    bin: &Path,
    label: &str,
    database: &str,
    (address, port): (&str, u16),
    tls_dir: &Path,
    extra: &[&str],
) -> anyhow::Result<Server> {
    let bin = bin.to_str().context("binary path is not UTF-8")?;
    let listen = format!("{address}:{port}");
    let tls_dir = tls_dir.to_str().context("path is not UTF-8")?;
    let mut argv = vec![
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
    ];
    argv.extend_from_slice(extra);
    let mut process = ns.spawn(label, &argv, SpawnOpts::default())?;
    process.wait_for_log("enclave-control: serving", Duration::from_secs(30))?;
    let fingerprint = process
        .log()
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

/// A namespace `ctl` of its own, for a server with no agents, and a temporary directory for
/// its state (removed at the end).
#[derive(Debug)]
pub struct ControlHost {
    topo: Topology,
    /// The `enclave-control` binary.
    pub bin: PathBuf,
    dir: tempfile::TempDir,
}

impl ControlHost {
    /// The namespace, named after `tag`, and the directory.
    pub fn new(ctx: &Ctx, tag: &str) -> anyhow::Result<Self> {
        let mut spec = TopologySpec::new(tag);
        spec.node("ctl");
        let topo = ctx.topology(&spec)?;
        let bin = ctx.bin("enclave-control")?;
        let dir = tempfile::Builder::new()
            .prefix("enclave-control-")
            .tempdir()
            .context("a temporary directory")?;
        Ok(Self { topo, bin, dir })
    }

    /// The namespace.
    pub fn ns(&self) -> &Netns {
        self.topo.ns("ctl")
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's state directory (`state` in the temporary one, made by the server on its
    /// first start).
    pub fn state(&self) -> PathBuf {
        self.dir().join("state")
    }

    /// The URL of a SQLite database in the state directory.
    pub fn sqlite(&self) -> String {
        format!("sqlite://{}/control.db", self.state().display())
    }

    /// [`admin_token`] in this namespace.
    pub fn admin_token(&self, database: &str, args: &[&str]) -> anyhow::Result<String> {
        admin_token(self.ns(), &self.bin, database, args)
    }

    /// [`start_server`] in this namespace.
    pub fn start_server(
        &self,
        label: &str,
        database: &str,
        port: u16,
        tls_dir: &Path,
    ) -> anyhow::Result<Server> {
        start_server(self.ns(), &self.bin, label, database, port, tls_dir)
    }

    /// The administrator of `server` with `token`.
    pub fn admin<'a>(&'a self, server: &'a Server, token: &'a str) -> Admin<'a> {
        Admin {
            ns: self.ns(),
            bin: &self.bin,
            at: &server.at,
            token,
        }
    }
}

/// `enclave-control ARGS` in `ns`, with `server`, its fingerprint and `token` in the
/// environment, as an administrator runs it: its output, whether or not it succeeded.
pub fn cli_output(
    ns: &Netns,
    bin: &Path,
    server: &Endpoint,
    token: &str,
    args: &[&str],
) -> anyhow::Result<std::process::Output> {
    let mut argv = vec![bin.as_os_str()];
    argv.extend(args.iter().map(std::ffi::OsStr::new));
    ns.command(&argv)
        .env("ENCLAVE_CONTROL_URL", &server.url)
        .env("ENCLAVE_CONTROL_FINGERPRINT", &server.fingerprint)
        .env("ENCLAVE_CONTROL_TOKEN", token)
        .output()
        .context("running enclave-control")
}

/// One API request from inside `ns` (with `token`, if given): the status and the JSON answer.
/// For what has no CLI (the enrolment endpoint) or where the request itself is under test.
pub fn request(
    ns: &Netns,
    server: &Endpoint,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &Value,
) -> anyhow::Result<(u16, Value)> {
    let trust = Trust::Fingerprint(tls::parse_fingerprint(&server.fingerprint)?);
    let client = Client::new(&server.url, Some(trust), token.map(str::to_owned))?;
    let method = HttpMethod::from_bytes(method.as_bytes())?;
    let path = path.to_owned();
    let body = body.to_string().into_bytes();
    let answer = ns.run_in(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(client.request(method, &path, Some(("application/json", body))))
                    .map_err(anyhow::Error::from)
            })
    })??;
    Ok((answer.status.as_u16(), answer.json()))
}

/// `admin token create ARGS…` on the database, in the namespace: the token it printed.
pub fn admin_token(
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

/// `enclave-control admin user create NAME` on `database` in `ns`: a portal account with
/// `password` (written to a file in `dir` for `--password-file`).
pub fn portal_account(
    ns: &Netns,
    bin: &Path,
    database: &str,
    (name, password): (&str, &str),
    dir: &Path,
) -> anyhow::Result<()> {
    let password_file = dir.join("password");
    std::fs::write(&password_file, format!("{password}\n"))?;
    create_portal_account(ns, bin, database, name, &password_file)?;
    Ok(())
}

/// `enclave-control admin user create NAME --password-file FILE` on `database` in `ns`: a
/// portal account with the password in `password_file`. What the command printed.
pub fn create_portal_account(
    ns: &Netns,
    bin: &Path,
    database: &str,
    name: &str,
    password_file: &Path,
) -> anyhow::Result<String> {
    let made = ns.exec(&[
        bin.to_str().context("binary path is not UTF-8")?,
        "admin",
        "user",
        "create",
        name,
        "--database",
        database,
        "--password-file",
        password_file.to_str().context("path is not UTF-8")?,
    ])?;
    ensure!(
        made.contains(&format!("made portal account {name}")),
        "user create printed {made:?}"
    );
    Ok(made)
}

/// The enrolment key in the output of `keys create` (its last line, `enk_…`).
pub fn enrolment_key(printed: &str) -> anyhow::Result<String> {
    printed
        .lines()
        .last()
        .map(|l| l.trim().to_owned())
        .filter(|k| k.starts_with("enk_"))
        .with_context(|| format!("keys create printed {printed:?}"))
}

/// An administrator of one server: `enclave-control`'s commands and the API as they are run
/// in `ns` against `at` with `token`.
#[derive(Debug, Clone, Copy)]
pub struct Admin<'a> {
    /// Where the commands run.
    pub ns: &'a Netns,
    /// The `enclave-control` binary.
    pub bin: &'a Path,
    /// The server.
    pub at: &'a Endpoint,
    /// The admin token.
    pub token: &'a str,
}

impl Admin<'_> {
    /// `enclave-control ARGS`: its output, whether or not it succeeded ([`cli_output`]).
    pub fn output(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        cli_output(self.ns, self.bin, self.at, self.token, args)
    }

    /// `enclave-control ARGS` that must succeed: its standard output, or an error with its
    /// standard error.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.output(args)?;
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

    /// [`Self::cli`] for a command that prints JSON (`… --json`): the value.
    pub fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let text = self.cli(args)?;
        serde_json::from_str(&text)
            .with_context(|| format!("enclave-control {} printed {text}", args.join(" ")))
    }

    /// System `name`'s entry in `systems list --json`.
    pub fn system(&self, name: &str) -> anyhow::Result<Value> {
        let list = self.json(&["systems", "list", "--json"])?;
        list.as_array()
            .and_then(|l| l.iter().find(|s| s["name"] == name))
            .cloned()
            .with_context(|| format!("no system {name} in {list}"))
    }

    /// `keys create ARGS…`: the enrolment key it printed.
    pub fn create_key(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut argv = vec!["keys", "create"];
        argv.extend_from_slice(args);
        enrolment_key(&self.cli(&argv)?)
    }

    /// One API request with the token ([`request`]): the status and the JSON answer.
    pub fn request(&self, method: &str, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        request(self.ns, self.at, Some(self.token), method, path, body)
    }

    /// An API request that must answer `expect`: the JSON answer.
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: &Value,
        expect: u16,
    ) -> anyhow::Result<Value> {
        let (status, answer) = self.request(method, path, body)?;
        ensure!(
            status == expect,
            "{method} {path}: {status} {answer}, not {expect}"
        );
        Ok(answer)
    }
}

/// An agent's enrolment request as the agent sends it, without the agent: the status and the
/// answer.
pub fn enrol_request(
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
    request(ns, server, None, "POST", "/api/v1/enrol", &body)
}

/// `enclave-agent enrol` (`enclave-gw enrol` when `gateway`) in `ns` against `server`, as
/// `name`, writing `config` (and the key beside it): whether it succeeded, and what it printed.
pub fn enrol_command(
    ctx: &Ctx,
    ns: &Netns,
    gateway: bool,
    server: &Endpoint,
    enrolment_key: &str,
    name: &str,
    config: &Path,
) -> anyhow::Result<(bool, String)> {
    let bin = ctx.bin(crate::agents::program(gateway))?;
    let state = config.with_file_name("state");
    let output = ns
        .command(&[
            bin.as_os_str(),
            "enrol".as_ref(),
            "--server".as_ref(),
            server.url.as_ref(),
            "--fingerprint".as_ref(),
            server.fingerprint.as_ref(),
            "--key".as_ref(),
            enrolment_key.as_ref(),
            "--hostname".as_ref(),
            name.as_ref(),
            "--state-dir".as_ref(),
            state.as_os_str(),
            "-c".as_ref(),
            config.as_os_str(),
        ])
        .output()
        .context("running enrol")?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status.success(), printed))
}

/// What `enclave-agent enrol` (or `enclave-gw enrol`) made on a node.
#[derive(Debug)]
pub struct Enrolment {
    /// The node's agent files, the managed `agent.toml` among them.
    pub files: AgentFiles,
    /// What the command printed.
    pub output: String,
}

/// Enrols `ns` as `name` with `enrolment_key` at `server` through [`enrol_command`], in the
/// node's agent directory (`LOG_DIR/NODE-agent`): the key pair is made on the node. The managed
/// `agent.toml` gets this node's short runtime directory in front of its `[control]` section,
/// as [`crate::agents::prepare`] does for file mode.
pub fn enrol(
    ctx: &Ctx,
    ns: &Netns,
    gateway: bool,
    server: &Endpoint,
    enrolment_key: &str,
    name: &str,
) -> anyhow::Result<Enrolment> {
    let node = ns.node().to_owned();
    let dir = ctx.log_dir().join(format!("{node}-agent"));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("agent.toml");
    let (ok, printed) = enrol_command(ctx, ns, gateway, server, enrolment_key, name, &config)?;
    ensure!(ok, "enrolling {name} failed:\n{printed}");
    let runtime_dir = crate::agents::runtime_dir(ns)?;
    let written = std::fs::read_to_string(&config)?;
    std::fs::write(&config, format!("runtime_dir = {runtime_dir:?}\n{written}"))?;
    let agent = ctx.bin("enclave-agent")?;
    let public_key = ns
        .exec(&[
            agent.as_os_str(),
            "pubkey".as_ref(),
            dir.join("private.key").as_os_str(),
        ])?
        .trim()
        .to_owned();
    Ok(Enrolment {
        files: AgentFiles {
            node,
            public_key,
            config,
            runtime_dir,
        },
        output: printed,
    })
}
