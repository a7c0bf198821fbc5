//! `enclave-gw`: the agent of a system allowed to act as a gateway.
//!
//! This binary only parses arguments and wires the library crates together.

use clap::Parser;
// The same `run`, `status` and `enrol` as enclave-agent's; only the role differs.
use enclave_cli::run;

mod cmd_discover;

/// The enclave overlay gateway.
#[derive(Debug, Parser)]
#[command(
    name = "enclave-gw",
    version,
    about = "The enclave gateway: the agent of a system allowed to act as a gateway, which also \
             forwards and NATs the granted senders' traffic into the subnets it serves",
    long_about = "The enclave gateway: the agent of a system allowed to act as a gateway. It does \
                  all that enclave-agent does, and also forwards the traffic of the senders \
                  that gateway access policies grant into the subnets it serves (source NAT to \
                  its own address there, one way), and tells the senders which subnets it \
                  serves. `discover` shows which local subnets it could serve.\n\n\
                  Configuration: /etc/enclave/agent.toml (-c FILE). Guide: docs/user-guide.md."
)]
enum Command {
    /// Run the gateway agent in the foreground: an agent that also forwards and NATs into the
    /// subnets the network definition lets it serve.
    Run(run::RunArgs),
    /// `enrol` and `status`, as the other binary has them.
    #[command(flatten)]
    Shared(enclave_cli::Shared),
    /// List the local subnets this gateway could serve, and why each interface was taken or left.
    Discover(cmd_discover::DiscoverArgs),
}

fn main() -> std::process::ExitCode {
    let result = match Command::parse() {
        Command::Run(args) => run::run(args, enclave_runtime::agent::Role::Gateway),
        Command::Shared(command) => command.run("enclave-gw"),
        Command::Discover(args) => cmd_discover::run(args),
    };
    enclave_cli::exit("enclave-gw", result)
}
