//! `enclave-gw discover`

use std::process::ExitCode;

use anyhow::Context;
use enclave_discovery::{Choice, Discovery, Ipv4Net, Reachability};
use serde_json::json;

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

/// One line of output: an address of an interface, an interface without address, or a
/// configured subnet.
#[derive(Debug)]
struct Entry {
    subnet: Option<Ipv4Net>,
    interface: Option<String>,
    address: Option<std::net::Ipv4Addr>,
    secondary: bool,
    source: &'static str,
    taken: bool,
    reason: String,
}

fn entries(discovery: &Discovery, checks: &[Reachability]) -> Vec<Entry> {
    let mut out = Vec::new();
    for iface in &discovery.interfaces {
        if iface.addresses.is_empty() {
            out.push(Entry {
                subnet: None,
                interface: Some(iface.interface.clone()),
                address: None,
                secondary: false,
                source: "interface",
                taken: false,
                reason: iface.reason.clone(),
            });
        }
        for a in &iface.addresses {
            out.push(Entry {
                subnet: Some(a.subnet),
                interface: Some(iface.interface.clone()),
                address: Some(a.address),
                secondary: a.secondary,
                source: "interface",
                taken: a.choice == Choice::Taken,
                reason: if a.choice == Choice::Taken {
                    format!("{}: {}", iface.reason, a.reason)
                } else {
                    a.reason.clone()
                },
            });
        }
    }
    for c in checks {
        out.push(Entry {
            subnet: Some(c.subnet),
            interface: c.interface.clone(),
            address: None,
            secondary: false,
            source: "configured",
            taken: c.reachable,
            reason: c.reason.clone(),
        });
    }
    out
}

pub fn run(args: DiscoverArgs) -> anyhow::Result<ExitCode> {
    let discovery = enclave_discovery::discover(Some(&args.tunnel))
        .context("cannot discover the local subnets")?;
    let checks = enclave_discovery::reachability(&discovery, &args.subnets)
        .context("cannot check the configured subnets")?;
    let unreachable = checks.iter().filter(|c| !c.reachable).count();
    if args.json {
        let list: Vec<serde_json::Value> = entries(&discovery, &checks)
            .into_iter()
            .map(|e| {
                json!({
                    "subnet": e.subnet.map(|s| s.to_string()),
                    "interface": e.interface,
                    "address": e.address.map(|a| a.to_string()),
                    "secondary": e.secondary,
                    "source": e.source,
                    "taken": e.taken,
                    "reason": e.reason,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!(
            "{:<18} {:<12} {:<11} REASON",
            "SUBNET", "INTERFACE", "STATE"
        );
        for e in entries(&discovery, &checks) {
            let subnet = e.subnet.map_or_else(|| "-".to_string(), |s| s.to_string());
            let mark = match (e.source, e.taken) {
                ("configured", true) => "ok",
                ("configured", false) => "UNREACHABLE",
                (_, true) => "taken",
                (_, false) => "left",
            };
            let interface = e.interface.unwrap_or_else(|| "-".to_string());
            println!("{subnet:<18} {interface:<12} {mark:<11} {}", e.reason);
        }
    }
    if unreachable > 0 {
        eprintln!("enclave-gw: {unreachable} configured subnet(s) not reachable from this gateway");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
