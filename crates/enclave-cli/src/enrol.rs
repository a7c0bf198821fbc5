//! `enclave-agent enrol` (and `enclave-gw enrol`): joins a managed network with an enrolment
//! key and writes a managed `agent.toml`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use enclave_runtime::config::{parse_fingerprint, AgentConfig, DEFAULT_PATH, DEFAULT_STATE_DIR};
use enclave_runtime::managed::{enrol, Enrolled, Trust};

/// The arguments of `enrol`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("enrolment_key").required(true).args(["key", "key_file"])))]
#[command(group(clap::ArgGroup::new("pin").args(["fingerprint", "ca"])))]
pub struct EnrolArgs {
    /// The control server, https://HOST:PORT.
    #[arg(long)]
    pub server: String,
    /// The enrolment key (`enk_…`, from `enclave-control keys create`). It may show in the
    /// process list: prefer --key-file on shared hosts.
    #[arg(long)]
    pub key: Option<String>,
    /// A file holding the enrolment key (mode 0600).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// The SHA-256 fingerprint of the server's certificate, as `enclave-control run` prints it.
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// A CA file (PEM) that signed the server's certificate, instead of a fingerprint.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// The agent configuration to write.
    #[arg(long, short = 'c', default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Where to write the private key (default: private.key beside the configuration).
    #[arg(long)]
    pub private_key: Option<PathBuf>,
    /// Where the agent keeps its last good view.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// The name to ask for (default: this host's name).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Overwrite an existing configuration.
    #[arg(long)]
    pub force: bool,
    /// Make a new key even if one exists (the old one stops working on the server).
    #[arg(long)]
    pub replace_key: bool,
}

/// The text of a managed `agent.toml`. Strings are written as JSON strings, which TOML reads
/// the same.
fn managed_config(
    private_key: &Path,
    server: &str,
    pin: &Pin,
    state_dir: &Path,
    hostname: Option<&str>,
) -> anyhow::Result<String> {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let path = |p: &Path| -> anyhow::Result<String> {
        p.to_str()
            .map(quote)
            .with_context(|| format!("{} is not UTF-8", p.display()))
    };
    let mut text = format!(
        "private_key_file = {}\n\n[control]\nserver = {}\n",
        path(private_key)?,
        quote(server)
    );
    match pin {
        Pin::Fingerprint(fingerprint) => {
            text.push_str(&format!("fingerprint = {}\n", quote(fingerprint)));
        }
        Pin::Ca(ca) => text.push_str(&format!("ca_file = {}\n", path(ca)?)),
    }
    text.push_str(&format!("state_dir = {}\n", path(state_dir)?));
    if let Some(hostname) = hostname {
        text.push_str(&format!("hostname = {}\n", quote(hostname)));
    }
    Ok(text)
}

enum Pin {
    Fingerprint(String),
    Ca(PathBuf),
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_owned());
    }
    Ok(std::env::current_dir()
        .context("cannot tell the current directory")?
        .join(path))
}

/// Enrols this host and writes its managed configuration; `binary` names the command in the
/// next steps it prints.
pub fn run(args: EnrolArgs, binary: &str) -> anyhow::Result<ExitCode> {
    let config_path = absolute(&args.config)?;
    let private_key = match &args.private_key {
        Some(path) => absolute(path)?,
        None => config_path
            .parent()
            .unwrap_or(Path::new("/"))
            .join("private.key"),
    };
    let state_dir = absolute(&args.state_dir)?;
    let (pin, trust) = match (&args.fingerprint, &args.ca) {
        (Some(text), _) => {
            let bytes = parse_fingerprint(text).with_context(|| {
                format!("--fingerprint {text:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed, as `enclave-control run` prints it)")
            })?;
            (Pin::Fingerprint(text.trim().to_owned()), Trust::Fingerprint(bytes))
        }
        (None, Some(ca)) => {
            let ca = absolute(ca)?;
            (Pin::Ca(ca.clone()), Trust::Ca(ca))
        }
        (None, None) => bail!(
            "the server's identity must be pinned: pass --fingerprint (printed by `enclave-control run`) or --ca FILE"
        ),
    };

    // Everything that can be checked is checked before the server hears of us, so that a
    // refusal, or a mistake here, leaves the host as it was.
    let text = managed_config(
        &private_key,
        &args.server,
        &pin,
        &state_dir,
        args.hostname.as_deref(),
    )?;
    AgentConfig::parse(&text).map_err(|message| anyhow::anyhow!("{message}"))?;
    if !args.force && std::fs::symlink_metadata(&config_path).is_ok() {
        bail!(
            "{} exists already: this host is configured (enrolled before?); pass --force to replace it, or -c PATH to write another file",
            config_path.display()
        );
    }
    let config_dir = config_path.parent().unwrap_or(Path::new("/"));
    enrol::check_dir_if_present(config_dir, 0o755)
        .with_context(|| format!("cannot write the configuration in {}", config_dir.display()))?;
    enrol::check_key_path(&private_key, args.replace_key)?;
    let enrolment_key = match (&args.key, &args.key_file) {
        (Some(key), _) => zeroize::Zeroizing::new(key.clone()),
        (None, Some(file)) => enclave_runtime::config::read_secret_file(file)?,
        (None, None) => bail!("give the enrolment key: --key KEY or --key-file FILE"),
    };
    let hostname = args.hostname.clone().or_else(enrol::hostname);

    let (key, enrolled) =
        enrol::enrol_blocking(&args.server, &trust, &enrolment_key, hostname.as_deref()).map_err(
            |err| {
                // The error and its causes on one line.
                let err = anyhow::Error::new(err);
                anyhow::anyhow!("{err:#}\nNothing was changed on this host.")
            },
        )?;
    drop(enrolment_key);

    enrol::write_private_key(&private_key, &key)?;
    drop(key);
    let name = config_path.file_name().unwrap_or(config_path.as_os_str());
    let header = format!(
        "# Written by `{binary} enrol`: this system is {:?} ({}) on the control server below,\n# which sends it its view. See docs/managed-agents.md.\n",
        enrolled.system, enrolled.address
    );
    enclave_statefile::ensure_private_dir(config_dir, 0o755)
        .and_then(|()| {
            enclave_statefile::write_atomic(
                config_dir,
                name,
                format!("{header}{text}").as_bytes(),
                0o644,
            )
        })
        .with_context(|| {
            format!(
                "the system is enrolled and its key is in {}, but the configuration could not be written",
                private_key.display()
            )
        })?;
    print!(
        "{}",
        summary(&enrolled, &args.server, &private_key, &config_path, binary)
    );
    Ok(ExitCode::SUCCESS)
}

/// What happened and what to do next, for someone who has never done it.
fn summary(
    enrolled: &Enrolled,
    server: &str,
    private_key: &Path,
    config: &Path,
    binary: &str,
) -> String {
    let tags = if enrolled.tags.is_empty() {
        "(none)".to_owned()
    } else {
        enrolled.tags.join(", ")
    };
    let config_arg = if config == Path::new(DEFAULT_PATH) {
        String::new()
    } else {
        format!(" -c {}", config.display())
    };
    let approval = if enrolled.approval == "approved" {
        "approved: it may take part as soon as the agent runs".to_owned()
    } else {
        format!(
            "{}: an administrator must approve it before it can reach anyone\n                   (`enclave-control systems approve {}`); the agent can start now and waits for that",
            enrolled.approval, enrolled.system
        )
    };
    format!(
        "Enrolled with {server} as {:?}.\n\
         \x20 Virtual address: {} (network {})\n\
         \x20 Tags:            {tags}\n\
         \x20 Approval:        {approval}\n\
         The private key is in {} (mode 0600; it never leaves this host),\n\
         the configuration in {}.\n\
         Next: start the agent: `{binary} run{config_arg}` (under systemd: `systemctl enable --now {binary}`).\n",
        enrolled.system,
        enrolled.address,
        enrolled.overlay,
        private_key.display(),
        config.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_configuration_reads_back_as_written() {
        let fingerprint = "AB:".repeat(31) + "AB";
        let text = managed_config(
            Path::new("/etc/enclave/odd \"name\".key"),
            "https://control.example.net:8443",
            &Pin::Fingerprint(fingerprint.clone()),
            Path::new("/var/lib/enclave"),
            Some("laptop"),
        )
        .unwrap();
        let config = AgentConfig::parse(&text).unwrap();
        assert_eq!(
            config.private_key_file,
            Path::new("/etc/enclave/odd \"name\".key")
        );
        let control = config.control().unwrap();
        assert_eq!(control.server, "https://control.example.net:8443");
        assert_eq!(control.fingerprint.as_deref(), Some(fingerprint.as_str()));
        assert_eq!(control.hostname.as_deref(), Some("laptop"));
        assert_eq!(control.enrolment_key_file, None);

        let text = managed_config(
            Path::new("/k"),
            "https://h:1",
            &Pin::Ca(PathBuf::from("/etc/enclave/ca.pem")),
            Path::new("/s"),
            None,
        )
        .unwrap();
        let config = AgentConfig::parse(&text).unwrap();
        let control = config.control().unwrap();
        assert_eq!(
            control.ca_file.as_deref(),
            Some(Path::new("/etc/enclave/ca.pem"))
        );
        assert_eq!(control.fingerprint, None);
        assert_eq!(control.hostname, None);
    }

    #[test]
    fn the_summary_says_what_a_pending_system_waits_for() {
        let enrolled = Enrolled {
            system: "laptop".into(),
            address: "100.64.0.7".parse().unwrap(),
            overlay: "100.64.0.0/10".parse().unwrap(),
            approval: "pending".into(),
            tags: vec!["users".into()],
        };
        let text = summary(
            &enrolled,
            "https://h:1",
            Path::new("/etc/enclave/private.key"),
            Path::new(DEFAULT_PATH),
            "enclave-agent",
        );
        assert!(
            text.contains("Enrolled with https://h:1 as \"laptop\"."),
            "{text}"
        );
        assert!(
            text.contains("100.64.0.7 (network 100.64.0.0/10)"),
            "{text}"
        );
        assert!(
            text.contains("enclave-control systems approve laptop"),
            "{text}"
        );
        assert!(
            text.contains("Next: start the agent: `enclave-agent run`"),
            "{text}"
        );
    }
}
