//! `enclave-control run`: open (create, migrate) the database and serve the API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use enclave_control::agents::{self, Hub};
use enclave_control::service::Service;
use enclave_control::store::{self, Backend, SqlStore};
use enclave_control::{server, tls};

/// The server's database, as `run` and `admin token create` take it.
#[derive(Debug, Args)]
pub struct Database {
    /// The database: sqlite:///PATH (created on first start) or postgres://USER@HOST/DB.
    // hide_env_values: `--help` would otherwise print the variable's value, password and all.
    #[arg(
        long = "database",
        value_name = "DATABASE",
        env = "ENCLAVE_CONTROL_DATABASE",
        hide_env_values = true,
        default_value = crate::DEFAULT_DATABASE
    )]
    pub url: String,
}

impl Database {
    /// Opens it (made and migrated if need be; a SQLite file's directory too).
    pub async fn open(&self) -> anyhow::Result<SqlStore> {
        if let Some(dir) = sqlite_dir(&self.url).filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        SqlStore::open(&self.url)
            .await
            .with_context(|| format!("cannot open the database {}", self.shown()))
    }

    /// Its URL with the password hidden.
    pub fn shown(&self) -> String {
        store::redact(&self.url)
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    database: Database,
    /// Address and port to listen on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// PEM certificate chain (with --tls-key); without both, a self-signed certificate is
    /// made on first start and kept in --tls-dir.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Where the self-signed certificate is kept (default: the SQLite file's directory, or
    /// /var/lib/enclave).
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Names (DNS names or addresses) the self-signed certificate is made for.
    #[arg(long = "tls-name", default_values_t = vec!["localhost".to_owned()])]
    tls_names: Vec<String>,
    /// Serve plain HTTP, without TLS: only for local tests. Tokens and keys cross in clear.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "tls_dir"])]
    insecure_http: bool,
    /// Delete ephemeral systems (enrolled with an --ephemeral key) once their agent has been
    /// disconnected this long: 90s, 30m, 24h.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = duration)]
    ephemeral_after: std::time::Duration,
    /// This server's name where agents' connections are recorded (which server holds which
    /// agent, when several share one PostgreSQL). Default: HOSTNAME:PORT.
    #[arg(long)]
    server_name: Option<String>,
    /// More logging (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn duration(text: &str) -> Result<std::time::Duration, String> {
    enclave_control::api::parse_duration(text)
        .and_then(|s| u64::try_from(s).ok())
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| {
            format!("{text:?} is not a duration: write a number and a unit: 90s, 30m, 24h, 7d")
        })
}

/// The host's name, for the default server name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "enclave-control".to_owned())
}

/// The directory of a `sqlite://` URL's file.
pub fn sqlite_dir(url: &str) -> Option<PathBuf> {
    let path = url.strip_prefix("sqlite://")?.split('?').next()?;
    Path::new(path).parent().map(Path::to_owned)
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let level = match args.verbose {
        0 => "warn,enclave_control=info",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let backend = Backend::of(&args.database.url)?;
    let tls = if args.insecure_http {
        eprintln!("enclave-control: WARNING: serving plain HTTP (--insecure-http): tokens and keys cross in clear");
        None
    } else {
        let identity = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => tls::load(cert, key)?,
            _ => {
                let dir = args
                    .tls_dir
                    .clone()
                    .or_else(|| match backend {
                        Backend::Sqlite => sqlite_dir(&args.database.url),
                        Backend::Postgres => None,
                    })
                    .unwrap_or_else(|| PathBuf::from("/var/lib/enclave"));
                tls::self_signed(&dir, &args.tls_names)?
            }
        };
        let made = if identity.generated {
            " (self-signed, made now)"
        } else {
            ""
        };
        println!(
            "TLS certificate SHA-256 fingerprint{made}: {}",
            identity.fingerprint
        );
        Some(tls::server_config(identity)?)
    };
    let database = args.database;
    crate::runtime()?.block_on(async move {
        let store = database.open().await?;
        let service = Arc::new(Service::new(Arc::new(store)));
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let options = agents::Options {
            server: args
                .server_name
                .unwrap_or_else(|| format!("{}:{}", hostname(), args.listen.port())),
            ephemeral_after: args.ephemeral_after,
            ..agents::Options::default()
        };
        let hub = Arc::new(Hub::new(service, options));
        hub.start().await;
        let scheme = if tls.is_some() { "https" } else { "http" };
        println!(
            "enclave-control: serving {scheme}://{} with {}",
            listener.local_addr()?,
            database.shown()
        );
        server::serve(listener, hub, tls, shutdown()).await?;
        eprintln!("enclave-control: stopped");
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
