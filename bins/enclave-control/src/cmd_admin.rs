//! `enclave-control admin …`: administration on the server host, straight on the database
//! (so the first admin token can be made before anyone can use the API).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use enclave_control::core::{Command, Ctx};
use enclave_control::portal::users;
use enclave_control::secret;
use enclave_control::service::Service;
use enclave_control::store::Store as _;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Admin tokens for the API.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Accounts for the portal (the web pages under /portal/).
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Make a portal account, or set a new password for one (stored as an argon2id hash).
    Create(UserArgs),
}

#[derive(Debug, Args)]
pub struct UserArgs {
    /// The server's database (as given to `run`).
    #[command(flatten)]
    database: crate::cmd_run::Database,
    /// The account's name: shown in the audit log as `user:NAME`.
    name: String,
    /// Read the password from this file's first line instead of asking for it (`-`: standard
    /// input). Without it, the password is asked twice on the terminal, not echoed.
    #[arg(long, value_name = "FILE")]
    password_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make an admin token and print it once (only its SHA-256 is stored).
    Create(CreateArgs),
    /// List the admin tokens: id, name, when made, whether revoked (never the tokens).
    List(ListArgs),
    /// Revoke an admin token by its id (`token list`): it authenticates nothing from then on.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The server's database (as given to `run`).
    #[command(flatten)]
    database: crate::cmd_run::Database,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The server's database (as given to `run`).
    #[command(flatten)]
    database: crate::cmd_run::Database,
    /// The token's id, as `token create` and `token list` show it.
    id: String,
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

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// The service over the server's database.
async fn service(database: &crate::cmd_run::Database) -> anyhow::Result<Service> {
    Ok(Service::new(Arc::new(database.open().await?)))
}

/// Who changes things here, for the audit log: `cli`, now.
fn cli() -> Ctx {
    Ctx {
        actor: "cli".into(),
        now: now(),
    }
}

pub fn run(cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AdminCommand::Token(TokenCommand::Create(args)) => create(args),
        AdminCommand::Token(TokenCommand::List(args)) => list(args),
        AdminCommand::Token(TokenCommand::Revoke(args)) => revoke(args),
        AdminCommand::User(UserCommand::Create(args)) => create_user(args),
    }
}

/// The new password: a file's first line, or asked twice without echo.
fn password(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    match file {
        Some(path) => {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
            } else {
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the password file {}", path.display()))?
            };
            Ok(text.lines().next().unwrap_or("").to_owned())
        }
        None => {
            let first = rpassword::prompt_password("New password: ")
                .context("cannot read the password from the terminal (or use --password-file)")?;
            let again = rpassword::prompt_password("Again: ")
                .context("cannot read the password from the terminal")?;
            anyhow::ensure!(
                first == again,
                "the two passwords differ; nothing was changed"
            );
            Ok(first)
        }
    }
}

fn create_user(args: UserArgs) -> anyhow::Result<ExitCode> {
    enclave_control::core::check_name("name", &args.name)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("the account's name is not valid")?;
    let password = password(args.password_file.as_deref())?;
    let password_hash = users::hash(&password).context("cannot set this password")?;
    crate::runtime()?.block_on(async move {
        let store = args.database.open().await?;
        let existed = store.portal_user(&args.name).await?.is_some();
        store
            .put_portal_user(&users::User {
                name: args.name.clone(),
                password_hash: password_hash.into(),
                created_at: now(),
            })
            .await
            .context("cannot store the account")?;
        if existed {
            println!("set a new password for portal account {}", args.name);
        } else {
            println!("made portal account {}", args.name);
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    crate::runtime()?.block_on(async move {
        let service = service(&args.database).await?;
        let state = service.state().await.context("cannot read the tokens")?;
        let rows: Vec<Vec<String>> = state
            .tokens
            .values()
            .map(|token| {
                vec![
                    token.id.clone(),
                    token.name.clone(),
                    crate::cmd_api::when(&serde_json::json!(token.created_at)),
                    if token.revoked { "yes" } else { "no" }.to_owned(),
                ]
            })
            .collect();
        crate::cmd_api::table(&["ID", "NAME", "CREATED", "REVOKED"], &rows);
        Ok(ExitCode::SUCCESS)
    })
}

fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    crate::runtime()?.block_on(async move {
        let service = service(&args.database).await?;
        service
            .execute(
                Command::RevokeToken {
                    id: args.id.clone(),
                },
                &cli(),
            )
            .await
            .with_context(|| format!("cannot revoke admin token {}", args.id))?;
        println!("revoked admin token {}", args.id);
        Ok(ExitCode::SUCCESS)
    })
}

fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    crate::runtime()?.block_on(async move {
        let service = service(&args.database).await?;
        let token = secret::generate(secret::TOKEN_PREFIX);
        service
            .execute(
                Command::CreateToken {
                    id: token.id.clone(),
                    name: args.name.clone(),
                    hash: token.hash.expose().clone(),
                },
                &cli(),
            )
            .await
            .context("cannot store the token")?;
        eprintln!(
            "Admin token {:?} (id {}). It is shown only now; keep it secret, e.g. in ENCLAVE_CONTROL_TOKEN:",
            args.name, token.id
        );
        println!("{}", token.text.expose());
        Ok(ExitCode::SUCCESS)
    })
}
