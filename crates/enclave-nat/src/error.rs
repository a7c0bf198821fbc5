use std::io;

/// What can go wrong while putting NAT and forwarding in place.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No netlink socket to nftables could be opened.
    #[error("cannot open a netlink socket to nftables")]
    NetlinkSocket(#[source] io::Error),
    /// The batch could not be sent to the kernel.
    #[error("cannot send the nftables batch ({bytes} bytes) to the kernel")]
    NetlinkSend {
        /// The size of the batch.
        bytes: usize,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The kernel's answer could not be read.
    #[error("cannot read the kernel's answer to the nftables batch")]
    NetlinkReceive(#[source] io::Error),
    /// The kernel refused a message of the batch; nothing of it was applied.
    #[error("the kernel rejected the nftables batch at {what}{}; nothing was applied", extack.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Rejected {
        /// The message (table, chain, set, rule) the kernel refused.
        what: String,
        /// The kernel's extended-ack text, when it gave one.
        extack: Option<String>,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The kernel's answer could not be parsed.
    #[error("the kernel's answer to the nftables batch is malformed: {0}")]
    MalformedReply(
        /// What is wrong with it.
        &'static str,
    ),
    /// The backend cannot filter the host's own tunnel traffic.
    #[error("the {backend} backend cannot filter the host's own tunnel traffic (needed with an external WireGuard); use nat = \"nftables\"")]
    HostFilterUnsupported {
        /// The backend.
        backend: &'static str,
    },
    /// What the kernel holds after applying differs from what was asked.
    #[error("the read-back check failed: {0}")]
    ReadBack(String),
    /// libnftnl could not allocate an object.
    #[error("cannot allocate a libnftnl object")]
    Alloc,
    /// An interface name that the kernel would not accept.
    #[error("interface name {0:?} is not valid (1 to 15 bytes, no NUL)")]
    InterfaceName(String),
    /// A name with a NUL byte.
    #[error("name {0:?} cannot be given to nftables (it contains a NUL byte)")]
    InvalidName(String),
    /// A rule refers to a set that the ruleset does not define.
    #[error("a rule refers to set {0:?}, which the ruleset does not define")]
    UnknownSet(String),
    /// A firewall tool could not be started.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A firewall tool failed.
    #[error("{program} failed with {status}: {stderr}")]
    Command {
        /// The program.
        program: String,
        /// How it exited.
        status: std::process::ExitStatus,
        /// What it printed on standard error.
        stderr: String,
    },
    /// `iptables-restore` refused a line; nothing was applied.
    #[error("{program} rejected `{line}`; nothing was applied: {stderr}")]
    RestoreRejected {
        /// The program.
        program: String,
        /// The restore line the kernel or the tool refused.
        line: String,
        /// What it printed on standard error.
        stderr: String,
    },
    /// Neither nftables nor either iptables flavour works here.
    #[error("no working firewall backend: nftables is not usable ({nft}) and neither iptables-nft nor iptables-legacy works")]
    NoBackend {
        /// Why nftables is not usable.
        nft: String,
    },
    /// A sysctl file could not be read.
    #[error("cannot read {path}")]
    SysctlRead {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A sysctl file could not be written.
    #[error("cannot write {path}")]
    SysctlWrite {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A sysctl file holds something other than 0 or 1.
    #[error("{path} holds {value:?}, not 0 or 1")]
    SysctlValue {
        /// The file.
        path: String,
        /// What it holds.
        value: String,
    },
    /// The rules could not be applied, so forwarding was left as it was.
    #[error("the {backend} rules could not be put in place, so IPv4 forwarding was left as it was ({}); the rules applied before, if any, stay in force", forwarding_text(*.forwarding_on))]
    RulesNotApplied {
        /// The backend.
        backend: &'static str,
        /// Whether forwarding is on now (as it was before the attempt), when it could be read.
        forwarding_on: Option<bool>,
        /// The cause.
        #[source]
        source: Box<Error>,
    },
    /// Forwarding could not be restored, so the rules were kept.
    #[error("IPv4 forwarding could not be put back as it was, so the {backend} rules were left in place to keep filtering; fix {path} by hand (see docs/nat.md) and stop again")]
    RestoreFirst {
        /// The backend.
        backend: &'static str,
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: Box<Error>,
    },
    /// The state file that remembers how forwarding was could not be kept.
    #[error("cannot keep the forwarding state in {path}")]
    StateFile {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn forwarding_text(on: Option<bool>) -> &'static str {
    match on {
        Some(true) => "on",
        Some(false) => "off",
        None => "its value could not be read",
    }
}

/// The NAT manager's result.
pub type Result<T> = std::result::Result<T, Error>;
