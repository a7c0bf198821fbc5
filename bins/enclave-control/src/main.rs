//! `enclave-control`: the control server and its administration commands.
//!
//! This binary only parses arguments and wires the library together: `run` and
//! `admin token create` open the database; every other command talks to the running
//! server's API (`/api/v1/`, see docs/api.md).

use clap::{Parser, Subcommand};

mod cmd_admin;
mod cmd_api;
mod cmd_run;

/// The enclave overlay's control server.
#[derive(Debug, Parser)]
#[command(
    name = "enclave-control",
    version,
    about = "The enclave overlay's control server and its administration commands: enrolment \
             keys, approval, the gateway toggle, discovered subnets and policies, pushed to every \
             agent as it changes.",
    after_help = "`run` starts the server (SQLite by default, PostgreSQL with --database \
                  postgres://…); the other commands talk to it (ENCLAVE_CONTROL_URL, \
                  ENCLAVE_CONTROL_TOKEN, ENCLAVE_CONTROL_FINGERPRINT). Guide: \
                  docs/control-server.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server in the foreground (systemd-friendly).
    Run(cmd_run::RunArgs),
    /// Administration on the server host itself (opens the database).
    #[command(subcommand)]
    Admin(cmd_admin::AdminCommand),
    /// Replace the network's systems, tags, trust requirements and policies by a network
    /// definition file (today's TOML); keys, approvals and discovered subnets stay.
    Import(cmd_api::ImportArgs),
    /// Print the network as a network definition (today's TOML).
    Export(cmd_api::ExportArgs),
    /// Enrolment keys: create (shown once), list, revoke.
    #[command(subcommand)]
    Keys(cmd_api::KeysCommand),
    /// Systems: list (the guide's checklist step 1), approve, revoke, delete, edit, gateway.
    #[command(subcommand)]
    Systems(cmd_api::SystemsCommand),
    /// Gateways' subnets: list (discovered and added), add, remove.
    #[command(subcommand)]
    Subnets(cmd_api::SubnetsCommand),
    /// Policies: list, delete, and put (create or replace from a file of policy tables).
    #[command(subcommand)]
    Policies(cmd_api::PoliciesCommand),
    /// Would a system reach an address? (as `enclave-agent policy explain`).
    Explain(cmd_api::ExplainArgs),
    /// The audit log: who changed what, when.
    Audit(cmd_api::AuditArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cmd_run::run(args),
        Command::Admin(cmd) => cmd_admin::run(cmd),
        Command::Import(args) => cmd_api::import(args),
        Command::Export(args) => cmd_api::export(args),
        Command::Keys(cmd) => cmd_api::keys(cmd),
        Command::Systems(cmd) => cmd_api::systems(cmd),
        Command::Subnets(cmd) => cmd_api::subnets(cmd),
        Command::Policies(cmd) => cmd_api::policies(cmd),
        Command::Explain(args) => cmd_api::explain(args),
        Command::Audit(args) => cmd_api::audit(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("enclave-control: error: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// A single-threaded tokio runtime for a command.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The database when none is given.
pub const DEFAULT_DATABASE: &str = "sqlite:///var/lib/enclave/control.db";

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    /// `--help` shows where a value may come from, never the value of a variable that can hold
    /// a password.
    #[test]
    fn help_never_shows_the_database_password() {
        // Only this test of this binary reads the variable.
        std::env::set_var(
            "ENCLAVE_CONTROL_DATABASE",
            "postgres://enclave:s3cret@db/enclave",
        );
        let mut cli = Cli::command();
        let run = cli.find_subcommand_mut("run").unwrap().render_long_help();
        let create = cli
            .find_subcommand_mut("admin")
            .and_then(|c| c.find_subcommand_mut("token"))
            .and_then(|c| c.find_subcommand_mut("create"))
            .unwrap()
            .render_long_help();
        for help in [run.to_string(), create.to_string()] {
            assert!(help.contains("ENCLAVE_CONTROL_DATABASE"), "{help}");
            assert!(!help.contains("s3cret"), "{help}");
        }
    }
}
