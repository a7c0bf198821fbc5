//! `enclave-agent`: the agent that runs on every system of the overlay.
//!
//! This binary only parses arguments and wires the library crates together.

use clap::Parser;
use enclave_cli::run;

mod cmd_keys;
mod cmd_policy;
mod cmd_tunnel;

/// The enclave overlay agent.
#[derive(Debug, Parser)]
#[command(
    name = "enclave-agent",
    version,
    about = "The enclave overlay agent: runs on every system of the overlay (tunnels to the peers \
             that policy allows, their filters, routes through gateways), and checks, views and \
             explains the network definition",
    long_about = "The enclave overlay agent: runs on every system of the overlay. It builds \
                  WireGuard tunnels to exactly the peers that the network definition's policies \
                  allow, filters their traffic, and routes the subnets that gateways serve to \
                  this system. On a gateway, run enclave-gw instead.\n\n\
                  Configuration: /etc/enclave/agent.toml (-c FILE). Guide: docs/user-guide.md."
)]
enum Command {
    /// Run the agent in the foreground (systemd-friendly).
    Run(run::RunArgs),
    /// `enrol` and `status`, as the other binary has them.
    #[command(flatten)]
    Shared(enclave_cli::Shared),
    /// Write a new private key (mode 0600) and print its public key.
    Keygen(cmd_keys::KeygenArgs),
    /// Print the public key of a private key file.
    Pubkey(cmd_keys::PubkeyArgs),
    /// Check, view and explain a network definition.
    #[command(subcommand)]
    Policy(cmd_policy::PolicyCommand),
    /// Run a bare WireGuard interface configured only through the UAPI (like `wireguard-go -f`).
    Tunnel(cmd_tunnel::TunnelArgs),
}

fn main() -> std::process::ExitCode {
    let result = match Command::parse() {
        Command::Run(args) => run::run(args, enclave_runtime::agent::Role::Agent),
        Command::Shared(command) => command.run("enclave-agent"),
        Command::Keygen(args) => cmd_keys::keygen(args),
        Command::Pubkey(args) => cmd_keys::pubkey(args),
        Command::Policy(cmd) => cmd_policy::run(cmd),
        Command::Tunnel(args) => cmd_tunnel::run(args),
    };
    enclave_cli::exit("enclave-agent", result)
}
