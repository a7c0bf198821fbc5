//! `enclave-gw discover`

use std::process::ExitCode;

use anyhow::Context;
use enclave_discovery::{render, Ipv4Net};

#[derive(Debug, clap::Args)]
pub struct DiscoverArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Our own tunnel interface, never offered.
    #[arg(long, value_name = "NAME", default_value = "enclave0")]
    pub tunnel: String,
    /// A configured subnet to check: is it directly connected, or does the gateway have a route
    /// to it? Repeatable.
    #[arg(long = "subnet", value_name = "CIDR")]
    pub subnets: Vec<Ipv4Net>,
}

pub fn run(args: DiscoverArgs) -> anyhow::Result<ExitCode> {
    let discovery = enclave_discovery::discover(Some(&args.tunnel))
        .context("cannot discover the local subnets")?;
    let checks = enclave_discovery::reachability(&discovery, &args.subnets)
        .context("cannot check the configured subnets")?;
    if args.json {
        print!("{}", render::json(&discovery, &checks)?);
    } else {
        print!("{}", render::table(&discovery, &checks));
    }
    let unreachable = checks.iter().filter(|c| !c.reachable).count();
    if unreachable > 0 {
        eprintln!("enclave-gw: {unreachable} configured subnet(s) not reachable from this gateway");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
