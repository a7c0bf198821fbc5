//! `enclave-gw discover`

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct DiscoverArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: DiscoverArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("cannot discover subnets: the discovery crate is not built yet (issue 5)")
}
