//! Running our own agents in a topology: keys from `enclave-agent keygen`, an agent
//! configuration per node, one network definition for all, and the processes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context};
use enclave_netns::{Netns, Process, SpawnOpts};

use crate::Ctx;

/// One node's agent files.
#[derive(Debug, Clone)]
pub struct AgentFiles {
    /// The node.
    pub node: String,
    /// Its public key (base64).
    pub public_key: String,
    /// Its agent configuration.
    pub config: PathBuf,
    /// Its runtime directory.
    pub runtime_dir: PathBuf,
}

/// The agent's binary: `enclave-gw` for a gateway, `enclave-agent` otherwise.
pub fn program(gateway: bool) -> &'static str {
    if gateway {
        "enclave-gw"
    } else {
        "enclave-agent"
    }
}

/// The agent runtime directory for a node: `run` in the node's own short directory, which the
/// topology removes. Unix socket paths are short (108 bytes), so it cannot go under the log
/// directory.
pub fn runtime_dir(ns: &Netns) -> anyhow::Result<PathBuf> {
    Ok(ns
        .wireguard_dir()
        .parent()
        .context("the node's wireguard directory has a parent")?
        .join("run"))
}

/// Makes a key with `enclave-agent keygen` in `ns` and writes the node's agent configuration,
/// pointing at `network` (written later with [`write_definition`]). Extra TOML lines go into
/// the configuration as they are.
pub fn prepare(ctx: &Ctx, ns: &Netns, network: &Path, extra: &str) -> anyhow::Result<AgentFiles> {
    let node = ns.node().to_owned();
    let dir = ctx.log_dir().join(format!("{node}-agent"));
    std::fs::create_dir_all(&dir)?;
    let key = dir.join("private.key");
    let _ = std::fs::remove_file(&key);
    let agent = ctx.bin("enclave-agent")?.to_string_lossy().into_owned();
    let key_path = key.to_string_lossy().into_owned();
    let public_key = ns
        .exec(&[agent.as_str(), "keygen", key_path.as_str()])?
        .trim()
        .to_owned();
    ensure!(public_key.len() == 44, "keygen printed {public_key:?}");
    let runtime_dir = runtime_dir(ns)?;
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "private_key_file = {key:?}\nnetwork_file = {network:?}\nruntime_dir = {runtime_dir:?}\n{extra}\n"
        ),
    )?;
    Ok(AgentFiles {
        node,
        public_key,
        config,
        runtime_dir,
    })
}

/// Writes the network definition atomically (a rename), so a watching agent never reads half.
pub fn write_definition(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Starts `enclave-agent run` (or `enclave-gw run` when `gateway`) in `ns` at verbosity 3, and
/// waits until it has published its status.
pub fn start(ctx: &Ctx, ns: &Netns, files: &AgentFiles, gateway: bool) -> anyhow::Result<Process> {
    start_with(ctx, ns, files, gateway, SpawnOpts::default())
}

/// The verbosity agents run at: `ENCLAVE_TEST_VERBOSITY` in the spawn options (not passed on to
/// the agent's environment), else 3.
fn verbosity(opts: &mut SpawnOpts) -> String {
    opts.env
        .remove("ENCLAVE_TEST_VERBOSITY")
        .unwrap_or_else(|| "3".to_owned())
}

/// [`start`] with extra spawn options (environment variables such as `ENCLAVE_TEST_VERBOSITY`).
pub fn start_with(
    ctx: &Ctx,
    ns: &Netns,
    files: &AgentFiles,
    gateway: bool,
    mut opts: SpawnOpts,
) -> anyhow::Result<Process> {
    let verbosity = verbosity(&mut opts);
    let bin = ctx.bin(program(gateway))?;
    let bin = bin.to_string_lossy().into_owned();
    let config = files.config.to_string_lossy().into_owned();
    let mut process = ns.spawn(
        &format!("{}-{}", program(gateway), files.node),
        &[bin.as_str(), "run", "-c", &config, "-v", &verbosity],
        opts,
    )?;
    let agent = ctx.bin("enclave-agent")?.to_string_lossy().into_owned();
    let up = enclave_netns::wait_until(Duration::from_secs(10), || {
        ns.exec(&[agent.as_str(), "status", "-c", &config, "--json"])
            .is_ok()
    });
    if !up {
        anyhow::bail!(
            "{} did not answer status within 10 s (running: {}); log:\n{}",
            files.node,
            process.is_running(),
            process.log()
        );
    }
    Ok(process)
}

/// `enclave-agent status ARGS…` of the agent of `files`: what it printed.
fn status_with(ctx: &Ctx, ns: &Netns, files: &AgentFiles, args: &[&str]) -> anyhow::Result<String> {
    let agent = ctx.bin("enclave-agent")?.to_string_lossy().into_owned();
    let config = files.config.to_string_lossy();
    let mut argv = vec![agent.as_str(), "status", "-c", config.as_ref()];
    argv.extend_from_slice(args);
    Ok(ns.exec(&argv)?)
}

/// `enclave-agent status` (text) of the agent of `files`.
pub fn status(ctx: &Ctx, ns: &Netns, files: &AgentFiles) -> anyhow::Result<String> {
    status_with(ctx, ns, files, &[])
}

/// `enclave-agent status --json` of the agent of `files`.
pub fn status_json(ctx: &Ctx, ns: &Netns, files: &AgentFiles) -> anyhow::Result<serde_json::Value> {
    let text = status_with(ctx, ns, files, &["--json"])?;
    serde_json::from_str(&text).context("status --json is not JSON")
}
