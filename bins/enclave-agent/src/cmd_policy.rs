//! `enclave-agent policy …`: check, view and explain a network definition.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use enclave_policy::{Diagnostic, Loaded, Protocol, Query, Timestamp, Verdict};

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Validate a network definition: exit 0 when valid (warnings printed), 1 when not.
    Check {
        /// The network definition file.
        file: PathBuf,
        /// Print the diagnostics as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the compiled view of one system.
    View {
        /// The network definition file.
        file: PathBuf,
        /// The system whose view to compile.
        #[arg(long)]
        system: String,
        /// Print JSON (what the agent applies).
        #[arg(long)]
        json: bool,
    },
    /// Would a system reach an address? Exit 0 allowed, 1 denied, 2 on a usage or file error.
    Explain {
        /// The network definition file.
        file: PathBuf,
        /// The sending system.
        #[arg(long)]
        from: String,
        /// The destination, ADDR or ADDR:PORT.
        #[arg(long, value_parser = parse_destination)]
        to: (Ipv4Addr, Option<u16>),
        /// The protocol; without it, any traffic at all (tcp or udp when a port is given).
        #[arg(long, value_enum)]
        proto: Option<ProtoArg>,
        /// The sender's observed public address, for public IP trust requirements.
        #[arg(long)]
        from_ip: Option<Ipv4Addr>,
        /// The time to judge active hours at (RFC 3339); now when absent.
        #[arg(long)]
        at: Option<Timestamp>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ProtoArg {
    Any,
    Icmp,
    Tcp,
    Udp,
}

fn parse_destination(text: &str) -> Result<(Ipv4Addr, Option<u16>), String> {
    let (addr, port) = match text.split_once(':') {
        Some((addr, port)) => (
            addr,
            Some(
                port.parse::<u16>()
                    .map_err(|_| format!("bad port {port:?}"))?,
            ),
        ),
        None => (text, None),
    };
    let addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    Ok((addr, port))
}

fn print_diagnostics(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        eprintln!("{d}");
    }
}

/// Reads and validates; `Ok(Err(diagnostics))` when the definition is invalid.
fn read(file: &Path) -> anyhow::Result<Result<Loaded, Vec<Diagnostic>>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the network definition {}", file.display()))?;
    match enclave_policy::load(&file.display().to_string(), &text) {
        Ok(loaded) => Ok(Ok(loaded)),
        Err(enclave_policy::Error::Invalid { diagnostics, .. }) => Ok(Err(diagnostics)),
        Err(other) => Err(other.into()),
    }
}

/// Reads, validates and prints warnings; an invalid definition is a file error.
fn read_valid(file: &Path) -> anyhow::Result<enclave_policy::Network> {
    match read(file)? {
        Ok(loaded) => {
            print_diagnostics(&loaded.warnings);
            Ok(loaded.network)
        }
        Err(diagnostics) => {
            print_diagnostics(&diagnostics);
            anyhow::bail!(
                "the network definition {} is not valid (see `enclave-agent policy check`)",
                file.display()
            )
        }
    }
}

pub fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Check { file, json } => {
            let (valid, diagnostics) = match read(&file)? {
                Ok(loaded) => (true, loaded.warnings),
                Err(diagnostics) => (false, diagnostics),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&diagnostics)?);
            } else {
                print_diagnostics(&diagnostics);
                let errors = diagnostics.iter().filter(|d| d.severity.is_error()).count();
                let warnings = diagnostics.len() - errors;
                let warnings = enclave_policy::plural(warnings, "warning");
                if valid {
                    eprintln!("{}: valid ({warnings})", file.display());
                } else {
                    let errors = enclave_policy::plural(errors, "error");
                    eprintln!("{}: not valid ({errors}, {warnings})", file.display());
                }
            }
            Ok(if valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        PolicyCommand::View { file, system, json } => {
            let network = read_valid(&file)?;
            let view = enclave_policy::compile(&network, &system)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{view}");
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Explain {
            file,
            from,
            to,
            proto,
            from_ip,
            at,
            json,
        } => {
            let network = read_valid(&file)?;
            let query = Query {
                from,
                to: to.0,
                protocol: proto.map(|p| match p {
                    ProtoArg::Any => Protocol::Any,
                    ProtoArg::Icmp => Protocol::Icmp,
                    ProtoArg::Tcp => Protocol::Tcp,
                    ProtoArg::Udp => Protocol::Udp,
                }),
                port: to.1,
                public_ip: from_ip,
                at: at.unwrap_or_else(Timestamp::now),
            };
            let answer = enclave_policy::explain(&network, &query)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                print!("{answer}");
            }
            Ok(match answer.verdict {
                Verdict::Allowed => ExitCode::SUCCESS,
                Verdict::Denied => ExitCode::FAILURE,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/network.toml")
    }

    /// `policy explain` of a TCP flow from the example's laptop to `to`.
    fn explain_tcp(to: &str) -> anyhow::Result<ExitCode> {
        run(PolicyCommand::Explain {
            file: example(),
            from: "laptop".into(),
            to: parse_destination(to).map_err(anyhow::Error::msg)?,
            proto: Some(ProtoArg::Tcp),
            from_ip: Some(Ipv4Addr::new(198, 51, 100, 7)),
            at: Some("2026-11-25T18:00:00Z".parse()?),
            json: false,
        })
    }

    #[test]
    fn destinations_parse_with_and_without_port() {
        assert_eq!(
            parse_destination("192.168.77.20:445"),
            Ok((Ipv4Addr::new(192, 168, 77, 20), Some(445)))
        );
        assert_eq!(
            parse_destination("10.0.0.1"),
            Ok((Ipv4Addr::new(10, 0, 0, 1), None))
        );
        assert_eq!(
            parse_destination("10.0.0.1:http"),
            Err("bad port \"http\"".to_owned())
        );
        assert_eq!(
            parse_destination("host:80"),
            Err("\"host\" is not an IPv4 address".to_owned())
        );
    }

    #[test]
    fn check_exit_codes() -> anyhow::Result<()> {
        let valid = run(PolicyCommand::Check {
            file: example(),
            json: false,
        })?;
        assert_eq!(valid, ExitCode::SUCCESS);
        let dir = std::env::temp_dir().join(format!("enclave-policy-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[[system]]\nname = \"a\"\n")?;
        let invalid = run(PolicyCommand::Check {
            file: bad,
            json: true,
        });
        std::fs::remove_dir_all(&dir)?;
        assert_eq!(invalid?, ExitCode::FAILURE);
        let missing = run(PolicyCommand::Check {
            file: dir.join("missing.toml"),
            json: false,
        });
        assert!(missing.is_err(), "a missing file is an error (exit 2)");
        Ok(())
    }

    #[test]
    fn explain_exit_codes() -> anyhow::Result<()> {
        for (to, code) in [
            ("192.168.77.20:445", ExitCode::SUCCESS),
            ("192.168.77.20:80", ExitCode::FAILURE),
            // A default route means the Internet: not a cloud's metadata service.
            ("1.1.1.1:443", ExitCode::SUCCESS),
            ("169.254.169.254:80", ExitCode::FAILURE),
        ] {
            assert_eq!(explain_tcp(to)?, code, "explain tcp to {to}");
        }
        let unknown = run(PolicyCommand::View {
            file: example(),
            system: "nobody".into(),
            json: true,
        });
        assert!(unknown.is_err(), "an unknown system is an error (exit 2)");
        Ok(())
    }
}
