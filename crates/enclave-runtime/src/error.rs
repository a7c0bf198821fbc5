use std::path::PathBuf;

/// What went wrong in the agent runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The agent configuration is not valid.
    #[error("{}: {message}", path.display())]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong, with its line and column.
        message: String,
    },
    /// A secret file (a private or pre-shared key) could not be read safely.
    #[error("cannot use the secret file {}", path.display())]
    Secret {
        /// The file.
        path: PathBuf,
        /// Why (a symbolic link, open permissions, not a regular file…).
        #[source]
        source: enclave_statefile::Error,
    },
    /// A secret file is not text.
    #[error("{} is not text: a key file holds one line of base64", path.display())]
    SecretText {
        /// The file.
        path: PathBuf,
    },
    /// The runtime directory is not one the agent may use.
    #[error("cannot use {} as the agent's runtime directory (runtime_dir in agent.toml)", path.display())]
    RuntimeDir {
        /// The directory.
        path: PathBuf,
        /// Why (owned by someone else, writable by others…).
        #[source]
        source: enclave_statefile::Error,
    },
    /// The network definition did not pass validation.
    #[error("{} is not a valid network definition:\n{}", path.display(), diagnostics.join("\n"))]
    Definition {
        /// The file.
        path: PathBuf,
        /// Each problem as `FILE:LINE:COL: error: reason`.
        diagnostics: Vec<String>,
    },
    /// The policy engine failed.
    #[error("the policy engine failed")]
    Policy(#[source] enclave_policy::Error),
    /// This system's key is not in the definition.
    #[error("no system in {} has this agent's public key {public_key}: add it to the definition (enclave-agent pubkey prints it)", path.display())]
    NotInDefinition {
        /// The definition.
        path: PathBuf,
        /// This agent's public key.
        public_key: String,
    },
    /// The private key file does not hold a key (the text is not shown: it is a secret).
    #[error("{} does not hold a WireGuard private key (base64 of 32 bytes, as enclave-agent keygen or wg genkey write it)", path.display())]
    KeyText {
        /// The key file.
        path: PathBuf,
    },
    /// A peer's key in the definition is not a key.
    #[error("peer {peer} has a public key that is not a WireGuard key")]
    PeerKey {
        /// The peer.
        peer: String,
        /// Why.
        #[source]
        source: enclave_wg::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    /// The data plane failed.
    #[error("the data plane failed")]
    Dataplane(#[source] enclave_dataplane::Error),
    /// The tunnel interface could not be configured.
    #[error("cannot configure interface {interface}")]
    Interface {
        /// The interface.
        interface: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The external WireGuard could not be started or configured.
    #[error("the external WireGuard interface {interface} failed")]
    External {
        /// The interface.
        interface: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The tunnel stopped underneath the agent.
    #[error("the tunnel {interface} stopped (was the interface deleted?)")]
    TunnelStopped {
        /// The interface.
        interface: String,
    },
    /// The control port could not be opened.
    #[error("cannot open the control port on {address}")]
    ControlPort {
        /// The overlay address.
        address: std::net::Ipv4Addr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The route manager failed.
    #[error("the route manager failed")]
    Routes(#[source] enclave_route::Error),
    /// The NAT manager failed.
    #[error("the NAT manager failed")]
    Nat(#[source] enclave_nat::Error),
    /// The control socket failed.
    #[error("control socket {}", path.display())]
    ControlSocket {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The network definition cannot be watched for changes.
    #[error("cannot watch {} for changes", path.display())]
    Watch {
        /// The definition.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The agent's event loop (a tokio runtime) could not be started.
    #[error("cannot start the agent's event loop")]
    EventLoop(#[source] std::io::Error),
    /// A bare tunnel (`enclave-agent tunnel`) could not be started in the background.
    #[error("cannot start the background tunnel {interface}")]
    BareTunnel {
        /// The interface.
        interface: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The running agent answered with an error.
    #[error("the agent answered: {message}")]
    Agent {
        /// Its message.
        message: String,
    },
}

/// An error and its causes on one line, for status and logs.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The runtime's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
