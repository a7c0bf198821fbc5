//! The commands that `enclave-agent` and `enclave-gw` share: `run`, `status` and `enrol`.
//!
//! Each command is a [`clap::Args`] struct and a function that carries it out, so that the two
//! binaries parse their command lines and call these, and a change to a shared command is made
//! once. Not for: the commands that only one binary has (`policy`, `tunnel`, `discover`), which
//! stay in that binary, nor the control server's command line.

#![warn(missing_docs)]

use std::process::ExitCode;

pub mod enrol;
pub mod run;

/// The exit of a binary named `binary` after a command: the command's own code, or status 2
/// with the error and its causes on standard error.
pub fn exit(binary: &str, result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{binary}: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// The commands that both binaries have besides `run` (whose help differs between them). A
/// binary puts this in its own subcommands with `#[command(flatten)]`, right after `Run`.
#[derive(Debug, clap::Subcommand)]
pub enum Shared {
    /// Join a managed network: make this host's key pair, enrol with an enrolment key, and
    /// write a managed agent.toml.
    Enrol(enrol::EnrolArgs),
    /// Show the running agent's peers, gateways and routes.
    Status(run::StatusArgs),
}

impl Shared {
    /// Carries the command out; `binary` names the command in what `enrol` prints.
    pub fn run(self, binary: &str) -> anyhow::Result<ExitCode> {
        match self {
            Self::Enrol(args) => enrol::run(args, binary),
            Self::Status(args) => run::status(args),
        }
    }
}
