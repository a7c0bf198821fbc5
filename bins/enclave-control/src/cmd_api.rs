//! The commands that talk to the running server's API.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand, ValueEnum};
use enclave_control::client::{Answer, Client};
use enclave_control::tls::{self, Trust};
use enclave_policy::Timestamp;
use serde_json::{json, Value};

/// Where the server is and how to trust it.
#[derive(Debug, Args)]
pub struct Server {
    /// The server's URL.
    #[arg(
        long,
        env = "ENCLAVE_CONTROL_URL",
        default_value = "https://127.0.0.1:8443",
        global = true
    )]
    server: String,
    /// An admin token (`enclave-control admin token create`); better in the environment.
    #[arg(
        long,
        env = "ENCLAVE_CONTROL_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// The SHA-256 fingerprint of the server's certificate (printed by `enclave-control run`).
    #[arg(long, env = "ENCLAVE_CONTROL_FINGERPRINT", global = true)]
    fingerprint: Option<String>,
    /// Trust the server's certificate through this CA (PEM) instead of a fingerprint.
    #[arg(
        long,
        env = "ENCLAVE_CONTROL_CA",
        global = true,
        conflicts_with = "fingerprint"
    )]
    ca: Option<PathBuf>,
}

impl Server {
    fn client(&self) -> anyhow::Result<Client> {
        let trust = match (&self.fingerprint, &self.ca) {
            (Some(f), _) => Some(Trust::Fingerprint(tls::parse_fingerprint(f)?)),
            (None, Some(ca)) => Some(Trust::Ca(ca.clone())),
            (None, None) => None,
        };
        if self.token.is_none() {
            bail!("no admin token: set ENCLAVE_CONTROL_TOKEN (or pass --token); make one with `enclave-control admin token create` on the server host");
        }
        Ok(Client::new(&self.server, trust, self.token.clone())?)
    }

    /// One request; an error status becomes an error with the server's message and problems.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Answer> {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        self.send(method, path, body)
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> anyhow::Result<Answer> {
        let client = self.client()?;
        let method = hyper::Method::from_bytes(method.as_bytes()).context("bad method")?;
        let answer = crate::runtime()?.block_on(client.request(method, path, body))?;
        if answer.status.is_success() {
            return Ok(answer);
        }
        if answer.status == hyper::StatusCode::UNAUTHORIZED {
            bail!("the server refused the admin token (401): check ENCLAVE_CONTROL_TOKEN");
        }
        let value = answer.json();
        let mut message = value["error"].as_str().map_or_else(
            || String::from_utf8_lossy(&answer.body).into_owned(),
            str::to_owned,
        );
        for line in value["diagnostics"].as_array().into_iter().flatten() {
            message.push_str(&format!("\n  {}", line.as_str().unwrap_or_default()));
        }
        bail!("{message} ({})", answer.status)
    }
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn warnings(value: &Value) {
    for w in value["warnings"].as_array().into_iter().flatten() {
        eprintln!(
            "warning: {}: {}",
            w["field"].as_str().unwrap_or_default(),
            w["message"].as_str().unwrap_or_default()
        );
    }
}

pub(crate) fn when(value: &Value) -> String {
    value
        .as_i64()
        .and_then(|s| Timestamp::from_second(s).ok())
        .map_or_else(
            || "never".to_owned(),
            |t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string(),
        )
}

/// A plain text table: a header and rows, columns padded.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// How a list is printed, and from which server.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// As JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: Server,
}

impl ListArgs {
    /// The list at `path`: as JSON, or as a table of `header` with one row per element.
    fn print(
        &self,
        path: &str,
        header: &[&str],
        row: impl Fn(&Value) -> Vec<String>,
    ) -> anyhow::Result<ExitCode> {
        let value = self.server.call("GET", path, None)?.json();
        print_list(&value, self.json, header, row)
    }
}

/// A list answer: as JSON, or as a table of `header` with one row per element.
fn print_list(
    value: &Value,
    json: bool,
    header: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
) -> anyhow::Result<ExitCode> {
    if json {
        print_json(value)?;
    } else {
        let rows: Vec<Vec<String>> = value.as_array().into_iter().flatten().map(row).collect();
        table(header, &rows);
    }
    Ok(ExitCode::SUCCESS)
}

/// A change: the request, the validation's warnings on stderr, then `done` on stdout.
fn change(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<Value>,
    done: &str,
) -> anyhow::Result<ExitCode> {
    let value = server.call(method, path, body)?.json();
    warnings(&value);
    println!("{done}");
    Ok(ExitCode::SUCCESS)
}

/// A string field of a JSON object, or `missing` when absent.
fn field(value: &Value, key: &str, missing: &str) -> String {
    value[key].as_str().unwrap_or(missing).to_owned()
}

fn yes_no(yes: bool) -> String {
    if yes { "yes" } else { "no" }.to_owned()
}

// ---- import / export ----

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The network definition file.
    file: PathBuf,
    #[command(flatten)]
    server: Server,
}

pub fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let name = args.file.display().to_string();
    let path = format!("/api/v1/definition?file={}", encode(&name));
    let answer = args
        .server
        .send("PUT", &path, Some(("application/toml", text)))?;
    let value = answer.json();
    warnings(&value);
    println!(
        "imported {}: {}",
        name,
        value["done"].as_str().unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    server: Server,
}

pub fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let answer = args.server.call("GET", "/api/v1/definition", None)?;
    print!("{}", String::from_utf8_lossy(&answer.body));
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes a path segment or query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---- keys ----

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ApprovalArg {
    Auto,
    Manual,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an enrolment key and print it (once).
    Create {
        /// Tags the enrolled systems get (repeat, or comma-separated).
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        /// Approve enrolled systems at once, or leave them pending.
        #[arg(long, value_enum, default_value = "manual")]
        approval: ApprovalArg,
        /// How many systems it may enrol (default: no limit).
        #[arg(long)]
        uses: Option<u32>,
        /// When it stops working: 90s, 30m, 24h, 7d, 2w (default: never).
        #[arg(long)]
        expires: Option<String>,
        /// Enrolled systems are removed when they stay disconnected.
        #[arg(long)]
        ephemeral: bool,
        /// Print the whole answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: Server,
    },
    /// List the enrolment keys (never the keys themselves).
    List(ListArgs),
    /// Revoke an enrolment key by its id.
    Revoke {
        /// The key's id (from `keys list`).
        id: String,
        #[command(flatten)]
        server: Server,
    },
}

pub fn keys(cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Create {
            tags,
            approval,
            uses,
            expires,
            ephemeral,
            json,
            server,
        } => {
            let body = json!({
                "tags": tags,
                "approval": match approval { ApprovalArg::Auto => "auto", ApprovalArg::Manual => "manual" },
                "uses": uses,
                "expires": expires,
                "ephemeral": ephemeral,
            });
            let value = server.call("POST", "/api/v1/keys", Some(body))?.json();
            if json {
                print_json(&value)?;
            } else {
                eprintln!(
                    "Enrolment key {} ({} approval{}{}{}). It is shown only now:",
                    value["id"].as_str().unwrap_or_default(),
                    value["approval"].as_str().unwrap_or_default(),
                    uses.map(|n| format!(", {n} uses")).unwrap_or_default(),
                    value["expires_at"]
                        .as_i64()
                        .map(|_| format!(", expires {}", when(&value["expires_at"])))
                        .unwrap_or_default(),
                    if ephemeral { ", ephemeral" } else { "" },
                );
                println!("{}", value["key"].as_str().unwrap_or_default());
            }
        }
        KeysCommand::List(list) => {
            return list.print(
                "/api/v1/keys",
                &[
                    "ID",
                    "STATUS",
                    "APPROVAL",
                    "USES",
                    "EXPIRES",
                    "TAGS",
                    "EPHEMERAL",
                ],
                |k| {
                    vec![
                        field(k, "id", ""),
                        field(k, "status", ""),
                        field(k, "approval", ""),
                        match k["uses_allowed"].as_i64() {
                            Some(n) => format!("{}/{n}", k["uses"]),
                            None => format!("{}", k["uses"]),
                        },
                        if k["expires_at"].is_null() {
                            "never".into()
                        } else {
                            when(&k["expires_at"])
                        },
                        strings(&k["tags"]),
                        yes_no(k["ephemeral"] == true),
                    ]
                },
            );
        }
        KeysCommand::Revoke { id, server } => {
            let path = format!("/api/v1/keys/{}/revoke", encode(&id));
            return change(
                &server,
                "POST",
                &path,
                None,
                &format!("revoked enrolment key {id}"),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn strings(value: &Value) -> String {
    let list: Vec<&str> = value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

// ---- systems ----

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
pub enum SystemsCommand {
    /// Enrolled, approved, connected, last seen, gateway and subnets of every system.
    List(ListArgs),
    /// One system as JSON: its settings, where its agent is connected and, when connected to
    /// this server, what it reported (peers, active gateways, discovered subnets).
    Show(SystemArgs),
    /// Approve a pending system.
    Approve(SystemArgs),
    /// Revoke a system: every peer drops it.
    Revoke(SystemArgs),
    /// Delete a system.
    Delete(SystemArgs),
    /// Rename, retag, enable or disable a system, or set its endpoint.
    Edit {
        /// The system.
        name: String,
        /// A new name.
        #[arg(long = "rename")]
        new_name: Option<String>,
        /// New tags, replacing the old (comma-separated; `--tags ''` for none).
        #[arg(long, value_delimiter = ',')]
        tags: Option<Vec<String>>,
        /// Enable or disable its tunnels.
        #[arg(long, value_enum)]
        enabled: Option<OnOff>,
        /// The underlay address and port other systems reach it at (a gateway's public
        /// address, say); `--endpoint ''` removes it.
        #[arg(long)]
        endpoint: Option<String>,
        #[command(flatten)]
        server: Server,
    },
    /// Add a device that runs an official WireGuard app (Windows, macOS, iOS, Android) instead
    /// of our agent, and print its wg-quick configuration. The key pair is made by the server
    /// and its private key is in this configuration only (never stored); or pass the public
    /// key the app made.
    AddApp {
        /// The device's name.
        name: String,
        /// Its tags (comma-separated): what its policies select.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        /// The public key the app made (then the configuration has no private key).
        #[arg(long)]
        public_key: Option<String>,
        /// Write the configuration to this file (mode 0600) instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        server: Server,
    },
    /// The wg-quick configuration of a device added with `add-app`, as its policies and
    /// gateways are now (without its private key, which the server does not keep).
    AppConfig {
        /// The device's name.
        name: String,
        /// Write it to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        server: Server,
    },
    /// "Allow this system to act as a gateway": on or off.
    Gateway {
        /// The system.
        name: String,
        /// On or off.
        #[arg(value_enum)]
        state: OnOff,
        #[command(flatten)]
        server: Server,
    },
}

/// A command on one system.
#[derive(Debug, Args)]
pub struct SystemArgs {
    /// The system.
    name: String,
    #[command(flatten)]
    server: Server,
}

impl SystemArgs {
    /// Its path in the API, with `rest` after it.
    fn path(&self, rest: &str) -> String {
        format!("/api/v1/systems/{}{rest}", encode(&self.name))
    }

    /// `method` on its path with `rest`, without a body; `done NAME` is said after.
    fn change(self, method: &'static str, rest: &str, done: &str) -> SystemChange {
        let path = self.path(rest);
        (
            self.server,
            method,
            path,
            None,
            format!("{done} {}", self.name),
        )
    }
}

/// What [`systems`] hands to [`change`]: the server, method, path, body and what to say after.
type SystemChange = (Server, &'static str, String, Option<Value>, String);

pub fn systems(cmd: SystemsCommand) -> anyhow::Result<ExitCode> {
    let (server, method, path, body, done): SystemChange = match cmd {
        SystemsCommand::List(list) => {
            return list.print("/api/v1/systems", SYSTEMS_HEADER, system_row);
        }
        SystemsCommand::Show(system) => {
            print_json(&system.server.call("GET", &system.path(""), None)?.json())?;
            return Ok(ExitCode::SUCCESS);
        }
        SystemsCommand::AddApp {
            name,
            tags,
            public_key,
            output,
            server,
        } => {
            let mut body = json!({
                "name": name,
                "tags": tags.into_iter().filter(|t| !t.is_empty()).collect::<Vec<_>>(),
            });
            if let Some(key) = public_key {
                body["public_key"] = json!(key);
            }
            let value = server
                .call("POST", "/api/v1/app-devices", Some(body))?
                .json();
            warnings(&value);
            eprintln!(
                "added {name} ({}), a device with the WireGuard app",
                value["system"]["address"].as_str().unwrap_or("?")
            );
            if value["config"]["private_key_included"] == true {
                eprintln!(
                    "its private key is in this configuration only: the server does not keep it"
                );
            }
            return app_config(&value["config"], output.as_deref());
        }
        SystemsCommand::AppConfig {
            name,
            output,
            server,
        } => {
            let path = format!("/api/v1/app-devices/{}", encode(&name));
            let value = server.call("GET", &path, None)?.json();
            return app_config(&value["config"], output.as_deref());
        }
        SystemsCommand::Approve(system) => system.change("POST", "/approve", "approved"),
        SystemsCommand::Revoke(system) => system.change("POST", "/revoke", "revoked"),
        SystemsCommand::Delete(system) => system.change("DELETE", "", "deleted"),
        SystemsCommand::Edit {
            name,
            new_name,
            tags,
            enabled,
            endpoint,
            server,
        } => {
            let mut body = json!({});
            if let Some(endpoint) = endpoint {
                body["endpoint"] = json!(endpoint);
            }
            if let Some(n) = new_name {
                body["name"] = json!(n);
            }
            if let Some(t) = tags {
                body["tags"] = json!(t.into_iter().filter(|t| !t.is_empty()).collect::<Vec<_>>());
            }
            if let Some(e) = enabled {
                body["enabled"] = json!(matches!(e, OnOff::On));
            }
            let path = format!("/api/v1/systems/{}", encode(&name));
            (server, "PATCH", path, Some(body), format!("updated {name}"))
        }
        SystemsCommand::Gateway {
            name,
            state,
            server,
        } => {
            let allowed = matches!(state, OnOff::On);
            let path = format!("/api/v1/systems/{}/gateway", encode(&name));
            let word = if allowed {
                "allowed to act as a gateway"
            } else {
                "no longer a gateway"
            };
            (
                server,
                "PUT",
                path,
                Some(json!({ "allowed": allowed })),
                format!("{name} is {word}"),
            )
        }
    };
    change(&server, method, &path, body, &done)
}

/// An app device's configuration: its notes on standard error, the file on standard output or
/// into `output` (mode 0600: it may hold a private key).
fn app_config(config: &Value, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    for note in config["notes"].as_array().into_iter().flatten() {
        eprintln!("note: {}", note.as_str().unwrap_or_default());
    }
    let text = config["text"]
        .as_str()
        .context("the server's answer has no configuration")?;
    match output {
        None => print!("{text}"),
        Some(path) => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            // A file that existed keeps its mode on open: make it private before writing.
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .with_context(|| format!("cannot make {} private", path.display()))?;
            file.write_all(text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

const SYSTEMS_HEADER: &[&str] = &[
    "NAME",
    "ADDRESS",
    "ENROLLED",
    "APPROVAL",
    "CONNECTED",
    "LAST SEEN",
    "GATEWAY",
    "SUBNETS",
    "TAGS",
];

fn system_row(s: &Value) -> Vec<String> {
    let gateway = match s["gateway"]["allowed"].as_bool() {
        Some(true) => "yes",
        Some(false) => "off",
        None => "-",
    };
    let state = match s["approval"].as_str() {
        Some("approved") if s["enabled"] == false => "approved, disabled",
        Some(other) => other,
        None => "?",
    };
    vec![
        field(s, "name", ""),
        field(s, "address", ""),
        when(&s["created_at"]),
        state.to_owned(),
        yes_no(s["connected"] == true),
        when(&s["last_seen"]),
        gateway.to_owned(),
        strings(&s["gateway_subnets"]),
        strings(&s["tags"]),
    ]
}

// ---- subnets ----

#[derive(Debug, Subcommand)]
pub enum SubnetsCommand {
    /// Every gateway's subnets: discovered (with interface and reason), added, removed.
    List(ListArgs),
    /// Add a subnet to a gateway (also one not directly connected, or 0.0.0.0/0).
    Add(SubnetArgs),
    /// Remove a subnet from a gateway (a discovered one stays removed).
    Remove(SubnetArgs),
}

/// A subnet of a gateway.
#[derive(Debug, Args)]
pub struct SubnetArgs {
    /// The gateway.
    system: String,
    /// The subnet, e.g. 192.168.77.0/24.
    subnet: String,
    #[command(flatten)]
    server: Server,
}

impl SubnetArgs {
    /// Posts the gateway and the subnet to `path`; `done` is said after.
    fn post(&self, path: &str, done: &str) -> anyhow::Result<ExitCode> {
        let body = json!({ "system": self.system, "subnet": self.subnet });
        change(&self.server, "POST", path, Some(body), done)
    }
}

pub fn subnets(cmd: SubnetsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SubnetsCommand::List(list) => list.print(
            "/api/v1/subnets",
            &[
                "GATEWAY",
                "SUBNET",
                "SOURCE",
                "INTERFACE",
                "REASON",
                "STATE",
            ],
            |r| {
                ["system", "subnet", "source", "interface", "reason", "state"]
                    .map(|k| field(r, k, "-"))
                    .into()
            },
        ),
        SubnetsCommand::Add(args) => args.post(
            "/api/v1/subnets",
            &format!("added {} to {}", args.subnet, args.system),
        ),
        SubnetsCommand::Remove(args) => args.post(
            "/api/v1/subnets/remove",
            &format!("removed {} from {}", args.subnet, args.system),
        ),
    }
}

// ---- policies ----

#[derive(Debug, Subcommand)]
pub enum PoliciesCommand {
    /// List the policies.
    List(ListArgs),
    /// Delete a policy.
    Delete {
        /// Its name.
        name: String,
        #[command(flatten)]
        server: Server,
    },
    /// Create or replace policies from a file of `[[gateway_policy]]` and `[[direct_policy]]`
    /// tables, written as in the network definition.
    Put {
        /// The file.
        file: PathBuf,
        #[command(flatten)]
        server: Server,
    },
}

/// The policies of a policy file, as the API takes them (each with its `kind`).
fn policy_file(file: &Path) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not TOML", file.display()))?;
    let mut policies = Vec::new();
    for (key, value) in table {
        let kind = match key.as_str() {
            "gateway_policy" => "gateway",
            "direct_policy" => "direct",
            other => bail!(
                "{}: only [[gateway_policy]] and [[direct_policy]] tables belong in a policy file, not {other:?}",
                file.display()
            ),
        };
        let Some(tables) = value.as_array() else {
            bail!("{}: write [[{key}]], a list of tables", file.display());
        };
        for table in tables {
            let mut policy = serde_json::to_value(table)?;
            if !policy.is_object() {
                bail!("{}: each [[{key}]] is a table", file.display());
            }
            policy["kind"] = json!(kind);
            policies.push(policy);
        }
    }
    if policies.is_empty() {
        bail!(
            "{} holds no [[gateway_policy]] or [[direct_policy]]",
            file.display()
        );
    }
    Ok(policies)
}

pub fn policies(cmd: PoliciesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PoliciesCommand::List(list) => list.print(
            "/api/v1/policies",
            &["NAME", "KIND", "ENABLED", "SENDERS", "TO", "VERSION"],
            |p| {
                let to = if p["kind"] == "gateway" {
                    format!("{} via {}", strings(&p["subnets"]), strings(&p["gateways"]))
                } else {
                    strings(&p["receivers"])
                };
                vec![
                    field(p, "name", ""),
                    field(p, "kind", ""),
                    yes_no(p["enabled"] != false),
                    strings(&p["senders"]),
                    to,
                    p["version"].to_string(),
                ]
            },
        ),
        PoliciesCommand::Delete { name, server } => change(
            &server,
            "DELETE",
            &format!("/api/v1/policies/{}", encode(&name)),
            None,
            &format!("deleted policy {name:?}"),
        ),
        PoliciesCommand::Put { file, server } => {
            let policies = policy_file(&file)?;
            let existing = server.call("GET", "/api/v1/policies", None)?.json();
            for mut policy in policies {
                let name = field(&policy, "name", "");
                if name.is_empty() {
                    bail!("{}: a policy has no name", file.display());
                }
                let version = existing.as_array().and_then(|list| {
                    list.iter()
                        .find(|p| p["name"] == name.as_str())
                        .map(|p| p["version"].clone())
                });
                match version {
                    Some(version) => {
                        policy["version"] = version;
                        change(
                            &server,
                            "PUT",
                            &format!("/api/v1/policies/{}", encode(&name)),
                            Some(policy),
                            &format!("replaced policy {name:?}"),
                        )?;
                    }
                    None => {
                        change(
                            &server,
                            "POST",
                            "/api/v1/policies",
                            Some(policy),
                            &format!("created policy {name:?}"),
                        )?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

// ---- explain, audit ----

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProtoArg {
    Any,
    Icmp,
    Tcp,
    Udp,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The sending system.
    #[arg(long)]
    from: String,
    /// The destination: ADDR or ADDR:PORT.
    #[arg(long)]
    to: String,
    /// The protocol (default: any traffic at all; tcp or udp with a port).
    #[arg(long, value_enum)]
    proto: Option<ProtoArg>,
    /// The sender's public address, for public IP trust requirements.
    #[arg(long)]
    from_ip: Option<Ipv4Addr>,
    /// When (RFC 3339; default now).
    #[arg(long)]
    at: Option<String>,
    /// As JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: Server,
}

pub fn explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let body = json!({
        "from": args.from,
        "to": args.to,
        "proto": args.proto.map(|p| match p {
            ProtoArg::Any => "any",
            ProtoArg::Icmp => "icmp",
            ProtoArg::Tcp => "tcp",
            ProtoArg::Udp => "udp",
        }),
        "from_ip": args.from_ip,
        "at": args.at,
    });
    let value = args
        .server
        .call("POST", "/api/v1/explain", Some(body))?
        .json();
    if args.json {
        print_json(&value)?;
    } else {
        print!("{}", value["text"].as_str().unwrap_or_default());
    }
    Ok(if value["verdict"] == "allowed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only entries after this revision.
    #[arg(long, default_value_t = 0)]
    after: i64,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// As JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: Server,
}

pub fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let path = format!("/api/v1/audit?after={}&limit={}", args.after, args.limit);
    let value = args.server.call("GET", &path, None)?.json();
    print_list(
        &value,
        args.json,
        &["REVISION", "WHEN", "WHO", "WHAT", "ON", "DETAIL"],
        |e| {
            vec![
                e["revision"].to_string(),
                when(&e["at"]),
                field(e, "actor", ""),
                field(e, "action", ""),
                field(e, "target", ""),
                field(e, "detail", ""),
            ]
        },
    )
}
