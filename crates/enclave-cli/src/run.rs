//! `run` and `status`, the same for `enclave-agent` and `enclave-gw` but for the agent's role.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use enclave_runtime::agent::{self, Role};
use enclave_runtime::config::{AgentConfig, DEFAULT_PATH};

/// The arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The agent configuration.
    #[arg(long, short = 'c', default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Verbosity, 0 (errors only) to 5 (every packet's decision).
    #[arg(short = 'v', long = "verbosity", default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=5))]
    pub verbosity: u8,
}

/// The arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The agent configuration (it says where the control socket is).
    #[arg(long, short = 'c', default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Print JSON for tools.
    #[arg(long)]
    pub json: bool,
}

/// Runs the agent in the foreground as `role`.
pub fn run(args: RunArgs, role: Role) -> anyhow::Result<ExitCode> {
    enclave_runtime::logging::init(args.verbosity);
    let config = AgentConfig::load(&args.config)?;
    // An unattended install's first start: enrol with the configured enrolment key.
    enclave_runtime::managed::enrol::enrol_if_needed(&config)?;
    agent::run(config, role)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the running agent's status.
pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let config = AgentConfig::load(&args.config)?;
    let status = agent::query_status(&config.control_socket())
        .context("is the agent running? (enclave-agent run)")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", enclave_runtime::status::render(&status));
    }
    Ok(ExitCode::SUCCESS)
}
