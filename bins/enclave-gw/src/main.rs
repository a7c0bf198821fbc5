//! `enclave-gw`: the agent of a system allowed to act as a gateway.
//!
//! This binary only parses arguments and wires the library crates together.

use clap::{Parser, Subcommand};

mod cmd_discover;

/// The enclave overlay gateway.
#[derive(Debug, Parser)]
#[command(name = "enclave-gw", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the local subnets this gateway could serve, and why each interface was taken or left.
    Discover(cmd_discover::DiscoverArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Discover(args) => cmd_discover::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("enclave-gw: error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}
