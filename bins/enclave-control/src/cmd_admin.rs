//! `enclave-control admin …`: administration on the server host, straight on the database
//! (so the first admin token can be made before anyone can use the API).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use enclave_control::core::{Command, Ctx};
use enclave_control::secret;
use enclave_control::service::Service;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Admin tokens for the API.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make an admin token and print it once (only its SHA-256 is stored).
    Create(CreateArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The server's database (as given to `run`).
    #[command(flatten)]
    database: crate::cmd_run::Database,
    /// Who uses the token: shown in the audit log.
    #[arg(long, default_value = "admin")]
    name: String,
}

pub fn run(cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    let AdminCommand::Token(TokenCommand::Create(args)) = cmd;
    crate::runtime()?.block_on(async move {
        let store = args.database.open().await?;
        let service = Service::new(Arc::new(store));
        let token = secret::generate(secret::TOKEN_PREFIX);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        service
            .execute(
                Command::CreateToken {
                    id: token.id.clone(),
                    name: args.name.clone(),
                    hash: token.hash.clone(),
                },
                &Ctx {
                    actor: "cli".into(),
                    now,
                },
            )
            .await
            .context("cannot store the token")?;
        eprintln!(
            "Admin token {:?} (id {}). It is shown only now; keep it secret, e.g. in ENCLAVE_CONTROL_TOKEN:",
            args.name, token.id
        );
        println!("{}", token.text);
        Ok(ExitCode::SUCCESS)
    })
}
