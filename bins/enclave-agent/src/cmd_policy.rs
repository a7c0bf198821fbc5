//! `enclave-agent policy …`

use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Validate a network definition.
    Check {
        /// The network definition file.
        file: std::path::PathBuf,
    },
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Check { file } => anyhow::bail!(
            "cannot check {}: the policy engine is not built yet (issue 4)",
            file.display()
        ),
    }
}
