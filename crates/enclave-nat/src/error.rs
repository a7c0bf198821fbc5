use std::io;

/// What can go wrong while putting NAT and forwarding in place.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open a netlink socket to nftables")]
    NetlinkSocket(#[source] io::Error),
    #[error("cannot send the nftables batch ({bytes} bytes) to the kernel")]
    NetlinkSend {
        bytes: usize,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the kernel's answer to the nftables batch")]
    NetlinkReceive(#[source] io::Error),
    #[error("the kernel rejected the nftables batch at {what}{}; nothing was applied", extack.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Rejected {
        /// The message (table, chain, set, rule) the kernel refused.
        what: String,
        /// The kernel's extended-ack text, when it gave one.
        extack: Option<String>,
        #[source]
        source: io::Error,
    },
    #[error("the kernel's answer to the nftables batch is malformed: {0}")]
    MalformedReply(&'static str),
    #[error("the {backend} backend cannot filter the host's own tunnel traffic (needed with an external WireGuard); use nat = \"nftables\"")]
    HostFilterUnsupported { backend: &'static str },
    #[error("the read-back check failed: {0}")]
    ReadBack(String),
    #[error("cannot allocate a libnftnl object")]
    Alloc,
    #[error("interface name {0:?} is not valid (1 to 15 bytes, no NUL)")]
    InterfaceName(String),
    #[error("name {0:?} cannot be given to nftables (it contains a NUL byte)")]
    InvalidName(String),
    #[error("a rule refers to set {0:?}, which the ruleset does not define")]
    UnknownSet(String),
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed with {status}: {stderr}")]
    Command {
        program: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{program} rejected `{line}`; nothing was applied: {stderr}")]
    RestoreRejected {
        program: String,
        /// The restore line the kernel or the tool refused.
        line: String,
        stderr: String,
    },
    #[error("no working firewall backend: nftables is not usable ({nft}) and neither iptables-nft nor iptables-legacy works")]
    NoBackend { nft: String },
    #[error("cannot read {path}")]
    SysctlRead {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    SysctlWrite {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path} holds {value:?}, not 0 or 1")]
    SysctlValue { path: String, value: String },
    #[error("the {backend} rules could not be put in place, so IPv4 forwarding was left as it was ({}); the rules applied before, if any, stay in force", forwarding_text(*.forwarding_on))]
    RulesNotApplied {
        backend: &'static str,
        /// Whether forwarding is on now (as it was before the attempt), when it could be read.
        forwarding_on: Option<bool>,
        #[source]
        source: Box<Error>,
    },
    #[error("IPv4 forwarding could not be put back as it was, so the {backend} rules were left in place to keep filtering; fix {path} by hand (see docs/nat.md) and stop again")]
    RestoreFirst {
        backend: &'static str,
        path: String,
        #[source]
        source: Box<Error>,
    },
    #[error("cannot keep the forwarding state in {path}")]
    StateFile {
        path: String,
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
