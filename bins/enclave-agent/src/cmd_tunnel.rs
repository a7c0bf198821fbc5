//! `enclave-agent tunnel IFACE`

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct TunnelArgs {
    /// The name of the TUN interface to create.
    pub interface: String,
}

pub fn run(args: TunnelArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "cannot run tunnel {}: the userspace data plane is not built yet (issue 3)",
        args.interface
    )
}
