//! `enclave-agent`: the agent that runs on every system of the overlay.
//!
//! This binary only parses arguments and wires the library crates together.

use clap::{Parser, Subcommand};

mod cmd_policy;
mod cmd_tunnel;

/// The enclave overlay agent.
#[derive(Debug, Parser)]
#[command(name = "enclave-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check, view and explain a network definition.
    #[command(subcommand)]
    Policy(cmd_policy::PolicyCommand),
    /// Run a bare WireGuard interface configured only through the UAPI (like `wireguard-go -f`).
    Tunnel(cmd_tunnel::TunnelArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(cmd) => cmd_policy::run(cmd),
        Command::Tunnel(args) => cmd_tunnel::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("enclave-agent: error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
